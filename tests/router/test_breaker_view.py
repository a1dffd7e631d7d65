"""The webhook's cached view of the breaker state, under concurrent requests in one worker."""

from __future__ import annotations

import asyncio

from flags.breaker import BreakerConfig, CircuitBreaker, Outcome
from flags.breaker_state import BreakerDocument, BreakerState
from flags.clock import FakeClock
from flags.memory_backend import InMemoryBreakerBackend
from router.breaker_view import BreakerView


class SlowFirstLoad(InMemoryBreakerBackend):
    """The next ``breaker_load`` after ``hold()`` reads the document at once but answers only on ``release``:
    a store reply still on its way back (Redis, SQLite's worker thread) while other requests run."""

    def __init__(self) -> None:
        super().__init__()
        self._gate: asyncio.Event | None = None
        self.read_done = asyncio.Event()

    def hold(self) -> asyncio.Event:
        self._gate = asyncio.Event()
        return self._gate

    async def breaker_load(self) -> BreakerDocument | None:
        doc = await super().breaker_load()
        gate, self._gate = self._gate, None
        if gate is not None:
            self.read_done.set()
            await gate.wait()
        return doc


async def test_a_read_in_flight_does_not_undo_a_transition_made_on_this_replica() -> None:
    """A transition decided here reroutes this replica's next call at once (README). A state read that was
    already in flight when the breaker tripped came back with CLOSED and replaced the OPEN the listener had
    just cached, so calls went on to the broken realtime pipeline for another cache period."""
    clock, backend = FakeClock(), SlowFirstLoad()
    breaker = CircuitBreaker(BreakerConfig(consecutive_connect_failures=1), backend, clock=clock)
    view = BreakerView(breaker, cache_seconds=0.5, monotonic=clock.monotonic)
    breaker.add_listener(view.on_transition)

    release = backend.hold()
    in_flight = asyncio.create_task(view.state())  # a webhook's read, answered CLOSED but not yet delivered
    await backend.read_done.wait()
    await breaker.record(Outcome.CONNECT_FAILURE)  # this replica trips the breaker
    assert await view.state() is BreakerState.OPEN
    release.set()
    assert await in_flight is BreakerState.CLOSED  # that request decided before the trip: fine
    assert await view.state() is BreakerState.OPEN  # but the next call must see the trip
