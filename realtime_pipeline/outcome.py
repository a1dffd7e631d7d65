"""Exactly one circuit-breaker outcome per realtime call.

SUCCESS or SLOW is decided at the call's first response audio (or at call end if none came); a failure kind
is recorded when it happens. Whatever comes first wins; later events are kept in the call record only.
"""

from __future__ import annotations

import logging

from flags.breaker import CircuitBreaker, Outcome
from realtime_pipeline.call_log import CallLog
from router.observability import Metrics

log = logging.getLogger(__name__)


class OutcomeReporter:
    def __init__(self, breaker: CircuitBreaker, metrics: Metrics, call_log: CallLog, *, trial: bool) -> None:
        self._breaker = breaker
        self._metrics = metrics
        self._call_log = call_log
        self._trial = trial
        self.outcome: Outcome | None = None

    @property
    def decided(self) -> bool:
        return self.outcome is not None

    async def report(self, outcome: Outcome, detail: str = "") -> bool:
        """Record ``outcome`` unless one was already recorded for this call."""
        if self.outcome is not None:
            return False
        self.outcome = outcome
        self._metrics.breaker_outcomes.labels(outcome.value).inc()
        self._call_log.merge({"breaker_outcome": outcome.value})
        try:
            await self._breaker.record(outcome, trial=self._trial)
        except Exception as exc:  # the store behind the breaker may be down; the call goes on
            log.warning(
                "breaker outcome not recorded: %s",
                type(exc).__name__,
                extra={"call_sid": self._call_log.call_sid, "reason": detail},
            )
        return True
