"""The comparison as one self-contained HTML page: tables plus each latency distribution as a CDF per
pipeline, drawn as inline SVG (no scripts, fonts or stylesheets fetched from anywhere)."""

from __future__ import annotations

import html
import math
import time

from router.comparison import (
    SEGMENTS,
    SERVER_ANCHORS_NOTE,
    Comparison,
    LatencySketch,
    failures_text,
    window_text,
)
from router.report_slices import DIMENSION_TITLES, SLICE_DIMENSIONS, SLICE_LATENCY_EXCLUDE, slice_rows

COLORS = {"legacy": "#d9480f", "realtime": "#1c7ed6"}
WIDTH, HEIGHT, PAD = 640, 300, 48


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def _cdf_svg(title: str, curves: dict[str, LatencySketch]) -> str:
    curves = {name: sketch for name, sketch in curves.items() if sketch.count}
    if not curves:
        return ""
    top = max(sketch.quantile(0.99) or 0.0 for sketch in curves.values())
    top = max(top * 1.1, 1.0)
    step = 10 ** math.floor(math.log10(top))
    ticks = [step * k for k in range(0, int(top // step) + 1)]
    if len(ticks) > 8:
        ticks = ticks[:: math.ceil(len(ticks) / 8)]

    def x(ms: float) -> float:
        return PAD + (WIDTH - 2 * PAD) * min(ms, top) / top

    def y(fraction: float) -> float:
        return HEIGHT - PAD + (2 * PAD - HEIGHT) * fraction

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{html.escape(title)}">',
        f'<text x="{PAD}" y="20" font-size="14" font-weight="bold">{html.escape(title)}</text>',
        f'<line x1="{PAD}" y1="{y(0)}" x2="{WIDTH - PAD}" y2="{y(0)}" stroke="#333"/>',
        f'<line x1="{PAD}" y1="{y(0)}" x2="{PAD}" y2="{y(1)}" stroke="#333"/>',
    ]
    for tick in ticks:
        parts.append(
            f'<line x1="{x(tick):.1f}" y1="{y(0)}" x2="{x(tick):.1f}" y2="{y(1)}" stroke="#eee"/>'
            f'<text x="{x(tick):.1f}" y="{y(0) + 16}" font-size="11" text-anchor="middle">{tick:g}</text>'
        )
    for fraction in (0.5, 0.9, 0.95, 0.99):
        parts.append(
            f'<line x1="{PAD}" y1="{y(fraction):.1f}" x2="{WIDTH - PAD}" y2="{y(fraction):.1f}" '
            f'stroke="#ccc" stroke-dasharray="3,3"/>'
            f'<text x="{PAD - 4}" y="{y(fraction) + 4:.1f}" font-size="10" text-anchor="end">'
            f"p{round(fraction * 100)}</text>"
        )
    parts.append(
        f'<text x="{WIDTH / 2}" y="{HEIGHT - 8}" font-size="11" text-anchor="middle">milliseconds</text>'
    )
    for index, (name, sketch) in enumerate(sorted(curves.items())):
        color = COLORS.get(name, "#555")
        points = " ".join(f"{x(ms):.1f},{y(q):.1f}" for ms, q in sketch.cdf(100))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>')
        parts.append(
            f'<text x="{WIDTH - PAD - 120}" y="{y(0.3) + 16 * index:.1f}" font-size="12" fill="{color}">'
            f"{html.escape(name)} (n={sketch.count})</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _table(c: Comparison, group: str, metric: str) -> str:
    rows = []
    for name in sorted(c.arms):
        arm = c.arms[name]
        segments = (arm.stages if group == "stages" else arm.caller).get(metric, {})
        for segment in (*SEGMENTS, "all"):
            sketch = arm.overall(group, metric) if segment == "all" else segments.get(segment)
            if sketch is None or not sketch.count:
                continue
            s = sketch.summary()
            rows.append(
                f"<tr><td>{html.escape(name)}</td><td>{segment}</td><td>{s['count']}</td>"
                f"<td>{_fmt(s['p50'])}</td><td>{_fmt(s['p90'])}</td><td>{_fmt(s['p95'])}</td>"
                f"<td>{_fmt(s['p99'])}</td><td>{_fmt(s['max'])}</td></tr>"
            )
    if not rows:
        return ""
    return (
        f"<h3>{html.escape(metric)}</h3><table><tr><th>pipeline</th><th>segment</th><th>n</th><th>p50</th>"
        "<th>p90</th><th>p95</th><th>p99</th><th>max</th></tr>" + "".join(rows) + "</table>"
    )


def _slice_tables(c: Comparison) -> str:
    """One table per slice dimension: outcomes, and p50/p95 of the caller turns' latencies."""
    slices = {name: arm.slices for name, arm in c.arms.items()}
    parts: list[str] = []
    for dimension in SLICE_DIMENSIONS:
        rows = []
        for pipeline, value, stats in slice_rows(slices, dimension):
            cells = [
                html.escape(pipeline),
                html.escape(value),
                str(stats.calls),
                str(stats.turns),
                f"{100 * stats.error_rate:.1f}%",
                f"{100 * stats.fallback_rate:.1f}%",
            ]
            for metric in ("response_ms", "heard_ms", "caller_latency_ms"):
                sketch = stats.overall(metric, exclude=SLICE_LATENCY_EXCLUDE)
                cells += [str(sketch.count), _fmt(sketch.quantile(0.5)), _fmt(sketch.quantile(0.95))]
            rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
        if not rows:
            continue
        parts.append(
            f"<h3>Slices {html.escape(DIMENSION_TITLES[dimension])}</h3><table><tr><th>pipeline</th>"
            "<th>slice</th><th>calls</th><th>turns</th><th>turn errors</th><th>fallback rate</th>"
            "<th>response_ms n</th><th>p50</th><th>p95</th><th>heard_ms n</th><th>p50</th><th>p95</th>"
            "<th>caller latency n</th><th>p50</th><th>p95</th></tr>" + "".join(rows) + "</table>"
        )
    if not parts:
        return ""
    return (
        "<h2>Slices</h2><p>Latencies of caller turns (1+), in milliseconds. A turn counts in the arm that "
        "served it and in the slices of its call's routing; <em>no_call_record</em>: a call that started "
        "before the window (or caller-side turns compared without their calls, as in the demo); "
        "<em>unknown</em>: not recorded on the call.</p>" + "".join(parts)
    )


def render_html(c: Comparison) -> str:
    """The whole report page."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(c.generated_at))
    summary_rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{arm.calls}</td><td>{arm.completed_calls}</td>"
        f"<td>{arm.turns}</td><td>{100 * arm.error_rate:.1f}%</td><td>{arm.moved_to_legacy}</td>"
        f"<td>{100 * arm.fallback_rate:.1f}%</td><td>{arm.barge_ins}</td><td>{arm.caller_barge_ins}</td>"
        f"<td>${arm.cost_per_call_usd:.4f}</td><td>{arm.reconnects}</td><td>{arm.renewals}</td>"
        f"<td>{arm.moves_ok}</td><td>{arm.moves_failed}</td>"
        f"<td>{arm.gap_turns} ({arm.playback_gaps} gaps, {arm.playback_gap_ms / 1000:.1f} s)</td>"
        f"<td>{arm.false_interrupts} of {arm.judged_barge_ins}</td><td>{arm.silence_hang_ups}</td></tr>"
        for name, arm in sorted(c.arms.items())
    )
    failures = "".join(
        f"<p>Voice Live failures on {html.escape(name)} calls (close code or HTTP status): "
        f"{html.escape(text)}</p>"
        for name, arm in sorted(c.arms.items())
        if (text := failures_text(arm))
    )
    charts: list[str] = []
    tables: list[str] = []
    metrics = [("caller", "caller_latency_ms"), ("caller", "caller_silence_ms")]
    metrics += [("stages", "response_ms"), ("stages", "heard_ms")]
    others = sorted({m for arm in c.arms.values() for m in arm.stages} - {"response_ms", "heard_ms"})
    metrics += [("stages", m) for m in others]
    titles = {
        "caller_latency_ms": "Caller-side: end of speech → first bot audio heard",
        "caller_silence_ms": "Caller-side: longest dead air per turn",
        "response_ms": "Server-side: end of speech → first reply audio sent",
        "heard_ms": "Server-side: end of speech → first reply audio played",
    }
    for group, metric in metrics:
        if metric in titles:
            # The greeting has no "end of speech" to measure from (legacy answers it from the phrase
            # cache in milliseconds), so mixing it in would flatter legacy: the curves are caller turns.
            curves = {name: arm.overall(group, metric, exclude=("greeting",)) for name, arm in c.arms.items()}
            charts.append(_cdf_svg(f"{titles[metric]} (CDF, caller turns 1+)", curves))
        tables.append(_table(c, group, metric))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>voice-router: legacy vs realtime</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
td:first-child, th:first-child, td:nth-child(2) {{ text-align: left; }}
svg {{ display: block; margin: 1em 0; }}
</style></head><body>
<h1>Legacy vs realtime</h1>
<p>Window: {html.escape(window_text(c))} (calls that started in it); generated {html.escape(when)}. Percentiles from DDSketches (relative accuracy
{c.relative_accuracy:.0%}); segments: greeting = turn 0, first = turn 1, later = turns 2+.
Cost is an estimate from list prices (router/prices.yaml).</p>
<p>{html.escape(c.population.describe(sum(arm.calls for arm in c.arms.values())))}</p>
<p>{html.escape(SERVER_ANCHORS_NOTE)}</p>
{failures}
<table><tr><th>pipeline</th><th>calls</th><th>completed</th><th>turns</th><th>turn errors</th>
<th>moved to legacy</th><th>fallback rate</th><th>barge-ins (server)</th><th>barge-ins (caller side)</th>
<th>cost / call</th><th>session reconnects</th><th>session renewals</th><th>moves to legacy</th>
<th>moves to legacy failed</th><th>turns with a mid-reply silence &ge; 100 ms</th>
<th>false barge-ins (no words) of those transcribed</th>
<th>ended by the agent after the caller went quiet</th></tr>{summary_rows}</table>
{"".join(charts)}
{"".join(tables)}
{_slice_tables(c)}
</body></html>
"""
