"""During a store outage the webhook's two reads (rollout config, breaker state) ask the dead store at most
once per cache period, and the outage is logged when it starts and when it ends, not once per call."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from flags.breaker import BreakerConfig, CircuitBreaker
from flags.breaker_state import BreakerState
from flags.clock import FakeClock
from flags.memory_backend import InMemoryBreakerBackend
from router.breaker_view import BreakerView
from router.observability import Metrics
from router.rollout_service import RolloutService
from router.store.base import StoreUnavailable


class RolloutOnlyStore:
    """``get_rollout`` that can be switched off; counts every attempt."""

    def __init__(self) -> None:
        self.down = False
        self.reads = 0
        self.document: dict[str, Any] | None = {"percent_bp": 2500, "salt": "s", "version": 1}

    async def get_rollout(self) -> dict[str, Any] | None:
        self.reads += 1
        if self.down:
            raise StoreUnavailable("down (test)")
        return self.document


class SwitchableBackend(InMemoryBreakerBackend):
    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.loads = 0

    async def breaker_load(self) -> Any:
        self.loads += 1
        if self.down:
            raise StoreUnavailable("down (test)")
        return await super().breaker_load()


def rollout_service(store: RolloutOnlyStore, clock: FakeClock) -> RolloutService:
    return RolloutService(
        store,  # type: ignore[arg-type]
        initial_percent=0.0,
        salt="s",
        metrics=Metrics(),
        cache_seconds=0.5,
        monotonic=clock.monotonic,
        wall=clock.time,
    )


async def test_rollout_reads_back_off_and_log_once_per_outage(caplog: pytest.LogCaptureFixture) -> None:
    clock, store = FakeClock(), RolloutOnlyStore()
    service = rollout_service(store, clock)
    assert (await service.read()) is not None and store.reads == 1
    store.down = True
    clock.advance(1.0)
    caplog.set_level(logging.WARNING, logger="router.rollout")
    for _ in range(100):  # a burst of calls inside one cache period
        config = await service.read()
        assert config is not None and config.percent == 25.0  # the last known config
    assert store.reads == 2
    clock.advance(0.6)
    for _ in range(100):
        await service.read()
    assert store.reads == 3
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "unreachable" in warnings[0]

    store.down = False
    clock.advance(0.6)
    await service.read()
    assert store.reads == 4
    assert len(caplog.records) == 2 and "reachable again" in caplog.records[1].getMessage()


async def test_rollout_never_read_routes_legacy_without_hammering_the_store() -> None:
    clock, store = FakeClock(), RolloutOnlyStore()
    store.down = True
    service = rollout_service(store, clock)
    assert [await service.read() for _ in range(50)] == [None] * 50
    assert store.reads == 1


async def test_breaker_view_backs_off_while_the_store_is_down() -> None:
    clock, backend = FakeClock(), SwitchableBackend()
    breaker = CircuitBreaker(BreakerConfig(), backend, clock=clock)
    view = BreakerView(breaker, cache_seconds=0.5, monotonic=clock.monotonic)
    assert await view.state() is BreakerState.CLOSED
    loads = backend.loads
    backend.down = True
    clock.advance(1.0)
    for _ in range(50):
        assert await view.state() is BreakerState.CLOSED  # the last state read
    assert backend.loads == loads + 1


async def test_breaker_view_never_read_raises_without_hammering_the_store() -> None:
    clock, backend = FakeClock(), SwitchableBackend()
    backend.down = True
    view = BreakerView(
        CircuitBreaker(BreakerConfig(), backend, clock=clock), cache_seconds=0.5, monotonic=clock.monotonic
    )
    for _ in range(20):
        with pytest.raises(StoreUnavailable):
            await view.state()
    assert backend.loads == 1
    backend.down = False
    clock.advance(0.6)
    assert await view.state() is BreakerState.CLOSED
