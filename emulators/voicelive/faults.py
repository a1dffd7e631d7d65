"""Fault and latency knobs of the Voice Live emulator, changeable while it runs.

One ``Faults`` object is shared by the test (or demo) thread and the emulator's event loop thread.
Single-attribute reads are atomic under the GIL; ``update`` applies several changes under a lock so a
reader never sees half of an update, and rejects unknown knobs and bad values with ``ValueError``.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from typing import Any

from emulators.close_codes import SENDABLE_CLOSE_CODES, sendable_close_code

REJECT_STATUSES = (400, 401, 403, 404, 429, 500, 502, 503)


@dataclass(frozen=True)
class ErrorSpec:
    """The ``error`` object of an injected ``error`` event."""

    type: str = "server_error"
    code: str | None = "internal_server_error"
    message: str = "The server had an error while processing your request."

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "code": self.code, "message": self.message}

    @classmethod
    def from_value(cls, value: Any) -> ErrorSpec | None:
        if value is None or isinstance(value, ErrorSpec):
            return value
        if value is True:
            return cls()
        if isinstance(value, dict):
            unknown = set(value) - {"type", "code", "message"}
            if unknown:
                raise ValueError(f"unknown error fields: {sorted(unknown)}")
            return cls(**value)
        raise ValueError(f"an error spec is null, true or an object, not {value!r}")


@dataclass
class Faults:
    """Everything that can go wrong, plus the latency knobs. All off by default."""

    # --- connection level ---
    drop_connections: bool = False
    """Close every new TCP connection before reading the upgrade request (no HTTP response at all)."""
    reject_handshake_status: int | None = None
    """Refuse the WebSocket upgrade with this HTTP status (401/403/429/503…) and a JSON error body."""

    # --- session start ---
    session_updated_delay_ms: int = 0
    """Send each ``session.updated`` this late. The new settings apply at once and client events are still
    read meanwhile (replies to them may overtake the confirmation); confirmations keep their order."""
    drop_session_updated: bool = False
    error_at_session_start: ErrorSpec | None = None
    """Sent right after ``session.created``."""
    expire_after_s: float | None = None
    """Session lifetime: then ``error{code:"session_expired"}`` and close 1001."""

    # --- during a response (counted in the current response's deltas: audio, text or function-call arguments) ---
    error_after_deltas: int | None = None
    """After K deltas send ``mid_response_error`` and end the response ``failed``."""
    mid_response_error: ErrorSpec = field(default_factory=ErrorSpec)
    stall_after_deltas: int | None = None
    """After K deltas the session hangs for good: it sends nothing more and the response never goes on (the
    socket stays open, client events are still read). Permanent by design: a wedged session that only its
    end clears, for the bridge to notice and give up on; clearing ``stall`` does not release it. What it
    produces meanwhile (replies to client events) is held, bounded, never sent: counted in the session
    record's ``held_events``, then ``held_unsent`` when the session ends."""
    stall: bool = False
    """While set, no session sends anything: outgoing events are held in order and delivered when it is
    cleared, as a service recovering from a network hiccup or a GC pause delivers what it had queued. The hold
    is bounded by the config's ``max_held_events`` (beyond it the oldest audio deltas are dropped, counted in
    ``held_dropped``); a session that closes while stalled never sends what it held (``held_unsent``)."""
    close_after_deltas: int | None = None
    """After K deltas close the socket: with ``close_code`` or, if ``close_abruptly``, with no close frame."""
    close_code: int = 1011
    close_abruptly: bool = False

    # --- latency ---
    first_audio_ms: int = 120
    """From ``response.created`` to the first ``response.audio.delta`` (or arguments delta of a function call)."""
    pace: float = 4.0
    """Audio is sent this many times faster than real time; 0 sends each response in one burst."""
    delta_delay_ms: int | None = None
    """Fixed wait between deltas; overrides ``pace`` when set."""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._validate({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    # ------------------------------------------------------------------
    def update(self, **changes: Any) -> None:
        """Apply several changes atomically; ``ValueError`` on an unknown knob or a bad value."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = set(changes) - names
        if unknown:
            raise ValueError(f"unknown fault knobs: {sorted(unknown)}")
        converted = dict(changes)
        for key in ("error_at_session_start", "mid_response_error"):
            if key in converted:
                spec = ErrorSpec.from_value(converted[key])
                if key == "mid_response_error" and spec is None:
                    spec = ErrorSpec()
                converted[key] = spec
        self._validate(converted)
        with self._lock:
            for key, value in converted.items():
                setattr(self, key, value)

    def reset(self) -> None:
        """Back to no faults and default latencies."""
        defaults = Faults()
        self.update(**{f.name: getattr(defaults, f.name) for f in dataclasses.fields(self)})

    def snapshot(self) -> Faults:
        """A consistent copy (for one decision that reads several knobs)."""
        with self._lock:
            return dataclasses.replace(self)

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = {}
            for f in dataclasses.fields(self):
                value = getattr(self, f.name)
                out[f.name] = value.to_dict() if isinstance(value, ErrorSpec) else value
            return out

    def delta_interval_s(self, chunk_ms: int) -> float:
        """Wait between two audio deltas of ``chunk_ms`` each."""
        if self.delta_delay_ms is not None:
            return self.delta_delay_ms / 1000.0
        if self.pace <= 0:
            return 0.0
        return chunk_ms / 1000.0 / self.pace

    @staticmethod
    def _validate(values: dict[str, Any]) -> None:
        status = values.get("reject_handshake_status")
        if status is not None and (not isinstance(status, int) or not 400 <= status <= 599):
            raise ValueError(f"reject_handshake_status must be an HTTP error status, not {status!r}")
        for key in ("session_updated_delay_ms", "first_audio_ms"):
            if key in values and (not isinstance(values[key], int) or values[key] < 0):
                raise ValueError(f"{key} must be a non-negative integer")
        for key in ("error_after_deltas", "stall_after_deltas", "close_after_deltas", "delta_delay_ms"):
            value = values.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ValueError(f"{key} must be null or a non-negative integer")
        for key in ("drop_connections", "drop_session_updated", "stall", "close_abruptly"):
            if key in values and not isinstance(values[key], bool):
                raise ValueError(f"{key} must be a boolean")
        if "pace" in values and (not isinstance(values["pace"], int | float) or values["pace"] < 0):
            raise ValueError("pace must be a non-negative number")
        expire = values.get("expire_after_s")
        if expire is not None and (not isinstance(expire, int | float) or expire <= 0):
            raise ValueError("expire_after_s must be null or a positive number")
        code = values.get("close_code")
        if code is not None and not sendable_close_code(code):
            raise ValueError(
                f"close_code must be a code a close frame can carry ({SENDABLE_CLOSE_CODES}); "
                "1005/1006/1015 only describe closes without one: use close_abruptly for 1006"
            )
