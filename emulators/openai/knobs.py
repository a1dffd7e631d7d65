"""Latency and fault knobs of the OpenAI emulator: thread-safe, changeable while it serves.

Fault counters mean "the next N requests"; ``-1`` means "every request until changed" (an outage drill).
Each request takes at most one HTTP-level fault, checked in the order rate limit, server error; a stall
and a mid-stream error are independent of those and of each other.
"""

from __future__ import annotations

from dataclasses import dataclass

from emulators.control import KnobStore, take


@dataclass
class OpenAIKnobs:
    first_token_delay_s: float = 0.0
    """Delay before the first content chunk (streaming) or before the response (non-streaming)."""
    token_delay_s: float = 0.0
    """Delay between streamed content chunks (tool-call argument fragments count as content chunks)."""
    rate_limit_next: int = 0
    """Answer the next N requests with HTTP 429 (``rate_limit_exceeded``)."""
    retry_after_s: float = 1.0
    """``retry-after`` sent with a 429."""
    server_error_next: int = 0
    """Answer the next N requests with HTTP 500 (``server_error``)."""
    midstream_error_next: int = 0
    """Break the next N *streaming* requests with a ``data: {"error": …}`` event."""
    midstream_error_after: int = 2
    """…after this many content chunks (or tool-call argument fragments)."""
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


class OpenAIKnobStore(KnobStore[OpenAIKnobs]):
    """The knobs of one emulator; counters are consumed per request by :meth:`plan`."""

    def __init__(self, knobs: OpenAIKnobs | None = None) -> None:
        super().__init__(knobs or OpenAIKnobs())

    def plan(self, *, streaming: bool) -> RequestPlan:
        with self.locked() as k:
            stall = k.stall_s if take(k, "stall_next") else 0.0
            status = 200
            if take(k, "rate_limit_next"):
                status = 429
            elif take(k, "server_error_next"):
                status = 500
            midstream = None
            if status == 200 and streaming and take(k, "midstream_error_next"):
                midstream = k.midstream_error_after
            return RequestPlan(
                stall_s=stall,
                status=status,
                midstream_error_after=midstream,
                first_token_delay_s=k.first_token_delay_s,
                token_delay_s=k.token_delay_s,
                retry_after_s=k.retry_after_s,
            )
