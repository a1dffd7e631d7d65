"""Per-call protection against bad or excessive input: a frame-rate limiter and rate-limited logging."""

from __future__ import annotations

import logging
from collections.abc import Callable


class FrameRateLimiter:
    """Token bucket: ``rate`` frames per second sustained, ``burst`` at once. Twilio sends 50/s."""

    __slots__ = ("_burst", "_clock", "_last", "_rate", "_tokens")

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._clock = clock
        self._last = clock()

    def allow(self) -> bool:
        now = self._clock()
        tokens = self._tokens + (now - self._last) * self._rate
        self._last = now
        if tokens > self._burst:
            tokens = self._burst
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True

    def refund(self) -> None:
        """An allowed frame turned out not to count (an echo of our own mark): give its token back."""
        self._tokens = min(self._burst, self._tokens + 1.0)


class RateLimitedLog:
    """Logs the first occurrence of each reason, then at most once per ``interval`` with a count."""

    def __init__(self, logger: logging.Logger, clock: Callable[[], float], *, interval: float = 10.0) -> None:
        self._logger = logger
        self._clock = clock
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(self, level: int, reason: str, message: str, call_sid: str | None = None) -> None:
        now = self._clock()
        last = self._last.get(reason)
        if last is not None and now - last < self._interval:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return
        self._last[reason] = now
        suppressed = self._suppressed.pop(reason, 0)
        suffix = f" ({suppressed} more since last report)" if suppressed else ""
        self._logger.log(level, message + suffix, extra={"call_sid": call_sid, "reason": reason})
