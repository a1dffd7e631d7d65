"""A :class:`~flags.breaker_state.BreakerBackend` kept in process memory.

For unit tests and for a single replica that needs no persistence. Documents are copied in and out so
callers can never change the stored one by mutating what they hold, exactly as with a real store.
"""

from __future__ import annotations

from flags.breaker_state import BreakerDocument, BreakerTransition, WindowTotals


class InMemoryBreakerBackend:
    def __init__(self, *, retention_seconds: int = 7_200) -> None:
        """``retention_seconds``: buckets older than this (relative to the newest outcome) are dropped; as
        the stores keep them, the longest window settings allow (7,200 s)."""
        self._document: BreakerDocument | None = None
        self._buckets: dict[int, list[int]] = {}  # epoch second → [calls, failures, slow]
        self._retention = retention_seconds

    async def breaker_load(self) -> BreakerDocument | None:
        if self._document is None:
            return None
        return BreakerDocument.from_dict(self._document.to_dict())

    async def breaker_swap(
        self, expected_version: int | None, new: BreakerDocument, transition: BreakerTransition | None = None
    ) -> bool:
        """No audit log here (nothing to audit into); the window clear happens with the swap."""
        current = None if self._document is None else self._document.version
        if current != expected_version:
            return False
        self._document = BreakerDocument.from_dict(new.to_dict())
        if transition is not None and transition.clear_window:
            self._buckets.clear()
        return True

    async def breaker_add_outcome(self, second: int, *, failed: bool, slow: bool) -> None:
        if second not in self._buckets and len(self._buckets) >= self._retention:
            oldest_kept = second - self._retention
            for old in [s for s in self._buckets if s < oldest_kept]:
                del self._buckets[old]
        counts = self._buckets.setdefault(second, [0, 0, 0])
        counts[0] += 1
        counts[1] += int(failed)
        counts[2] += int(slow)

    async def breaker_window(self, first_second: int, last_second: int) -> WindowTotals:
        calls = failures = slow = 0
        if last_second - first_second < len(self._buckets):
            counts = [self._buckets.get(s) for s in range(first_second, last_second + 1)]
        else:
            counts = [v for s, v in self._buckets.items() if first_second <= s <= last_second]
        for bucket in counts:
            if bucket is not None:
                calls += bucket[0]
                failures += bucket[1]
                slow += bucket[2]
        return WindowTotals(calls=calls, failures=failures, slow=slow)

    async def breaker_clear_window(self) -> None:
        self._buckets.clear()
