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
