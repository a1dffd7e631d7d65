"""How many realtime calls one worker takes at once.

A worker's calls share one event loop on one core. Below its capacity each frame is forwarded within a
millisecond; past it the loop falls behind and every call on the worker degrades together, with no frame
lost but latency growing for as long as the overload lasts (``bench.bridge``: end to end p99 about 1 ms at
50 calls, 110 ms at 200, 700 ms at 300 on a 2.3 GHz core). So a call over the limit goes to legacy, which
costs a worker one HTTP request per turn, instead of slowing every caller already talking.

The limit is checked twice: by the webhook, which routes the call to legacy outright when this process is
full (the single-process case: no media stream is opened at all), and by the media-stream endpoint, which
is authoritative when streams land on another replica than the webhook; there a stream over the limit is
moved to legacy through Twilio's REST API before any Voice Live session is opened.
"""

from __future__ import annotations


class CallSlots:
    """A counter with a ceiling (``limit`` 0: no ceiling). Single event loop: no lock needed."""

    __slots__ = ("_active", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("limit must be 0 (no limit) or more")
        self.limit = limit
        self._active = 0

    @property
    def active(self) -> int:
        return self._active

    @property
    def full(self) -> bool:
        return self.limit > 0 and self._active >= self.limit

    def try_take(self) -> bool:
        """Take a slot for one call; False when the worker is full."""
        if self.full:
            return False
        self._active += 1
        return True

    def release(self) -> None:
        if self._active <= 0:
            raise RuntimeError("released a call slot that was not taken")
        self._active -= 1
