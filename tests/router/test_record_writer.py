"""The webhook's write-behind for call records: batches, flush, failures counted, nothing lost on close."""

from __future__ import annotations

import asyncio
from typing import Any

from router.observability import Metrics
from router.record_writer import BatchWriter
from router.store.base import StoreUnavailable


class RecordingStore:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.fail = False
        self.gate = asyncio.Event()
        self.gate.set()

    async def put_calls(self, records: list[dict[str, Any]]) -> None:
        await self.gate.wait()
        if self.fail:
            raise StoreUnavailable("down")
        self.batches.append([record["call_sid"] for record in records])


def errors(metrics: Metrics) -> float:
    return (
        metrics.registry.get_sample_value("voice_router_store_errors_total", {"operation": "put_call"}) or 0.0
    )


async def test_records_queued_while_a_write_is_in_flight_go_out_as_one_batch() -> None:
    store, metrics = RecordingStore(), Metrics()
    writer = BatchWriter(store.put_calls, metrics, operation="put_call", what="call records")
    writer.start()
    store.gate.clear()  # the first write blocks, as a slow store would
    writer.submit({"call_sid": "CA0"})
    await asyncio.sleep(0.01)
    for index in range(1, 50):
        writer.submit({"call_sid": f"CA{index}"})
    store.gate.set()
    await writer.flush()
    assert store.batches == [["CA0"], [f"CA{index}" for index in range(1, 50)]]
    await writer.aclose()


async def test_failures_are_counted_and_do_not_stop_the_writer() -> None:
    store, metrics = RecordingStore(), Metrics()
    writer = BatchWriter(store.put_calls, metrics, operation="put_call", what="call records")
    writer.start()
    store.fail = True
    writer.submit({"call_sid": "CA1"})
    writer.submit({"call_sid": "CA2"})
    await writer.flush()
    assert errors(metrics) == 2
    store.fail = False
    writer.submit({"call_sid": "CA3"})
    await writer.flush()
    assert store.batches == [["CA3"]]
    await writer.aclose()


async def test_close_writes_what_is_still_pending() -> None:
    store, metrics = RecordingStore(), Metrics()
    writer = BatchWriter(store.put_calls, metrics, operation="put_call", what="call records")
    writer.start()
    writer.submit({"call_sid": "CA9"})
    await writer.aclose()  # before the writer task got a turn
    assert store.batches == [["CA9"]]


async def test_flush_without_a_running_task_writes_inline() -> None:
    store, metrics = RecordingStore(), Metrics()
    writer = BatchWriter(store.put_calls, metrics, operation="put_call", what="call records")
    writer.submit({"call_sid": "CA5"})
    await writer.flush()
    assert store.batches == [["CA5"]]
