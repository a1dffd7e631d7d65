"""Old call and turn records are pruned on a schedule; a store outage only skips a round."""

from __future__ import annotations

from pathlib import Path

from flags.clock import FakeClock
from router.observability import Metrics
from router.retention import DAY, RecordRetention
from router.store.factory import open_store
from tests.router.conftest import SwitchableStore


async def test_run_once_prunes_records_older_than_the_retention(tmp_path: Path) -> None:
    clock = FakeClock(start=1_700_000_000.0)
    inner = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    await inner.open()
    store = SwitchableStore(inner)
    try:
        now = clock.time()
        await inner.put_call({"call_sid": "CAold", "started_at": now - 31 * DAY})
        await inner.append_turn({"call_sid": "CAold", "at": now - 31 * DAY + 5, "turn": 1})
        await inner.put_call({"call_sid": "CAnew", "started_at": now - 29 * DAY})
        metrics = Metrics()
        retention = RecordRetention(store, keep_days=30, interval_seconds=3600, clock=clock, metrics=metrics)
        assert await retention.run_once() == 1
        assert await inner.get_call("CAold") is None and await inner.get_call("CAnew") is not None
        assert await inner.list_turns(call_sid="CAold") == []

        store.down = True
        clock.advance(2 * DAY)
        assert await retention.run_once() == 0
        assert (
            metrics.registry.get_sample_value(
                "voice_router_store_errors_total", {"operation": "prune_records"}
            )
            == 1
        )
        store.down = False
        assert await retention.run_once() == 1  # CAnew is now 31 days old
    finally:
        await inner.close()


class _BrokenOnce:
    """A store whose first prune fails with something other than an outage."""

    def __init__(self) -> None:
        self.calls = 0

    async def prune_records(self, before: float) -> int:
        self.calls += 1
        if self.calls == 1:
            raise ValueError("a damaged row")
        return 2


async def test_an_unexpected_prune_error_skips_one_round_and_the_schedule_goes_on() -> None:
    import asyncio

    store = _BrokenOnce()
    metrics = Metrics()
    retention = RecordRetention(
        store,  # type: ignore[arg-type]
        keep_days=30,
        interval_seconds=0.01,
        clock=FakeClock(start=1_700_000_000.0),
        metrics=metrics,
    )
    task = asyncio.create_task(retention.run_forever())
    try:
        for _ in range(200):
            if store.calls >= 2:
                break
            await asyncio.sleep(0.01)
        assert store.calls >= 2, "the task ended at the first error"
        assert not task.done()
    finally:
        task.cancel()
    labels = {"operation": "prune_records"}
    assert metrics.registry.get_sample_value("voice_router_store_errors_total", labels) == 1
