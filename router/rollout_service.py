"""Reads and changes the rollout configuration, with a short cache and a last-known fallback.

The webhook must answer in milliseconds even when the store is slow or down, so reads are cached for
``cache_seconds`` (well under the one-second cross-replica propagation promise) and the last config
that was read successfully is kept: if the store is unreachable the webhook answers from it, and with
no config ever read it routes to legacy. While the store is down it is asked again at most once per
``cache_seconds`` (a dead store must not cost every call a connection attempt), and the outage is logged
once when it starts and once when it ends, not once per call. Changes are compare-and-set loops, each
written atomically with its audit entry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from flags.rollout import RolloutConfig
from router.observability import Metrics
from router.store.base import AuditEntry, StateStore, StoreUnavailable

log = logging.getLogger("router.rollout")


class RolloutConflict(Exception):
    """The config kept changing under us (another operator); try again."""


Edit = Mapping[str, Any] | Callable[[RolloutConfig], Mapping[str, Any]]
"""RolloutConfig field changes, or a function computing them from the config they apply to (for changes
that depend on it, like adding to a list: computed again on every compare-and-set attempt)."""


class RolloutService:
    def __init__(
        self,
        store: StateStore,
        *,
        initial_percent: float,
        salt: str,
        metrics: Metrics,
        cache_seconds: float = 0.5,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._initial = RolloutConfig(percent_bp=round(initial_percent * 100), salt=salt)
        self._metrics = metrics
        self._cache_seconds = cache_seconds
        self._monotonic = monotonic
        self._wall = wall
        self._last: RolloutConfig | None = None
        self._fetched_at = float("-inf")  # the last attempt to read, successful or not
        self._store_down = False
        self._unreadable = False  # the stored config could not be read (logged once)

    async def read(self) -> RolloutConfig | None:
        """The config to route by: cached, else stored, else the last one read (None: never read)."""
        now = self._monotonic()
        if now - self._fetched_at < self._cache_seconds:
            return self._last
        try:
            stored = await self._store.get_rollout()
        except StoreUnavailable:
            self._fetched_at = now
            self._metrics.store_errors.labels("get_rollout").inc()
            if not self._store_down:
                self._store_down = True
                log.warning(
                    "state store unreachable; routing from the last known rollout config%s until it is back",
                    "" if self._last is not None else " (none yet: every call goes to legacy)",
                )
            return self._last
        if self._store_down:
            self._store_down = False
            log.warning("state store reachable again; routing from the stored rollout config")
        try:
            config = RolloutConfig.from_dict(stored) if stored else self._initial
        except (ValueError, TypeError, KeyError) as exc:
            # A value this release does not know (a newer release's mode during a rolling deploy, say): route
            # as if the store were down, from the last config read, and say so, rather than fail every call.
            self._fetched_at = now
            self._metrics.store_errors.labels("get_rollout").inc()
            if not self._unreadable:  # once, not on every read
                self._unreadable = True
                log.error("stored rollout config unreadable (%s); routing from the last known one", exc)
            return self._last
        self._unreadable = False
        self._remember(config, now)
        return config

    async def current(self) -> RolloutConfig:
        """The stored config, uncached (operators must see what is really stored)."""
        stored = await self._store.get_rollout()
        config = RolloutConfig.from_dict(stored) if stored else self._initial
        self._remember(config, self._monotonic())
        return config

    def _remember(self, config: RolloutConfig, at: float) -> None:
        self._last = config
        self._fetched_at = at
        self._metrics.rollout_percent.set(config.percent)

    async def change(
        self, action: str, changes: Edit, *, actor: str, reason: str, attempts: int = 5
    ) -> RolloutConfig:
        """Apply ``changes`` with compare-and-set, then audit before/after. A callable ``changes`` is
        evaluated on each attempt's freshly read config, so a retry never writes a stale edit."""
        for _ in range(attempts):
            stored = await self._store.get_rollout()
            before = RolloutConfig.from_dict(stored) if stored else self._initial
            edit = changes(before) if callable(changes) else changes
            after = before.with_changes(
                **edit,
                version=before.version + 1,
                updated_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._wall())),
                updated_by=actor,
            )
            expected = before.version if stored else None
            entry = AuditEntry(
                at=self._wall(),
                actor=actor,
                action=action,
                reason=reason,
                before=before.to_dict() if stored else None,
                after=after.to_dict(),
            )
            # One atomic write of the change and its audit entry: a failure leaves neither, so the admin
            # API's 503 "nothing was changed" is true (a separate audit write could fail after the change).
            if await self._store.swap_rollout(expected, after.to_dict(), entry):
                self._remember(after, self._monotonic())
                log.info("rollout changed: %s by %s (%s)", action, actor, reason, extra={"reason": reason})
                return after
        raise RolloutConflict("the rollout config changed concurrently; try again")
