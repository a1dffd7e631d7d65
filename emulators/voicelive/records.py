"""What the emulator saw, for tests and ``GET /_emulator/state``.

Written from the emulator's event loop thread, read from any thread: mutations and copies happen under
one lock per ``EmulatorState``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

MAX_EVENTS_KEPT = 5000


@dataclass
class SessionRecord:
    """One WebSocket session: identity, client events received, server events sent, outcome."""

    session_id: str
    model: str
    api_version: str
    client_sdk: str | None
    auth: str
    opened_at: float = field(default_factory=time.time)
    client_events: deque[str] = field(default_factory=lambda: deque(maxlen=MAX_EVENTS_KEPT))
    """Types of client events received, in order (``input_audio_buffer.append`` only counted)."""
    last_client_event: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Last payload per client event type (append's audio replaced by its byte length)."""
    append_count: int = 0
    appended_audio_ms: int = 0
    server_events: deque[str] = field(default_factory=lambda: deque(maxlen=MAX_EVENTS_KEPT))
    errors_sent: list[dict[str, Any]] = field(default_factory=list)
    responses: dict[str, str] = field(default_factory=dict)
    """Response id → final (or current) status."""
    session: dict[str, Any] = field(default_factory=dict)
    """The current merged session object."""
    function_calls_emitted: int = 0
    function_calls: list[dict[str, Any]] = field(default_factory=list)
    """Function calls the emulated model made (``id, name, call_id, arguments, status``), in order, recorded
    at their ``response.output_item.done`` (a cancelled call is there ``incomplete``)."""
    function_outputs_received: int = 0
    function_outputs: list[dict[str, Any]] = field(default_factory=list)
    """``function_call_output`` items the client created (``item_id, call_id, output``), in order."""
    client_function_calls: list[dict[str, Any]] = field(default_factory=list)
    """``function_call`` items the client created (``id, name, call_id, arguments``), e.g. a replayed history."""
    held_events: int = 0
    """Events produced during a stall and not sent yet (see ``held.py``)."""
    held_dropped: int = 0
    """Held events dropped because the hold was full (the oldest audio deltas first)."""
    held_unsent: int = 0
    """Held events never sent because the session ended first (a permanent stall ends this way)."""
    closed: bool = False
    close_code: int | None = None
    close_reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "model": self.model,
            "api_version": self.api_version,
            "client_sdk": self.client_sdk,
            "auth": self.auth,
            "opened_at": self.opened_at,
            "client_events": list(self.client_events),
            "last_client_event": dict(self.last_client_event),
            "append_count": self.append_count,
            "appended_audio_ms": self.appended_audio_ms,
            "server_events": list(self.server_events),
            "errors_sent": list(self.errors_sent),
            "responses": dict(self.responses),
            "session": self.session,
            "function_calls_emitted": self.function_calls_emitted,
            "function_calls": list(self.function_calls),
            "function_outputs_received": self.function_outputs_received,
            "function_outputs": list(self.function_outputs),
            "client_function_calls": list(self.client_function_calls),
            "held_events": self.held_events,
            "held_dropped": self.held_dropped,
            "held_unsent": self.held_unsent,
            "closed": self.closed,
            "close_code": self.close_code,
            "close_reason": self.close_reason,
        }


class EmulatorState:
    """Counters of connection outcomes plus every session's record."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: list[SessionRecord] = []
        self.connections_accepted = 0
        self.connections_rejected = 0
        """Upgrade refused with an HTTP status (auth, bad query, injected rejection)."""
        self.connections_dropped = 0
        """TCP connection closed before any HTTP response (``drop_connections``)."""
        self.rejections: list[dict[str, Any]] = []

    def add_session(self, record: SessionRecord) -> None:
        with self._lock:
            self._sessions.append(record)
            self.connections_accepted += 1

    def note_rejected(self, status: int, reason: str) -> None:
        with self._lock:
            self.connections_rejected += 1
            self.rejections.append({"status": status, "reason": reason, "at": time.time()})

    def note_dropped(self) -> None:
        with self._lock:
            self.connections_dropped += 1

    @property
    def sessions(self) -> list[SessionRecord]:
        with self._lock:
            return list(self._sessions)

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "connections_accepted": self.connections_accepted,
                "connections_rejected": self.connections_rejected,
                "connections_dropped": self.connections_dropped,
                "rejections": list(self.rejections),
                "sessions": [s.to_dict() for s in self._sessions],
            }

    def clear(self) -> None:
        with self._lock:
            self._sessions.clear()
            self.rejections.clear()
            self.connections_accepted = self.connections_rejected = self.connections_dropped = 0
