"""Latency samples as a DDSketch plus exact Prometheus bucket counts: both merge by addition.

A sketch is mergeable, so the sketches of two replicas (or two time windows) add up to exactly the sketch of all
their samples; percentiles are never averaged. The bucket counts line up with
:data:`router.observability.LATENCY_BUCKETS` (``voice_router_turn_latency_seconds``).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Collection, Mapping
from typing import Any

from ddsketch import DDSketch

from router.observability import LATENCY_BUCKETS

RELATIVE_ACCURACY = 0.01
CDF_POINTS = 50


class LatencySketch:
    """Milliseconds in a DDSketch plus exact Prometheus bucket counts; both merge by addition."""

    def __init__(self) -> None:
        self._sketch = DDSketch(relative_accuracy=RELATIVE_ACCURACY)
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # per bucket (not cumulative); last = +Inf

    @property
    def count(self) -> int:
        return int(self._sketch.count)

    def add(self, milliseconds: float) -> None:
        value = max(0.0, float(milliseconds))
        self._sketch.add(value)
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, value / 1000.0)] += 1

    @classmethod
    def of_segments(
        cls, segments: Mapping[str, LatencySketch], exclude: Collection[str] = ()
    ) -> LatencySketch:
        """One sketch of every segment's samples (but those of the segments in ``exclude``)."""
        merged = cls()
        for segment, sketch in segments.items():
            if segment not in exclude:
                merged.merge(sketch)
        return merged

    def merge(self, other: LatencySketch) -> None:
        if other.count:
            self._sketch.merge(other._sketch)
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]

    def quantile(self, q: float) -> float | None:
        if not self.count:
            return None
        value = self._sketch.get_quantile_value(q)
        if value is None:
            return None
        # The sketch answers within 1 % of the true value, which can fall just outside the observed range.
        return min(max(float(value), float(self._sketch._min)), float(self._sketch._max))

    def summary(self) -> dict[str, Any]:
        count = self.count
        cumulative = 0
        prometheus: dict[str, int] = {}
        for bound, bucket_count in zip((*LATENCY_BUCKETS, math.inf), self.buckets, strict=True):
            cumulative += bucket_count
            prometheus["+Inf" if math.isinf(bound) else f"{bound:g}"] = cumulative
        return {
            "count": count,
            "p50": self.quantile(0.50),
            "p90": self.quantile(0.90),
            "p95": self.quantile(0.95),
            "p99": self.quantile(0.99),
            "mean": (float(self._sketch.sum) / count) if count else None,
            "min": float(self._sketch._min) if count else None,
            "max": float(self._sketch._max) if count else None,
            "buckets": prometheus,  # cumulative, `le` in seconds, like the Prometheus histogram
        }

    def cdf(self, points: int = CDF_POINTS) -> list[tuple[float, float]]:
        """(milliseconds, fraction of samples at or below) for plotting."""
        if not self.count:
            return []
        out: list[tuple[float, float]] = []
        for index in range(points + 1):
            q = index / points
            value = self.quantile(q)
            if value is not None:
                out.append((round(value, 3), q))
        return out

    # Serialisation: the sketch's bins (DDSketch keys → counts), so a report can be merged later. ----------
    def to_dict(self) -> dict[str, Any]:
        sketch = self._sketch
        store = sketch._store
        bins = {str(store.offset + index): count for index, count in enumerate(store.bins) if count}
        return {
            "relative_accuracy": RELATIVE_ACCURACY,
            "bins": bins,
            "zero_count": float(sketch._zero_count),
            "count": float(sketch._count),
            "sum": float(sketch._sum),
            "min": float(sketch._min) if sketch._count else None,
            "max": float(sketch._max) if sketch._count else None,
            "buckets": list(self.buckets),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencySketch:
        out = cls()
        sketch = out._sketch
        for key, count in data.get("bins", {}).items():
            sketch._store.add(int(key), float(count))
        sketch._zero_count = float(data.get("zero_count", 0.0))
        sketch._count = float(data.get("count", 0.0))
        sketch._sum = float(data.get("sum", 0.0))
        if data.get("min") is not None:
            sketch._min = float(data["min"])
            sketch._max = float(data["max"])
        buckets = list(data.get("buckets", []))
        if len(buckets) == len(out.buckets):
            out.buckets = [int(b) for b in buckets]
        return out
