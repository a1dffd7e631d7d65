"""Keeps call and turn records from growing forever: prunes those older than the retention period."""

from __future__ import annotations

import asyncio
import logging

from flags.clock import Clock
from router.observability import Metrics
from router.store.base import StateStore, StoreUnavailable

log = logging.getLogger("router.retention")

DAY = 86_400.0


class RecordRetention:
    def __init__(
        self, store: StateStore, *, keep_days: float, interval_seconds: float, clock: Clock, metrics: Metrics
    ) -> None:
        self._store = store
        self._keep_seconds = keep_days * DAY
        self._interval = interval_seconds
        self._clock = clock
        self._metrics = metrics

    async def run_once(self) -> int:
        """Prune now; returns the number of calls deleted (0 when the store is unreachable)."""
        try:
            deleted = await self._store.prune_records(self._clock.time() - self._keep_seconds)
        except StoreUnavailable:
            self._metrics.store_errors.labels("prune_records").inc()
            log.warning("could not prune old call records: state store unreachable")
            return 0
        except Exception:
            # Anything else (a store bug, a damaged row) skips this round only: ended, the task would leave
            # the records growing for the life of the process without a word after this one.
            self._metrics.store_errors.labels("prune_records").inc()
            log.exception("could not prune old call records")
            return 0
        if deleted:
            log.info("pruned %d call records older than the retention period", deleted)
        return deleted

    async def run_forever(self) -> None:
        while True:
            await self.run_once()
            await asyncio.sleep(self._interval)
