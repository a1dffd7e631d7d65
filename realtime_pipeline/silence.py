"""A caller who goes quiet on a realtime call: when the agent re-prompts, says goodbye, and hangs up.

Legacy ends such a call after ``max_empty_turns`` empty ``<Gather>`` turns. A media stream has no such turns:
without this, an abandoned line (a phone left off the hook) would hold a Voice Live session, renewed every 28
minutes, for as long as the line stays open. The hang-up waits for the caller
to have heard the goodbye (its last mark echo), not for a timer (pain point P11: a timed teardown cuts the
goodbye short).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable


class SilenceAction(enum.Enum):
    REPROMPT = "reprompt"
    GOODBYE = "goodbye"
    HANG_UP = "hang_up"


class _Farewell(enum.Enum):
    NONE = 0
    ASKED = 1  # the goodbye was asked for
    SPEAKING = 2  # its response began
    DONE = 3  # heard (or never came): the call is being ended


class SilenceWatch:
    """One call's silence clock, on one timer. The bridge reports what happens on the line; the watch calls
    ``act`` when the caller has been quiet for ``after_seconds`` while the line was idle (``line_idle``: no
    one speaking, nothing playing, no reply or tool awaited).

    The timer is not moved on every event (the bridge sees 50 mark echoes a second while the agent speaks):
    events only note the time, and the timer, when it fires early, sleeps again for what is left.
    """

    __slots__ = (
        "_act",
        "_after",
        "_farewell",
        "_line_idle",
        "_max_reprompts",
        "_monotonic",
        "_quiet_since",
        "_reprompts",
        "_timer",
    )

    def __init__(
        self,
        *,
        after_seconds: float,
        max_reprompts: int,
        monotonic: Callable[[], float],
        line_idle: Callable[[], bool],
        act: Callable[[SilenceAction], None],
    ) -> None:
        self._after = after_seconds
        self._max_reprompts = max_reprompts
        self._monotonic = monotonic
        self._line_idle = line_idle
        self._act = act
        self._quiet_since = monotonic()
        self._reprompts = 0
        self._farewell = _Farewell.NONE
        self._timer: asyncio.TimerHandle | None = None

    @property
    def reprompts(self) -> int:
        """Re-prompts since the caller last spoke."""
        return self._reprompts

    def start(self) -> None:
        """The call is bridged: the caller's silence counts from now (0 seconds: never)."""
        self._quiet_since = self._monotonic()
        if self._after > 0:
            self._arm(self._after)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def activity(self) -> None:
        """Something happened on the line (speech ended, a response began or ended)."""
        self._quiet_since = self._monotonic()

    def caller_spoke(self) -> None:
        """The caller is there: the count starts over, and a goodbye under way no longer ends the call."""
        self._quiet_since = self._monotonic()
        self._reprompts = 0
        if self._farewell is not _Farewell.DONE:
            self._farewell = _Farewell.NONE

    def response_started(self) -> None:
        self._quiet_since = self._monotonic()
        if self._farewell is _Farewell.ASKED:
            self._farewell = _Farewell.SPEAKING

    def agent_finished(self) -> None:
        """The agent's response is over and all its audio has played at Twilio (its last mark came back)."""
        self._quiet_since = self._monotonic()
        if self._farewell is _Farewell.SPEAKING:
            self._farewell = _Farewell.DONE
            self.stop()
            self._act(SilenceAction.HANG_UP)

    def _arm(self, delay: float) -> None:
        self._timer = asyncio.get_running_loop().call_later(delay, self._due)

    def _due(self) -> None:
        self._timer = None
        if self._farewell is _Farewell.DONE:
            return
        quiet = self._monotonic() - self._quiet_since
        if quiet < self._after:
            self._arm(self._after - quiet)
            return
        if not self._line_idle():
            self._arm(self._after)  # busy (the agent talks, a tool runs): its end notes the time
            return
        if self._farewell is not _Farewell.NONE:
            # The goodbye was asked for and never played (the service declined it): end the call anyway.
            self._farewell = _Farewell.DONE
            self._act(SilenceAction.HANG_UP)
            return
        if self._reprompts < self._max_reprompts:
            self._reprompts += 1
            self._act(SilenceAction.REPROMPT)
        else:
            self._farewell = _Farewell.ASKED
            self._act(SilenceAction.GOODBYE)
        self._quiet_since = self._monotonic()
        self._arm(self._after)
