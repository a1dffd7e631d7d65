"""The breaker state as the webhook sees it: read through a short cache, like the rollout config.

Routing needs the state on every incoming call; reading it from the shared store each time would put a
store round trip on every webhook. A cache of ``cache_seconds`` (0.5 s by default) keeps the promise that
a change on one replica is seen by every other within a second. Transitions are still decided by the
breaker against the store (``record``, ``try_acquire_trial``), never from this cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from flags.breaker import CircuitBreaker
from flags.breaker_state import BreakerDocument, BreakerState
from router.store.base import StoreUnavailable


class BreakerView:
    def __init__(
        self,
        breaker: CircuitBreaker,
        *,
        cache_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._breaker = breaker
        self._cache_seconds = cache_seconds
        self._monotonic = monotonic
        self._state: BreakerState | None = None
        self._read_at = float("-inf")
        # Bumped by every transition this replica makes: a store read that was in flight meanwhile returns
        # the state from before it and must not replace the newer one.
        self._transitions = 0

    async def state(self) -> BreakerState:
        """The current state; raises StoreUnavailable only when it was never read successfully.

        A failed read is not retried within ``cache_seconds`` either: a dead store costs one attempt per
        period, not one per call.
        """
        now = self._monotonic()
        if now - self._read_at < self._cache_seconds:
            if self._state is None:
                raise StoreUnavailable("breaker state not read yet: the state store is unreachable")
            return self._state
        transitions = self._transitions
        try:
            state = (await self._breaker.current()).state
        except StoreUnavailable:
            self._read_at = now
            if self._state is None:
                raise
            return self._state
        if transitions != self._transitions:
            return state  # a transition landed while this read was in flight: it is newer, keep it
        self._state = state
        self._read_at = now
        return state

    async def on_transition(
        self, before: BreakerDocument, after: BreakerDocument, cause: str, actor: str
    ) -> None:
        """Breaker listener: a transition made on this replica is seen here at once."""
        self._transitions += 1
        self._state = after.state
        self._read_at = self._monotonic()
