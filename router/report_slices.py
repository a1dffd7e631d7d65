"""The report's slices: each arm's calls and turns split by how the call was routed.

A difference between the arms can come from who was routed where rather than from the pipelines: an allow
list of test numbers, the calls sent to legacy while the breaker was open, the callers of one bucket range.
Each slice holds the same counts and sketches as an arm, so two reports' slices merge by addition exactly.

Dimensions, read from the call record the router wrote when it decided (``router.records.CallRecord``):

* ``reason``        — the decision reason (``rollout_in``, ``rollout_out``, ``allow_list``, ``breaker_open`` …)
* ``breaker_state`` — the breaker state the router read when deciding (``closed``, ``open``, ``half_open`` …)
* ``bucket``        — the sticky bucket (0..9999 basis points) in tenths: ``0-10%`` holds the callers who are
  realtime at a 10 % rollout

and one read from each turn record, so it counts turns but no calls (a call can have turns of both kinds):

* ``tools``         — ``tool_call`` for a turn that ran an agent tool before answering, ``no_tool`` otherwise
  (pain-points D.4 item 4: a tool's own time is in the first kind's latency, not in the pipeline's)

Values that are not a routing fact: ``unknown`` (the record lacks the field: written before the router recorded
it, or the breaker state could not be read), ``none`` (no bucket: the call was not routed by the percentage)
and ``no_call_record`` (a turn or caller measurement whose call record the report did not read: the call started
before the window, or the measurements were compared without the calls). A turn counts in the arm that served
it and the slices of the call it belongs to, so a moved call's legacy turns show in legacy's ``rollout_in`` slice.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from flags.bucketing import BUCKETS
from router.latency_sketch import LatencySketch

DIMENSIONS = ("reason", "breaker_state", "bucket")
TURN_DIMENSIONS = ("tools",)
SLICE_DIMENSIONS = DIMENSIONS + TURN_DIMENSIONS  # in display order
# The latencies kept per slice: the server's reply latency, the server's "heard" and the caller's.
SLICE_METRICS = ("response_ms", "heard_ms", "caller_latency_ms")
UNKNOWN = "unknown"
NO_BUCKET = "none"
NO_CALL_RECORD = "no_call_record"
BUCKET_SLICE_WIDTH = BUCKETS // 10  # deciles of the bucket space


def bucket_label(bucket: object) -> str:
    """``0-10%`` … ``90-100%`` for a bucket, ``none`` for a call not routed by its bucket."""
    if not isinstance(bucket, int) or isinstance(bucket, bool) or not 0 <= bucket < BUCKETS:
        return NO_BUCKET
    low = bucket // BUCKET_SLICE_WIDTH * BUCKET_SLICE_WIDTH
    return f"{100 * low // BUCKETS}-{100 * (low + BUCKET_SLICE_WIDTH) // BUCKETS}%"


def slice_keys(call: Mapping[str, Any] | None) -> dict[str, str]:
    """The slice of each dimension that a call (None: a call outside the window) belongs to."""
    if call is None:
        return dict.fromkeys(DIMENSIONS, NO_CALL_RECORD)
    return {
        "reason": str(call.get("reason") or UNKNOWN),
        "breaker_state": str(call.get("breaker_state") or UNKNOWN),
        "bucket": bucket_label(call.get("bucket")),
    }


def turn_slice_keys(turn: Mapping[str, Any]) -> dict[str, str]:
    """The slice of each turn-level dimension that a turn record belongs to."""
    return {"tools": "tool_call" if turn.get("tool_calls") else "no_tool"}


def value_order(value: str) -> tuple[int, float, str]:
    """Bucket ranges in numeric order, then named values, then the placeholders."""
    head = value.split("-", 1)[0]
    if head.isdigit():
        return (0, float(head), value)
    if value in (NO_BUCKET, UNKNOWN, NO_CALL_RECORD):
        return (2, 0.0, value)
    return (1, 0.0, value)


_COUNTS = ("calls", "completed_calls", "turns", "turn_errors", "moved_to_legacy")


@dataclass
class SliceStats:
    """One slice of one arm: its outcome counts and its latency sketches (metric → segment → sketch)."""

    calls: int = 0
    completed_calls: int = 0
    turns: int = 0
    turn_errors: int = 0
    moved_to_legacy: int = 0
    latency: dict[str, dict[str, LatencySketch]] = field(default_factory=dict)

    def sketch(self, metric: str, segment: str) -> LatencySketch:
        return self.latency.setdefault(metric, {}).setdefault(segment, LatencySketch())

    def overall(self, metric: str, *, exclude: Collection[str] = ()) -> LatencySketch:
        return LatencySketch.of_segments(self.latency.get(metric, {}), exclude)

    @property
    def error_rate(self) -> float:
        return self.turn_errors / self.turns if self.turns else 0.0

    @property
    def fallback_rate(self) -> float:
        return self.moved_to_legacy / self.calls if self.calls else 0.0

    def merge(self, other: SliceStats) -> None:
        for name in _COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for metric, segments in other.latency.items():
            for segment, sketch in segments.items():
                self.sketch(metric, segment).merge(sketch)

    def to_dict(self) -> dict[str, Any]:
        latency: dict[str, Any] = {}
        for metric, segments in self.latency.items():
            entry: dict[str, Any] = {segment: {"sketch": s.to_dict()} for segment, s in segments.items()}
            # Readable without the sketches: the caller turns (1+), as the report shows them.
            entry["turns_1plus"] = self.overall(metric, exclude=("greeting",)).summary()
            latency[metric] = entry
        return {
            **{name: getattr(self, name) for name in _COUNTS},
            "error_rate": self.error_rate,
            "fallback_rate": self.fallback_rate,
            "latency": latency,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SliceStats:
        out = cls()
        for name in _COUNTS:
            setattr(out, name, int(data.get(name, 0)))
        for metric, segments in (data.get("latency") or {}).items():
            for segment, entry in segments.items():
                if isinstance(entry, dict) and "sketch" in entry:
                    out.latency.setdefault(metric, {})[segment] = LatencySketch.from_dict(entry["sketch"])
        return out


Slices = dict[str, dict[str, SliceStats]]  # dimension → value → stats


def merge_slices(target: Slices, other: Slices) -> None:
    for dimension, values in other.items():
        for value, stats in values.items():
            target.setdefault(dimension, {}).setdefault(value, SliceStats()).merge(stats)


def slices_to_dict(slices: Slices) -> dict[str, Any]:
    return {
        dimension: {value: slices[dimension][value].to_dict() for value in sorted(values, key=value_order)}
        for dimension, values in slices.items()
    }


def slices_from_dict(data: Mapping[str, Any]) -> Slices:
    return {
        dimension: {value: SliceStats.from_dict(stats) for value, stats in values.items()}
        for dimension, values in data.items()
    }


DIMENSION_TITLES = {
    "reason": "by decision reason",
    "breaker_state": "by breaker state at routing",
    "bucket": "by rollout bucket (0-10% = the callers realtime at a 10 % rollout)",
    "tools": "by tool use (turns only: a call can have both kinds)",
}
# The greeting has no caller speech to measure from: slice latencies are the caller turns, as the CDFs are.
SLICE_LATENCY_EXCLUDE = ("greeting",)


def slice_rows(slices_by_arm: Mapping[str, Slices], dimension: str) -> list[tuple[str, str, SliceStats]]:
    """(pipeline, value, stats) of one dimension, in display order, leaving out empty slices."""
    rows: list[tuple[str, str, SliceStats]] = []
    for pipeline in sorted(slices_by_arm):
        values = slices_by_arm[pipeline].get(dimension, {})
        for value in sorted(values, key=value_order):
            stats = values[value]
            if stats.calls or stats.turns or stats.latency:
                rows.append((pipeline, value, stats))
    return rows
