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


async def test_flush_returns_once_what_was_queued_before_it_is_written_while_records_keep_arriving() -> None:
    """A slow store (a Redis that takes its socket timeout per batch) under steady traffic: the queue refills
    during every write and is never empty. flush() owes only what was submitted before it was called; it used
    to wait for an empty queue, so the status callback and the admin reads hung for as long as calls came in."""
    metrics = Metrics()
    written: list[str] = []

    async def slow_batch(records: list[dict[str, Any]]) -> None:
        await asyncio.sleep(0.05)
        written.extend(record["call_sid"] for record in records)

    writer = BatchWriter(slow_batch, metrics, operation="put_call", what="call records")
    writer.start()
    stop = asyncio.Event()

    async def traffic() -> None:
        index = 0
        while not stop.is_set():
            writer.submit({"call_sid": f"CA{index}"})
            index += 1
            await asyncio.sleep(0.005)

    calls = asyncio.get_running_loop().create_task(traffic())
    await asyncio.sleep(0.02)
    writer.submit({"call_sid": "CA-mine"})
    try:
        async with asyncio.timeout(1.0):
            await writer.flush()
        assert "CA-mine" in written
    finally:
        stop.set()
        await calls
        await writer.aclose()
