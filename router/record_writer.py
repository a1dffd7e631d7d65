"""Write-behind for the call records the webhook creates.

Twilio waits on ``POST /twilio/voice``; the call record is for operators and the comparison, not for the
answer. So the webhook hands the record to this writer and answers at once, and one task writes whatever
has queued up in a single ``put_calls`` round trip. At hundreds of calls a second that turns hundreds of
store round trips into a few batches, and a slow store no longer slows the answer. Readers that must see
the records just routed (the admin API, the status callback) call :meth:`flush` first.

What is lost if the process dies before a flush: the records of the last few milliseconds of calls. A call
whose record decides something later (a half-open breaker trial) is written synchronously instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from router.observability import Metrics
from router.store.base import StateStore, StoreUnavailable

log = logging.getLogger("router.records")

MAX_BATCH = 500
MAX_PENDING = 50_000  # beyond this the store is down for good; drop rather than grow without bound


class CallRecordWriter:
    def __init__(self, store: StateStore, metrics: Metrics) -> None:
        self._store = store
        self._metrics = metrics
        self._pending: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="call-record-writer")

    def submit(self, record: dict[str, Any]) -> None:
        """Queue ``record`` for the next batch; never blocks, never raises."""
        if len(self._pending) >= MAX_PENDING:
            self._metrics.store_errors.labels("put_call_dropped").inc()
            return
        self._pending.append(record)
        self._idle.clear()
        self._wake.set()

    async def flush(self) -> None:
        """Return once everything submitted so far has been written (or has failed)."""
        if self._task is None:
            await self._write_pending()
            return
        await self._idle.wait()

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._write_pending()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._write_pending()

    async def _write_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                await self._store.put_calls(batch)
            except StoreUnavailable:
                self._metrics.store_errors.labels("put_call").inc(len(batch))
                log.error("could not write %d call records: state store unreachable", len(batch))
            except Exception:
                self._metrics.store_errors.labels("put_call").inc(len(batch))
                log.exception("could not write %d call records", len(batch))
        self._idle.set()
