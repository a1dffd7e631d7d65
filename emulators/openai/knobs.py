"""Latency and fault knobs of the OpenAI emulator: thread-safe, changeable while it serves.

Fault counters mean "the next N requests"; ``-1`` means "every request until changed" (an outage drill).
Each request takes at most one HTTP-level fault, checked in the order rate limit, server error; a stall
and a mid-stream error are independent of those and of each other.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import Any


@dataclass
class OpenAIKnobs:
    first_token_delay_s: float = 0.0
    """Delay before the first content chunk (streaming) or before the response (non-streaming)."""
    token_delay_s: float = 0.0
    """Delay between streamed content chunks."""
    rate_limit_next: int = 0
    """Answer the next N requests with HTTP 429 (``rate_limit_exceeded``)."""
    retry_after_s: float = 1.0
    """``retry-after`` sent with a 429."""
    server_error_next: int = 0
    """Answer the next N requests with HTTP 500 (``server_error``)."""
    midstream_error_next: int = 0
    """Break the next N *streaming* requests with a ``data: {"error": …}`` event."""
    midstream_error_after: int = 2
    """…after this many content chunks."""
    stall_next: int = 0
    """Hang the next N requests before the first byte…"""
    stall_s: float = 30.0
    """…for this long (the request then proceeds normally, if the client is still there)."""


@dataclass(frozen=True)
class RequestPlan:
    """What happens to one request, decided atomically when it arrives."""

    stall_s: float = 0.0
    status: int = 200
    midstream_error_after: int | None = None
    first_token_delay_s: float = 0.0
    token_delay_s: float = 0.0
    retry_after_s: float = 1.0


_FIELDS = {f.name for f in dataclasses.fields(OpenAIKnobs)}


class KnobStore:
    """Holds an :class:`OpenAIKnobs` behind a lock; counters are consumed per request."""

    def __init__(self, knobs: OpenAIKnobs | None = None) -> None:
        self._lock = threading.Lock()
        self._knobs = knobs or OpenAIKnobs()

    def snapshot(self) -> OpenAIKnobs:
        with self._lock:
            return dataclasses.replace(self._knobs)

    def update(self, **changes: Any) -> OpenAIKnobs:
        """Change some knobs; unknown names or wrong types raise ``ValueError``."""
        unknown = set(changes) - _FIELDS
        if unknown:
            raise ValueError(f"unknown knob(s): {', '.join(sorted(unknown))}")
        with self._lock:
            current = dataclasses.asdict(self._knobs)
            for name, value in changes.items():
                expected = type(current[name])
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"knob {name} must be a number")
                if expected is int and not float(value).is_integer():
                    raise ValueError(f"knob {name} must be an integer")
                current[name] = expected(value)
            self._knobs = OpenAIKnobs(**current)
            return dataclasses.replace(self._knobs)

    def plan(self, *, streaming: bool) -> RequestPlan:
        with self._lock:
            k = self._knobs
            stall = k.stall_s if _take(k, "stall_next") else 0.0
            status = 200
            if _take(k, "rate_limit_next"):
                status = 429
            elif _take(k, "server_error_next"):
                status = 500
            midstream = None
            if status == 200 and streaming and _take(k, "midstream_error_next"):
                midstream = k.midstream_error_after
            return RequestPlan(
                stall_s=stall,
                status=status,
                midstream_error_after=midstream,
                first_token_delay_s=k.first_token_delay_s,
                token_delay_s=k.token_delay_s,
                retry_after_s=k.retry_after_s,
            )


def _take(knobs: OpenAIKnobs, counter: str) -> bool:
    remaining: int = getattr(knobs, counter)
    if remaining == 0:
        return False
    if remaining > 0:
        setattr(knobs, counter, remaining - 1)
    return True
