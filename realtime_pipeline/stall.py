"""A Voice Live session that stops talking while the caller waits on it.

A socket that stays open while the service stalls raises nothing: a response begun and never finished (or a
``response.create`` never answered) would leave the caller in silence until they hung up, the reply marked as
under way, which also holds off the session renewal and the silence re-prompt. The bridge treats a session
that has sent nothing for ``after_seconds`` while it owed events as lost: it drops the socket, and the loss is
handled like any other (a failure for the breaker, one quick reconnect that asks for the reply again, else the
move to legacy).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class StallWatch:
    """One session's "owes us an event" clock, on one timer that runs only while something is awaited.

    ``heard`` is called for every Voice Live frame (about ten a second mid-reply), so it only notes the time;
    the timer, when it fires early, sleeps again for what is left.
    """

    __slots__ = ("_after", "_heard_at", "_monotonic", "_on_stall", "_timer")

    def __init__(
        self, *, after_seconds: float, monotonic: Callable[[], float], on_stall: Callable[[float], None]
    ) -> None:
        self._after = after_seconds
        self._monotonic = monotonic
        self._on_stall = on_stall
        self._heard_at = monotonic()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def expecting(self) -> bool:
        return self._timer is not None

    def heard(self) -> None:
        """The session sent something."""
        self._heard_at = self._monotonic()

    def expect(self) -> None:
        """The session owes events from now (a response was asked for or began): 0 seconds never watches."""
        if self._timer is None and self._after > 0:
            self._heard_at = self._monotonic()
            self._timer = asyncio.get_running_loop().call_later(self._after, self._due)

    def settle(self) -> None:
        """Nothing is owed any more (the response is over, the request was refused, the session replaced)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _due(self) -> None:
        quiet = self._monotonic() - self._heard_at
        if quiet < self._after:
            self._timer = asyncio.get_running_loop().call_later(self._after - quiet, self._due)
            return
        self._timer = None
        self._on_stall(quiet)
