"""The same-sticky-population filter: keep only the calls of the buckets that both arms served in the window.

Sticky bucketing sends bucket ``b`` to realtime iff ``b < percent`` (in basis points), so at one percent the two
arms hold disjoint bucket ranges: ``[0, P)`` and ``[P, 10000)``. Buckets are uniform hashes, so the two are
samples of the same callers only statistically, and the calls routed by something other than the bucket (allow
and deny lists, the kill switch, an open breaker) are not samples at all. Across a ramp from ``P1`` to ``P2`` the
buckets ``[P1, P2)`` were served by legacy before it and by realtime after it: the same callers' buckets on both
arms. That range, ``[lowest percent, highest percent)`` over the window's calls routed by their bucket, is what
this filter keeps; calls without a bucket are always dropped. At a percent held through the window the range is
empty, and the report says so rather than pretend: compare the unfiltered report's ``rollout_in`` and
``rollout_out`` slices then.

Two other definitions were set aside: the callers seen on both arms (with ``From`` stickiness, only repeat callers
across a ramp: a handful, and biased towards frequent callers) and the buckets seen on both arms (with 10,000
buckets, the same thing), and the bucket range each arm's calls spanned (a call sent to legacy because the worker
was full, ``realtime_full``, keeps its realtime bucket and would stretch legacy's range over realtime's).
The range comes from the percent on each call record (the rollout in force when it was routed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ALL = "all"
SAME_BUCKETS = "same_buckets"
MIXED = "mixed"  # two reports with different filters merged


@dataclass
class Population:
    """Which calls a report covers, and what the filter dropped to get there."""

    name: str = ALL
    ranges: list[tuple[int, int]] = field(default_factory=list)  # kept buckets [low, high), basis points
    dropped_calls: int = 0
    dropped_turns: int = 0
    dropped_caller_turns: int = 0

    def merge(self, other: Population) -> None:
        if self.name != other.name:
            self.name = MIXED
        self.ranges = sorted(set(self.ranges) | set(other.ranges))
        self.dropped_calls += other.dropped_calls
        self.dropped_turns += other.dropped_turns
        self.dropped_caller_turns += other.dropped_caller_turns

    def describe(self, kept_calls: int) -> str:
        """One line for the report's header."""
        if self.name == ALL:
            return "population: all calls"
        total = kept_calls + self.dropped_calls
        dropped = (
            f"dropped {self.dropped_calls} of {total} calls, {self.dropped_turns} turns, "
            f"{self.dropped_caller_turns} caller-side turns"
        )
        if self.name == MIXED and not self.ranges:
            return f"population: mixed filters (reports merged from different filters); {dropped}"
        if not self.ranges:
            return (
                f"population: same sticky buckets — none: no bucket was served by both arms in the window (the "
                f"rollout percent did not change); {dropped}"
            )
        spans = ", ".join(f"{low / 100:g}-{high / 100:g}%" for low, high in self.ranges)
        label = "same sticky buckets" if self.name == SAME_BUCKETS else "mixed filters"
        return f"population: {label} {spans} (served by both arms in the window); {dropped}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "filter": self.name,
            "ranges": [list(r) for r in self.ranges],
            "dropped_calls": self.dropped_calls,
            "dropped_turns": self.dropped_turns,
            "dropped_caller_turns": self.dropped_caller_turns,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Population:
        if not data:
            return cls()
        return cls(
            name=str(data.get("filter", ALL)),
            ranges=[(int(low), int(high)) for low, high in data.get("ranges", [])],
            dropped_calls=int(data.get("dropped_calls", 0)),
            dropped_turns=int(data.get("dropped_turns", 0)),
            dropped_caller_turns=int(data.get("dropped_caller_turns", 0)),
        )


def _bucket(call: Mapping[str, Any]) -> int | None:
    value = call.get("bucket")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def shared_bucket_range(calls: Iterable[Mapping[str, Any]]) -> tuple[int, int] | None:
    """``[lowest, highest)`` percent (basis points) in force over the calls routed by their bucket, or None
    when that range is empty (one percent all window, or no such call)."""
    percents = {round(float(call.get("percent") or 0.0) * 100) for call in calls if _bucket(call) is not None}
    if len(percents) < 2:
        return None
    return min(percents), max(percents)


def same_bucket_calls(calls: list[Mapping[str, Any]]) -> tuple[set[str], Population]:
    """The CallSids the filter keeps, and its population (drop counts of calls only; the caller adds the
    turns it drops)."""
    shared = shared_bucket_range(calls)
    kept: set[str] = set()
    dropped = 0
    for call in calls:
        if not call.get("pipeline"):
            continue  # not a routed call: the report skips it anyway
        bucket = _bucket(call)
        if shared is not None and bucket is not None and shared[0] <= bucket < shared[1]:
            kept.add(str(call.get("call_sid")))
        else:
            dropped += 1
    ranges = [shared] if shared is not None else []
    return kept, Population(name=SAME_BUCKETS, ranges=ranges, dropped_calls=dropped)
