"""Write-behind for records nobody waits on: the webhook's call records and the legacy turn records.

Twilio waits on ``POST /twilio/voice`` and on every ``<Gather>`` action; the records are for operators and
the comparison, not for the answer. So the handler hands its record to a :class:`BatchWriter` and answers
at once, and one task writes whatever has queued up in a single batch round trip (``put_calls``,
``append_turns``). At hundreds of calls a second that turns hundreds of store round trips into a few
batches, and a slow store no longer slows the answer. Readers that must see the records just written (the
admin API, the status callback) call :meth:`BatchWriter.flush` first.

What is lost if the process dies before a flush: the records of the last few milliseconds. A record that
decides something later (a half-open breaker trial's call) is written synchronously instead.

The batch goes to the store on the loop's next turn, before Twilio has the answer: a call record is
created before anything can merge into it (the bridge's outcome, the status callback). Holding batches
back for company (tried: a 20 ms linger) let a fast-failing call's merge land first and be replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from router.observability import Metrics
from router.store.base import StoreUnavailable

log = logging.getLogger("router.records")

MAX_BATCH = 500
MAX_PENDING = 50_000  # beyond this the store is down for good; drop rather than grow without bound
CLOSE_GRACE_S = 5.0


WriteBatch = Callable[[list[dict[str, Any]]], Awaitable[None]]


class BatchWriter:
    """Queues records and writes them with ``write_batch`` (one store round trip per batch).

    ``operation`` labels the store-error metric (``put_call``, ``append_turn``) and ``what`` the logs.
    """

    def __init__(self, write_batch: WriteBatch, metrics: Metrics, *, operation: str, what: str) -> None:
        self._write_batch = write_batch
        self._metrics = metrics
        self._operation = operation
        self._what = what
        self._pending: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        # Records are written in submission order: flush() waits until as many have been settled (written or
        # failed) as had been submitted when it was called, not for an empty queue, which under steady
        # traffic and a slow store never comes.
        self._submitted = 0
        self._settled = 0
        self._progress = asyncio.Event()  # replaced after every batch; the old one is set
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"{self._operation}-writer")

    def submit(self, record: dict[str, Any]) -> None:
        """Queue ``record`` for the next batch; never blocks, never raises (call it on the loop)."""
        if len(self._pending) >= MAX_PENDING or self._closed:
            self._metrics.store_errors.labels(f"{self._operation}_dropped").inc()
            return
        if self._task is None:
            self.start()
        self._pending.append(record)
        self._submitted += 1
        self._wake.set()

    async def flush(self) -> None:
        """Return once everything submitted so far has been written (or has failed)."""
        if self._task is None:
            await self._write_pending()
            return
        target = self._submitted
        while self._settled < target and self._task is not None:
            await self._progress.wait()

    async def aclose(self) -> None:
        """Write what is queued (waiting up to ``CLOSE_GRACE_S`` for a slow store), then stop."""
        self._closed = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_GRACE_S):
                await self.flush()
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
                await self._write_batch(batch)
            except StoreUnavailable:
                self._metrics.store_errors.labels(self._operation).inc(len(batch))
                log.error("could not write %d %s: state store unreachable", len(batch), self._what)
            except Exception:
                self._metrics.store_errors.labels(self._operation).inc(len(batch))
                log.exception("could not write %d %s", len(batch), self._what)
            finally:
                self._settled += len(batch)
                progress, self._progress = self._progress, asyncio.Event()
                progress.set()
