"""The realtime pipeline's circuit breaker: resilience4j semantics with a manual acquire/record API.

A "call" here is a minutes-long media session, so nothing is wrapped: the router asks for the state
(``current()``) and, when half-open, for a trial permit (``try_acquire_trial()``) at webhook time; the
realtime pipeline reports each call's :class:`Outcome` later (``record()``).

State lives in a :class:`~flags.breaker_state.BreakerBackend` so every replica sees the same breaker:
a small document changed with compare-and-set on its ``version`` (a lost race is simply re-read and
re-applied), plus a time-based sliding window of per-epoch-second outcome buckets, summed over
``[now - window_seconds + 1, now]`` (resilience4j's TIME_BASED window). Timers are lazy, as in
resilience4j without automatic transitions: any read after the open wait moves OPEN to HALF_OPEN.

States and rules:

* CLOSED — every outcome goes into the window. Trip to OPEN when the window holds at least
  ``minimum_calls`` and the failure rate (FAILURE + CONNECT_FAILURE) or the slow-call rate reaches its
  threshold, or at once after ``consecutive_connect_failures`` CONNECT_FAILUREs in a row (a SUCCESS or
  SLOW resets the streak; a FAILURE leaves it alone) — a dead endpoint shows up at low volume too.
* OPEN — realtime refused; after ``wait_open_seconds`` the next read moves it to HALF_OPEN.
* HALF_OPEN — at most ``half_open_calls`` trial permits. A CONNECT_FAILURE trial reopens at once;
  otherwise, once every permitted trial has reported, the trial rates decide: OPEN again (new wait) or
  CLOSED with a cleared window. Outcomes not marked ``trial`` are ignored for the decision. Stale
  trials: a caller may hang up before an outcome is known, so permits whose outcome has not arrived
  within ``trial_timeout_seconds`` (default 2 × ``wait_open_seconds``) of the start of the half-open
  round, or of the newest permit when one was taken later (a trial admitted near the end of a quiet round
  must have its time to report), are released (logged as a warning) and new trials admitted; the round restarts at that moment
  (``since`` moves), outcomes already reported are kept, and a late report of a released trial is
  ignored. So the breaker can never stay half-open forever for want of reports. Each permit names its
  round (:class:`TrialPermit`): a report or a give-back from an earlier round (released, or from before
  the breaker reopened) is ignored, so it can neither decide this round nor free one of its permits.
* FORCED_OPEN / FORCED_CLOSED — operator states, kept until ``reset()`` (→ CLOSED, window cleared) or
  another force. In FORCED_CLOSED outcomes are still counted (visible in ``status()``) but never trip.

Every state change is written together with its audit entry (the backend's ``breaker_swap`` with a
:class:`~flags.breaker_state.BreakerTransition`: one atomic write, so a change is never live unaudited and a
failed write changed nothing), logged (logger ``flags.breaker``, INFO) and awaited by every listener as
``listener(before, after, cause, actor)``; operator actions do all of it even when the state is unchanged (a
new reason was recorded). A listener that raises is logged and skipped: it never breaks the breaker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, TypeVar

from flags.breaker_state import (
    BreakerBackend,
    BreakerDocument,
    BreakerState,
    BreakerTransition,
    HalfOpenTally,
    WindowTotals,
)
from flags.clock import Clock

logger = logging.getLogger("flags.breaker")

TransitionListener = Callable[[BreakerDocument, BreakerDocument, str, str], Awaitable[None]]

AUTOMATIC = "breaker"  # the actor of every transition the breaker makes by itself

_T = TypeVar("_T")


class Outcome(StrEnum):
    SUCCESS = "success"
    SLOW = "slow"  # no first audio within the slow-call threshold
    FAILURE = "failure"  # session.updated timeout, fatal error event, mid-call socket loss
    # No session at all: connection refused or reset, or the WebSocket upgrade refused (HTTP 401, 503 …).
    # Also counts toward the fast trip.
    CONNECT_FAILURE = "connect_failure"


@dataclass(frozen=True, slots=True)
class TrialPermit:
    """What ``try_acquire_trial()`` hands out: the half-open round the permit was taken in. The caller
    keeps it with the call and passes it back to ``record()`` or ``release_trial()``."""

    round: int


class BreakerConflictError(RuntimeError):
    """The document kept changing under us; too many compare-and-set attempts lost in a row."""


@dataclass(frozen=True)
class BreakerConfig:
    """Thresholds sized for phone traffic: tens of calls per minute, not thousands of requests per second.

    * ``window_seconds=300``: at 20 calls/min a 5-minute window holds ~100 calls — enough for a rate to
      mean something, short enough that a recovered service is forgiven within minutes.
    * ``minimum_calls=10``: resilience4j's default of 100 would take 5 minutes to reach at 20 calls/min;
      10 lets a single bad minute trip it while one unlucky call in a quiet hour cannot.
    * ``failure_rate_threshold=50.0`` (resilience4j's default) and ``slow_call_rate_threshold=80.0``: a
      slow first reply is bad but still a conversation, so it takes a larger share to trip.
    * ``slow_call_seconds=4.0``: no first audio within 4 s of the session start feels broken on a phone.
    * ``wait_open_seconds=60.0``: long enough for a regional blip to clear, short enough that few calls
      miss realtime; resilience4j's default too.
    * ``half_open_calls=3``: few trials, since each is a real caller risking a bad call; 3 still lets one
      failure pass (1/3 < 50 %) while two fail the round.
    * ``consecutive_connect_failures=3``: a connection refused, reset or denied its upgrade is
      unambiguous; three in a row is an outage (or a broken key), whatever the volume (0 turns the fast
      trip off).
    * ``trial_timeout_seconds=None`` → 2 × ``wait_open_seconds``: after that, trial permits whose
      outcome never came (the caller hung up first) are released.
    """

    window_seconds: int = 300
    minimum_calls: int = 10
    failure_rate_threshold: float = 50.0
    slow_call_rate_threshold: float = 80.0
    slow_call_seconds: float = 4.0
    wait_open_seconds: float = 60.0
    half_open_calls: int = 3
    consecutive_connect_failures: int = 3
    trial_timeout_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.window_seconds < 1:
            raise ValueError("window_seconds must be at least 1")
        if self.minimum_calls < 1:
            raise ValueError("minimum_calls must be at least 1")
        if self.half_open_calls < 1:
            raise ValueError("half_open_calls must be at least 1")
        if self.consecutive_connect_failures < 0:
            raise ValueError("consecutive_connect_failures must be 0 (off) or more")
        for name in ("failure_rate_threshold", "slow_call_rate_threshold"):
            if not 0 < getattr(self, name) <= 100:
                raise ValueError(f"{name} must be in (0, 100]")
        if self.wait_open_seconds <= 0 or self.slow_call_seconds <= 0:
            raise ValueError("wait_open_seconds and slow_call_seconds must be > 0")
        # A trial timeout of 0 would release every trial in flight on the next read: half-open would admit
        # any number of trials and ignore each one's outcome (its round already gone), never closing again.
        if self.trial_timeout <= 0:
            raise ValueError("trial_timeout_seconds must be > 0")

    @property
    def trial_timeout(self) -> float:
        if self.trial_timeout_seconds is not None:
            return self.trial_timeout_seconds
        return 2 * self.wait_open_seconds

    def is_slow(self, first_audio_seconds: float) -> bool:
        """Whether a call whose first audio took this long counts as :attr:`Outcome.SLOW`."""
        return first_audio_seconds > self.slow_call_seconds


@dataclass(frozen=True)
class BreakerStatus:
    state: BreakerState
    failure_rate: float  # percent of calls in the window that failed (0.0 when the window is empty)
    slow_call_rate: float  # percent of calls in the window that were slow
    calls_in_window: int
    since: float  # epoch seconds of the last transition
    reason: str
    consecutive_connect_failures: int
    window_seconds: int = 0
    minimum_calls: int = 0
    trial_permits: int = 0  # half-open only: trials admitted in this round
    trial_outcomes: int = 0  # half-open only: trials that have reported

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "failure_rate": round(self.failure_rate, 2),
            "slow_call_rate": round(self.slow_call_rate, 2),
            "calls_in_window": self.calls_in_window,
            # ISO 8601 like the rollout's ``updated_at`` (the contract's form); None before any transition.
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since)) if self.since else None,
            "reason": self.reason,
            "consecutive_connect_failures": self.consecutive_connect_failures,
            "window_seconds": self.window_seconds,
            "minimum_calls": self.minimum_calls,
            "trial_permits": self.trial_permits,
            "trial_outcomes": self.trial_outcomes,
        }


@dataclass(frozen=True)
class _Change:
    """A new document to compare-and-set in, and what to tell about it."""

    after: BreakerDocument
    cause: str = ""
    actor: str = AUTOMATIC
    notify: bool = False  # a transition (or operator action): log at INFO and call the listeners
    clear_window: bool = False


def _rate(part: int, total: int) -> float:
    return 100.0 * part / total if total else 0.0


def _reported(tally: HalfOpenTally) -> int:
    return tally.successes + tally.failures + tally.slow


class CircuitBreaker:
    """One breaker over one backend. Cheap to construct; holds no state of its own besides listeners."""

    max_attempts = 32  # compare-and-set attempts before giving up with BreakerConflictError

    def __init__(
        self,
        config: BreakerConfig,
        backend: BreakerBackend,
        *,
        clock: Clock,
        listeners: Sequence[TransitionListener] = (),
    ) -> None:
        self.config = config
        self._backend = backend
        self._clock = clock
        self._listeners: list[TransitionListener] = list(listeners)

    def add_listener(self, listener: TransitionListener) -> None:
        self._listeners.append(listener)

    # Reads ----------------------------------------------------------------------------------------

    async def current(self) -> BreakerDocument:
        """The document, after applying a due OPEN → HALF_OPEN transition (or trial release)."""

        async def nothing(doc: BreakerDocument, now: float) -> tuple[_Change | None, None]:
            return None, None

        doc, _ = await self._update(nothing)
        return doc

    async def status(self) -> BreakerStatus:
        doc = await self.current()
        totals = await self._window(self._clock.time())
        return BreakerStatus(
            state=doc.state,
            failure_rate=_rate(totals.failures, totals.calls),
            slow_call_rate=_rate(totals.slow, totals.calls),
            calls_in_window=totals.calls,
            since=doc.since,
            reason=doc.reason,
            consecutive_connect_failures=doc.consecutive_connect_failures,
            window_seconds=self.config.window_seconds,
            minimum_calls=self.config.minimum_calls,
            trial_permits=doc.half_open.permits if doc.state is BreakerState.HALF_OPEN else 0,
            trial_outcomes=_reported(doc.half_open) if doc.state is BreakerState.HALF_OPEN else 0,
        )

    # Calls ----------------------------------------------------------------------------------------

    async def try_acquire_trial(self) -> TrialPermit | None:
        """Take one half-open trial permit. None when open or when every permit of this half-open round is
        taken; in CLOSED/FORCED_CLOSED a permit of no round in progress (nothing to limit: its report
        counts as a regular call's and giving it back does nothing)."""
        limit = self.config.half_open_calls

        async def acquire(doc: BreakerDocument, now: float) -> tuple[_Change | None, TrialPermit | None]:
            permit = TrialPermit(doc.trial_round)
            if doc.state in (BreakerState.CLOSED, BreakerState.FORCED_CLOSED):
                return None, permit
            if doc.state is not BreakerState.HALF_OPEN or doc.half_open.permits >= limit:
                return None, None
            tally = replace(doc.half_open, permits=doc.half_open.permits + 1, last_permit_at=now)
            return _Change(replace(doc, half_open=tally)), permit

        _, permit = await self._update(acquire)
        return permit

    async def release_trial(self, permit: TrialPermit) -> None:
        """Give back a trial permit whose call never reached the backend (a full worker moved it to legacy
        first): the next caller can be the trial at once, not after ``trial_timeout``. Ignored outside
        HALF_OPEN, for a permit of an earlier round, and when no permit is outstanding."""

        async def give_back(doc: BreakerDocument, now: float) -> tuple[_Change | None, None]:
            tally = doc.half_open
            if doc.state is not BreakerState.HALF_OPEN or permit.round != doc.trial_round:
                return None, None
            if tally.permits <= _reported(tally):
                return None, None
            return _Change(replace(doc, half_open=replace(tally, permits=tally.permits - 1))), None

        await self._update(give_back)

    async def record(self, outcome: Outcome, *, trial: TrialPermit | None = None) -> None:
        """Count one finished realtime call. ``trial``: the permit it was admitted with, if it was a trial."""
        outcome = Outcome(outcome)
        failed = outcome in (Outcome.FAILURE, Outcome.CONNECT_FAILURE)
        slow = outcome is Outcome.SLOW
        await self._backend.breaker_add_outcome(int(self._clock.time()), failed=failed, slow=slow)

        async def apply(doc: BreakerDocument, now: float) -> tuple[_Change | None, None]:
            if doc.state is BreakerState.CLOSED:
                return await self._closed_outcome(doc, now, outcome), None
            if doc.state is BreakerState.HALF_OPEN and trial is not None:
                return self._trial_outcome(doc, now, outcome, trial), None
            return None, None

        await self._update(apply)

    # Operator -------------------------------------------------------------------------------------

    async def force_open(self, *, actor: str, reason: str) -> BreakerDocument:
        return await self._operator(BreakerState.FORCED_OPEN, "forced_open", actor, reason)

    async def force_closed(self, *, actor: str, reason: str) -> BreakerDocument:
        return await self._operator(BreakerState.FORCED_CLOSED, "forced_closed", actor, reason)

    async def reset(self, *, actor: str, reason: str) -> BreakerDocument:
        return await self._operator(BreakerState.CLOSED, "reset", actor, reason)

    async def _operator(self, state: BreakerState, cause: str, actor: str, reason: str) -> BreakerDocument:
        async def force(doc: BreakerDocument, now: float) -> tuple[_Change | None, None]:
            after = self._moved(doc, state, now, reason)
            return _Change(after, cause, actor, True, clear_window=state is BreakerState.CLOSED), None

        doc, _ = await self._update(force)
        return doc

    # State machine --------------------------------------------------------------------------------

    @staticmethod
    def _moved(doc: BreakerDocument, state: BreakerState, now: float, reason: str) -> BreakerDocument:
        trial_round = doc.trial_round + 1 if state is BreakerState.HALF_OPEN else doc.trial_round
        return BreakerDocument(
            state=state, since=now, reason=reason, version=doc.version, trial_round=trial_round
        )

    def _settle(self, doc: BreakerDocument, now: float) -> _Change | None:
        """The timers: OPEN → HALF_OPEN after the wait; release of trials that never reported."""
        cfg = self.config
        if doc.state is BreakerState.OPEN and now - doc.since >= cfg.wait_open_seconds:
            reason = f"open for {cfg.wait_open_seconds:g}s; admitting up to {cfg.half_open_calls} trial calls"
            return _Change(self._moved(doc, BreakerState.HALF_OPEN, now, reason), "wait_elapsed", notify=True)
        newest = max(doc.since, doc.half_open.last_permit_at)
        if doc.state is BreakerState.HALF_OPEN and now - newest >= cfg.trial_timeout:
            reported = _reported(doc.half_open)
            if doc.half_open.permits > reported:
                released = doc.half_open.permits - reported
                reason = (
                    f"released {released} trial permit(s) with no outcome after {cfg.trial_timeout:g}s; "
                    f"admitting up to {cfg.half_open_calls} trial calls"
                )
                tally = replace(doc.half_open, permits=reported)
                restarted = replace(
                    doc, since=now, reason=reason, half_open=tally, trial_round=doc.trial_round + 1
                )
                return _Change(restarted, "trials_released")
        return None

    async def _closed_outcome(self, doc: BreakerDocument, now: float, outcome: Outcome) -> _Change | None:
        cfg = self.config
        streak = doc.consecutive_connect_failures
        if outcome is Outcome.CONNECT_FAILURE:
            streak += 1
        elif outcome in (Outcome.SUCCESS, Outcome.SLOW):
            streak = 0
        if cfg.consecutive_connect_failures and streak >= cfg.consecutive_connect_failures:
            reason = f"{streak} consecutive connect failures"
            return self._trip(doc, now, "consecutive_connect_failures", reason)
        totals = await self._window(now)
        if totals.calls >= cfg.minimum_calls:
            failure_rate = _rate(totals.failures, totals.calls)
            if failure_rate >= cfg.failure_rate_threshold:
                reason = (
                    f"failure rate {failure_rate:.1f}% >= {cfg.failure_rate_threshold:g}% "
                    f"over {totals.calls} calls in {cfg.window_seconds}s"
                )
                return self._trip(doc, now, "failure_rate", reason)
            slow_rate = _rate(totals.slow, totals.calls)
            if slow_rate >= cfg.slow_call_rate_threshold:
                reason = (
                    f"slow-call rate {slow_rate:.1f}% >= {cfg.slow_call_rate_threshold:g}% "
                    f"over {totals.calls} calls in {cfg.window_seconds}s"
                )
                return self._trip(doc, now, "slow_call_rate", reason)
        if streak != doc.consecutive_connect_failures:
            return _Change(replace(doc, consecutive_connect_failures=streak))
        return None

    def _trial_outcome(
        self, doc: BreakerDocument, now: float, outcome: Outcome, permit: TrialPermit
    ) -> _Change | None:
        cfg = self.config
        tally = doc.half_open
        if permit.round != doc.trial_round:
            logger.info(
                "ignoring the outcome of a trial from an earlier half-open round (released or reopened)"
            )
            return None
        if _reported(tally) >= tally.permits:
            logger.info(
                "ignoring a trial outcome with no outstanding permit in this round (already reported)"
            )
            return None
        if outcome is Outcome.SUCCESS:
            tally = replace(tally, successes=tally.successes + 1)
        elif outcome is Outcome.SLOW:
            tally = replace(tally, slow=tally.slow + 1)
        else:
            tally = replace(tally, failures=tally.failures + 1)
        if outcome is Outcome.CONNECT_FAILURE:
            return self._trip(doc, now, "trial_connect_failure", "a half-open trial call could not connect")
        reported = _reported(tally)
        if reported < cfg.half_open_calls:
            return _Change(replace(doc, half_open=tally))
        failure_rate = _rate(tally.failures, reported)
        slow_rate = _rate(tally.slow, reported)
        if failure_rate >= cfg.failure_rate_threshold:
            reason = f"{tally.failures} of {reported} trial calls failed"
            return self._trip(doc, now, "trial_failure_rate", reason)
        if slow_rate >= cfg.slow_call_rate_threshold:
            reason = f"{tally.slow} of {reported} trial calls were slow"
            return self._trip(doc, now, "trial_slow_call_rate", reason)
        reason = f"{tally.successes} of {reported} trial calls succeeded"
        after = self._moved(doc, BreakerState.CLOSED, now, reason)
        return _Change(after, "trials_passed", notify=True, clear_window=True)

    def _trip(self, doc: BreakerDocument, now: float, cause: str, reason: str) -> _Change:
        return _Change(self._moved(doc, BreakerState.OPEN, now, reason), cause, notify=True)

    # Storage --------------------------------------------------------------------------------------

    async def _window(self, now: float) -> WindowTotals:
        last = int(now)
        return await self._backend.breaker_window(last - self.config.window_seconds + 1, last)

    async def _update(
        self, action: Callable[[BreakerDocument, float], Awaitable[tuple[_Change | None, _T]]]
    ) -> tuple[BreakerDocument, _T]:
        """Load, settle the timers, apply ``action``; compare-and-set each change, retrying lost races."""
        for _ in range(self.max_attempts):
            now = self._clock.time()
            stored = await self._backend.breaker_load()
            doc = stored if stored is not None else BreakerDocument()
            expected = None if stored is None else stored.version
            settled = self._settle(doc, now)
            if settled is not None:
                written = await self._write(expected, doc, settled)
                if written is None:
                    await asyncio.sleep(0)
                    continue
                doc, expected = written, written.version
            change, result = await action(doc, now)
            if change is None:
                return doc, result
            written = await self._write(expected, doc, change)
            if written is None:
                await asyncio.sleep(0)
                continue
            return written, result
        raise BreakerConflictError(f"breaker document changed {self.max_attempts} times in a row")

    async def _write(
        self, expected: int | None, before: BreakerDocument, change: _Change
    ) -> BreakerDocument | None:
        """Compare-and-set ``change.after``; on success log and notify. None when the race was lost.

        A change that notifies is a transition or an operator's action: it goes to the backend with its
        audit entry and its window clear, in one write (so no replica sees the new CLOSED state next to the
        old bad window, and a store failure leaves neither the change nor its audit entry)."""
        after = replace(change.after, version=(expected or 0) + 1)
        transition = None
        if change.notify:
            transition = BreakerTransition(
                before, change.cause, change.actor, clear_window=change.clear_window
            )
        elif change.clear_window:
            await self._backend.breaker_clear_window()  # before the swap, for the same reason
        if not await self._backend.breaker_swap(expected, after, transition):
            return None
        if change.notify:
            await self._notify(before, after, change.cause, change.actor)
        elif change.cause:
            logger.warning("breaker: %s", after.reason, extra={"event": change.cause, "state": after.state})
        return after

    async def _notify(self, before: BreakerDocument, after: BreakerDocument, cause: str, actor: str) -> None:
        logger.info(
            "breaker %s -> %s (%s by %s): %s",
            before.state.value,
            after.state.value,
            cause,
            actor,
            after.reason,
            extra={
                "event": "breaker_transition",
                "from_state": before.state.value,
                "to_state": after.state.value,
                "cause": cause,
                "actor": actor,
                "reason": after.reason,
            },
        )
        for listener in self._listeners:
            try:
                await listener(before, after, cause, actor)
            except Exception:
                logger.exception("breaker transition listener %r failed", listener)
