"""A call's store writes: in order, off the media path, failures counted, and nothing held while idle."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from realtime_pipeline.call_log import CallLog
from router.observability import Metrics
from router.records import Pipeline, TurnRecord
from router.store.base import StateStore


class RecordingStore:
    """The three store calls a CallLog makes; each can be made slow or failing."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, Any]] = []
        self.fail_on: set[str] = set()
        self.gate: asyncio.Event | None = None  # writes wait on it when set

    async def _write(self, operation: str, payload: Any) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if operation in self.fail_on:
            raise ConnectionError("store down")
        self.writes.append((operation, payload))

    async def merge_call(self, call_sid: str, fields: dict[str, Any]) -> None:
        await self._write("merge_call", fields)

    async def append_call_event(self, call_sid: str, event: dict[str, Any]) -> None:
        await self._write("append_call_event", event["type"])

    async def append_turn(self, record: dict[str, Any]) -> None:
        await self._write("append_turn", record["turn"])


def make_log(store: RecordingStore, metrics: Metrics, **kwargs: Any) -> CallLog:
    return CallLog(cast(StateStore, store), metrics, "CA1", **kwargs)


def errors(metrics: Metrics, operation: str) -> float:
    return (
        metrics.registry.get_sample_value("voice_router_store_errors_total", {"operation": operation}) or 0.0
    )


def call_log_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("call-log-")]


async def test_writes_land_in_order_and_the_call_holds_no_task_once_idle() -> None:
    store, metrics = RecordingStore(), Metrics()
    call_log = make_log(store, metrics)
    assert call_log_tasks() == []  # a new call holds nothing until it writes
    call_log.merge({"a": 1})
    call_log.event("stream_started", 1.0)
    call_log.turn(TurnRecord(call_sid="CA1", pipeline=Pipeline.REALTIME, turn=0, at=1.0))
    assert store.writes == []  # nothing is awaited by the caller: the media path never waits on the store
    await call_log.close()
    assert store.writes == [
        ("merge_call", {"a": 1}),
        ("append_call_event", "stream_started"),
        ("append_turn", 0),
    ]
    assert call_log_tasks() == []
    # A later write starts a new writer, and it goes away again.
    call_log.event("dtmf", 2.0)
    await call_log.close()
    assert store.writes[-1] == ("append_call_event", "dtmf")
    assert call_log_tasks() == []


async def test_a_failing_write_is_counted_and_later_writes_still_land() -> None:
    store, metrics = RecordingStore(), Metrics()
    store.fail_on = {"merge_call"}
    call_log = make_log(store, metrics)
    call_log.merge({"a": 1})
    call_log.event("barge_in", 1.0)
    await call_log.close()
    assert store.writes == [("append_call_event", "barge_in")]
    assert errors(metrics, "merge_call") == 1


async def test_writes_beyond_the_bound_are_dropped_and_counted() -> None:
    store, metrics = RecordingStore(), Metrics()
    store.gate = asyncio.Event()  # the store hangs
    call_log = make_log(store, metrics, max_pending=2)
    for n in range(5):
        call_log.event(f"e{n}", float(n))
    assert errors(metrics, "append_call_event_dropped") == 3
    store.gate.set()
    await call_log.close()
    assert [payload for _, payload in store.writes] == ["e0", "e1"]


async def test_close_is_bounded_when_the_store_hangs() -> None:
    store, metrics = RecordingStore(), Metrics()
    store.gate = asyncio.Event()  # never set
    call_log = make_log(store, metrics)
    call_log.event("stream_ended", 1.0)
    call_log.event("never", 2.0)
    await asyncio.wait_for(call_log.close(grace=0.05), 5)
    await asyncio.sleep(0)
    assert store.writes == []
    assert call_log_tasks() == []
