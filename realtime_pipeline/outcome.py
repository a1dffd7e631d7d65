"""The circuit-breaker outcomes of one realtime call.

SUCCESS or SLOW is decided at the call's first response audio (or at call end if none came) so the breaker
learns within seconds, not at the end of a minutes-long call; a failure kind is recorded when it happens.
The first outcome wins, with one exception: a call that started well and then failed (mid-call socket loss,
a fatal error) reports that failure as a second sample. Otherwise a Voice Live that drops calls after
their first words would never trip the breaker. The late failure is never a half-open trial result (the
trial already reported), and a call reports at most one late failure.

The outcome is decided at once, but written to the breaker's store in the background (``drain`` waits for
the writes at call end): a slow or unreachable store must never hold up the caller's audio, a reconnect or
the move to legacy.
"""

from __future__ import annotations

import asyncio
import logging

from flags.breaker import CircuitBreaker, Outcome, TrialPermit
from realtime_pipeline.call_log import CallLog
from router.observability import Metrics

log = logging.getLogger(__name__)

FAILURES = frozenset({Outcome.FAILURE, Outcome.CONNECT_FAILURE})


class OutcomeReporter:
    __slots__ = (
        "_breaker",
        "_call_log",
        "_metrics",
        "_trial",
        "_unwritten",
        "_writer",
        "late_failure",
        "outcome",
    )

    def __init__(
        self, breaker: CircuitBreaker, metrics: Metrics, call_log: CallLog, *, trial: TrialPermit | None
    ) -> None:
        self._breaker = breaker
        self._metrics = metrics
        self._call_log = call_log
        self._trial = trial
        self.outcome: Outcome | None = None
        self.late_failure: Outcome | None = None
        self._unwritten: list[tuple[Outcome, TrialPermit | None, str]] = []  # at most two: first and late
        self._writer: asyncio.Task[None] | None = None

    @property
    def decided(self) -> bool:
        return self.outcome is not None

    def report(self, outcome: Outcome, detail: str = "") -> bool:
        """Record ``outcome`` unless this call already has one (see the module docstring's exception)."""
        trial = self._trial
        if self.outcome is not None:
            if outcome not in FAILURES or self.outcome in FAILURES or self.late_failure is not None:
                return False
            self.late_failure = outcome
            trial = None
            self._call_log.merge({"breaker_late_failure": outcome.value})
        else:
            self.outcome = outcome
            self._call_log.merge({"breaker_outcome": outcome.value})
        self._metrics.breaker_outcomes.labels(outcome.value).inc()
        self._unwritten.append((outcome, trial, detail))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_in_order())
        return True

    async def _write_in_order(self) -> None:
        try:
            while self._unwritten:
                outcome, trial, detail = self._unwritten.pop(0)
                try:
                    await self._breaker.record(outcome, trial=trial)
                except Exception as exc:  # the store behind the breaker may be down; the call goes on
                    log.warning(
                        "breaker outcome not recorded: %s",
                        type(exc).__name__,
                        extra={"call_sid": self._call_log.call_sid, "reason": detail},
                    )
        finally:
            self._writer = None

    async def drain(self) -> None:
        """Wait until the outcomes reported so far reached the breaker (its store has its own timeouts)."""
        writer = self._writer
        if writer is not None:
            await asyncio.shield(writer)

    async def release_trial(self) -> None:
        """This call never reached Voice Live (the worker was full): give its half-open trial permit, if it
        had one, back to the breaker, so another caller can be the trial now."""
        permit = self._trial
        if permit is None or self.outcome is not None:
            return
        self._trial = None
        try:
            await self._breaker.release_trial(permit)
        except Exception as exc:  # the store behind the breaker may be down: the stale-trial timeout frees it
            log.warning(
                "trial permit not released: %s",
                type(exc).__name__,
                extra={"call_sid": self._call_log.call_sid},
            )
