"""What happens around a breaker transition besides its audit entry (stored with it, by the store): the
transition counter and the state gauge."""

from __future__ import annotations

from flags.breaker import TransitionListener
from flags.breaker_state import BreakerDocument, BreakerState
from router.observability import Metrics


def set_state_gauge(metrics: Metrics, state: BreakerState) -> None:
    for candidate in BreakerState:
        metrics.breaker_state.labels(candidate.value).set(1.0 if candidate is state else 0.0)


def count_transitions(metrics: Metrics) -> TransitionListener:
    """A listener counting every transition and setting the state gauge."""

    async def listener(before: BreakerDocument, after: BreakerDocument, cause: str, actor: str) -> None:
        metrics.breaker_transitions.labels(before.state.value, after.state.value).inc()
        set_state_gauge(metrics, after.state)

    return listener
