"""What happens around a breaker transition: the audit log and the state gauge."""

from __future__ import annotations

import logging

from flags.breaker import TransitionListener
from flags.breaker_state import BreakerDocument, BreakerState
from router.observability import Metrics
from router.store.base import AuditEntry, StateStore, StoreUnavailable

log = logging.getLogger("router.breaker")


def set_state_gauge(metrics: Metrics, state: BreakerState) -> None:
    for candidate in BreakerState:
        metrics.breaker_state.labels(candidate.value).set(1.0 if candidate is state else 0.0)


def audit_and_count(store: StateStore, metrics: Metrics) -> TransitionListener:
    """A listener writing every transition to the audit log and to the metrics."""

    async def listener(before: BreakerDocument, after: BreakerDocument, cause: str, actor: str) -> None:
        metrics.breaker_transitions.labels(before.state.value, after.state.value).inc()
        set_state_gauge(metrics, after.state)
        entry = AuditEntry(
            at=after.since,
            actor=actor,
            action=f"breaker.{cause}" if cause else "breaker.transition",
            reason=after.reason or cause,
            before=before.to_dict(),
            after=after.to_dict(),
        )
        try:
            await store.append_audit(entry)
        except StoreUnavailable:
            metrics.store_errors.labels("append_audit").inc()
            log.error("could not audit breaker transition %s -> %s", before.state, after.state)

    return listener
