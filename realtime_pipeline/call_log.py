"""Writes one call's record, events and turns to the state store off the media path.

Store calls go through a small queue drained by one task per call, so a slow or failing store adds no
latency to audio frames and its errors never end a call (they are logged and counted instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from router.observability import Metrics
from router.records import TurnRecord
from router.store.base import StateStore

log = logging.getLogger(__name__)

_Write = Callable[[], Awaitable[None]]


class CallLog:
    def __init__(
        self, store: StateStore, metrics: Metrics, call_sid: str, *, max_pending: int = 1000
    ) -> None:
        self._store = store
        self._metrics = metrics
        self.call_sid = call_sid
        self._queue: asyncio.Queue[tuple[str, _Write] | None] = asyncio.Queue(max_pending)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._drain(), name=f"call-log-{self.call_sid}")

    def _put(self, operation: str, write: _Write) -> None:
        try:
            self._queue.put_nowait((operation, write))
        except asyncio.QueueFull:
            self._metrics.store_errors.labels(f"{operation}_dropped").inc()

    def merge(self, fields: dict[str, Any]) -> None:
        self._put("merge_call", lambda: self._store.merge_call(self.call_sid, fields))

    def event(self, kind: str, at: float, **fields: Any) -> None:
        event = {"type": kind, "at": at, "pipeline": "realtime", **fields}
        self._put("append_call_event", lambda: self._store.append_call_event(self.call_sid, event))

    def turn(self, record: TurnRecord) -> None:
        data = record.to_dict()
        self._put("append_turn", lambda: self._store.append_turn(data))

    async def _drain(self) -> None:
        while True:
            entry = await self._queue.get()
            if entry is None:
                return
            operation, write = entry
            try:
                await write()
            except Exception as exc:
                self._metrics.store_errors.labels(operation).inc()
                log.warning(
                    "store write failed: %s: %s",
                    operation,
                    type(exc).__name__,
                    extra={"call_sid": self.call_sid},
                )

    async def close(self, grace: float = 5.0) -> None:
        """Finish pending writes (bounded by ``grace`` seconds)."""
        if self._task is None:
            return
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace)
        except TimeoutError:
            self._task.cancel()
            log.warning("store writes still pending at call end", extra={"call_sid": self.call_sid})
