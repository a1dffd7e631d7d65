"""Writes one call's record, events and turns to the state store off the media path.

Store calls are queued and written in order by a task that exists only while writes are pending, so a slow
or failing store adds no latency to audio frames and its errors never end a call (they are logged and counted
instead). An idle call holds no task and no queue: at hundreds of calls per worker that is memory per call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from router.observability import Metrics
from router.records import TurnRecord
from router.store.base import StateStore

log = logging.getLogger(__name__)

_Write = Callable[[], Awaitable[None]]


class CallLog:
    __slots__ = ("_max_pending", "_metrics", "_pending", "_store", "_task", "call_sid")

    def __init__(
        self, store: StateStore, metrics: Metrics, call_sid: str, *, max_pending: int = 1000
    ) -> None:
        self._store = store
        self._metrics = metrics
        self.call_sid = call_sid
        self._max_pending = max_pending
        self._pending: list[tuple[str, _Write]] = []
        self._task: asyncio.Task[None] | None = None

    def _put(self, operation: str, write: _Write) -> None:
        if len(self._pending) >= self._max_pending:
            self._metrics.store_errors.labels(f"{operation}_dropped").inc()
            return
        self._pending.append((operation, write))
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name=f"call-log-{self.call_sid}")

    def merge(self, fields: dict[str, Any]) -> None:
        self._put("merge_call", lambda: self._store.merge_call(self.call_sid, fields))

    def event(self, kind: str, at: float, **fields: Any) -> None:
        event = {"type": kind, "at": at, "pipeline": "realtime", **fields}
        self._put("append_call_event", lambda: self._store.append_call_event(self.call_sid, event))

    def history(self, messages: list[dict[str, Any]], cap: int) -> None:
        """The conversation so far, for the legacy pipeline when the call moves over (it reads it at the
        caller's next turn, seconds after the move)."""
        self._put("append_history", lambda: self._store.append_history(self.call_sid, messages, cap))

    def turn(self, record: TurnRecord) -> None:
        data = record.to_dict()
        self._put("append_turn", lambda: self._store.append_turn(data))

    async def _drain(self) -> None:
        try:
            while self._pending:
                operation, write = self._pending.pop(0)
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
        finally:
            self._task = None

    async def close(self, grace: float = 5.0) -> None:
        """Finish pending writes (bounded by ``grace`` seconds); what is still pending then is dropped."""
        task = self._task
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), grace)
        except TimeoutError:
            task.cancel()
            self._pending.clear()
            log.warning("store writes still pending at call end", extra={"call_sid": self.call_sid})
