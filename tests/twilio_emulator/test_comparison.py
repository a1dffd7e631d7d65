"""The pipeline comparison: sketch accuracy and exact merging, record aggregation, cost, rendering."""

from __future__ import annotations

import bisect
import math
import random

import pytest

from router.comparison import (
    Comparison,
    LatencySketch,
    Prices,
    build_comparison,
    compare_records,
    read_all_turns,
    render_table,
)
from router.observability import LATENCY_BUCKETS
from router.report_html import render_html
from router.store.factory import open_store

T0 = 1_700_000_000.0
PRICES = Prices.from_mapping(
    {
        "voicelive": {"audio_input_per_mtok": 32, "audio_output_per_mtok": 64, "text_input_per_mtok": 4},
        "openai": {"input_per_mtok": 0.15, "output_per_mtok": 0.6},
        "azure_speech": {"tts_per_mchar": 15},
        "twilio": {"speech_recognition_per_request": 0.02},
    }
)


def outcome_columns(comparison: Comparison, pipeline: str) -> dict[str, str]:
    """One arm's row of the text report's outcome table, by column heading."""
    lines = render_table(comparison).splitlines()
    header = next(line for line in lines if line.startswith("pipeline "))
    row = next(line for line in lines if line.startswith(f"{pipeline} "))
    return dict(zip(header.split(), row.split(), strict=True))


def samples(n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.lognormvariate(math.log(900), 0.6) for _ in range(n)]


def exact_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


def test_sketch_percentiles_are_within_relative_accuracy_of_exact():
    values = samples(5000, seed=1)
    sketch = LatencySketch()
    for v in values:
        sketch.add(v)
    for q in (0.5, 0.9, 0.95, 0.99):
        exact = exact_quantile(values, q)
        estimate = sketch.quantile(q)
        assert estimate is not None
        assert abs(estimate - exact) <= 0.01 * exact + 1e-9, (q, estimate, exact)


def test_two_replicas_merge_into_exactly_the_sketch_of_the_union():
    a, b = samples(3000, seed=2), samples(1700, seed=3)
    replica_a, replica_b, union = LatencySketch(), LatencySketch(), LatencySketch()
    for v in a:
        replica_a.add(v)
        union.add(v)
    for v in b:
        replica_b.add(v)
        union.add(v)
    # Through the wire form, as two replicas' reports would travel.
    merged = LatencySketch.from_dict(replica_a.to_dict())
    merged.merge(LatencySketch.from_dict(replica_b.to_dict()))
    assert merged.count == union.count == 4700
    for q in (0.0, 0.1, 0.5, 0.9, 0.95, 0.99, 1.0):
        assert merged.quantile(q) == union.quantile(q)
    assert merged.buckets == union.buckets
    # Bucket counts are exact, on the Prometheus boundaries.
    expected = [0] * (len(LATENCY_BUCKETS) + 1)
    for v in a + b:
        expected[bisect.bisect_left(LATENCY_BUCKETS, v / 1000.0)] += 1
    assert merged.buckets == expected
    assert merged.summary()["buckets"]["+Inf"] == 4700


def records(prefix: str, n_calls: int, seed: int):
    rng = random.Random(seed)
    calls, turns = [], []
    for i in range(n_calls):
        pipeline = "realtime" if i % 2 else "legacy"
        sid = f"CA{prefix}{i:04d}"
        moved = pipeline == "realtime" and i % 6 == 1
        calls.append(
            {
                "call_sid": sid,
                "pipeline": pipeline,
                "status": "completed",
                "moved_to_legacy": moved,
                "started_at": 1000.0 + i,
            }
        )
        for turn in range(4):
            base = 350 if pipeline == "realtime" else 2100
            usage = (
                {"input_audio_tokens": 100, "output_audio_tokens": 200, "input_text_tokens": 50}
                if pipeline == "realtime"
                else {"prompt_tokens": 300, "completion_tokens": 40, "tts_chars": 80}
            )
            turns.append(
                {
                    "call_sid": sid,
                    "pipeline": pipeline,
                    "turn": turn,
                    "at": 1000.0 + i + turn,
                    "response_ms": base * rng.uniform(0.8, 1.5),
                    "heard_ms": None,
                    "stages": {"llm_first_token": 300.0} if pipeline == "legacy" else {"first_audio": 280.0},
                    "user_text": "hi" if turn else "",
                    "interrupted": turn == 2 and pipeline == "realtime",
                    "error": "timeout" if (pipeline == "legacy" and turn == 3 and i % 4 == 0) else None,
                    "error_stage": "llm" if (pipeline == "legacy" and turn == 3 and i % 4 == 0) else None,
                    "usage": usage,
                }
            )
    return calls, turns


def test_compare_records_counts_rates_segments_and_cost():
    calls, turns = records("a", 12, seed=4)
    caller = [
        {
            "call_sid": "CAa0001",
            "pipeline": "realtime",
            "turn_pipeline": "realtime",
            "turn": 1,
            "latency_ms": 420.0,
            "silence_ms": 420.0,
            "barge_in": False,
            "error": None,
        },
        {
            "call_sid": "CAa0001",
            "pipeline": "realtime",
            "turn_pipeline": "legacy",
            "turn": 2,
            "latency_ms": 2600.0,
            "silence_ms": 2600.0,
            "barge_in": True,
            "error": None,
        },
        {
            "call_sid": "CAa0000",
            "pipeline": "legacy",
            "turn_pipeline": "legacy",
            "turn": 3,
            "latency_ms": None,
            "silence_ms": 15000.0,
            "barge_in": False,
            "error": "no_reply",
        },
    ]
    c = compare_records(calls, turns, prices=PRICES, caller_measurements=caller, since=None)
    legacy, realtime = c.arms["legacy"], c.arms["realtime"]
    assert (legacy.calls, realtime.calls) == (6, 6)
    assert (legacy.turns, realtime.turns) == (24, 24)
    assert legacy.turn_errors == 3 and legacy.errors_by_stage == {"llm": 3}
    assert legacy.error_rate == pytest.approx(3 / 24)
    assert realtime.moved_to_legacy == 2 and realtime.fallback_rate == pytest.approx(2 / 6)
    assert realtime.barge_ins == 6
    # Segments: greeting = turn 0, first = turn 1, later = 2+.
    assert realtime.stages["response_ms"]["greeting"].count == 6
    assert realtime.stages["response_ms"]["first"].count == 6
    assert realtime.stages["response_ms"]["later"].count == 12
    assert legacy.stages["llm_first_token"]["later"].count == 12
    # Caller-side measurements count for the pipeline that served the turn.
    assert realtime.caller["caller_latency_ms"]["first"].count == 1
    assert legacy.caller["caller_latency_ms"]["later"].count == 1
    assert legacy.caller_no_reply == 1 and legacy.caller_barge_ins == 1
    # Cost: realtime per turn = (100*32 + 200*64 + 50*4) / 1e6; legacy per turn = LLM + TTS (+ $0.02 per gather).
    realtime_turn = (100 * 32 + 200 * 64 + 50 * 4) / 1e6
    assert realtime.cost_per_call_usd == pytest.approx(4 * realtime_turn)
    legacy_turn = (300 * 0.15 + 40 * 0.6) / 1e6 + 80 * 15 / 1e6
    assert legacy.cost_per_call_usd == pytest.approx(4 * legacy_turn + 3 * 0.02)


def test_a_turn_recognised_by_azure_stt_pays_for_its_audio_not_for_twilio_recognition():
    """A <Record>ed turn (STT mode azure) was charged Twilio's per-<Gather> recognition and no STT at all."""
    calls = [{"call_sid": "CA1", "pipeline": "legacy", "reason": "rollout_out", "started_at": 1000.0}]
    turn = {"call_sid": "CA1", "pipeline": "legacy", "turn": 1, "at": 1001.0, "user_text": "hi"}
    prices = Prices.from_mapping(
        {"azure_speech": {"stt_per_hour": 1.0}, "twilio": {"speech_recognition_per_request": 0.02}}
    )
    azure = compare_records(calls, [{**turn, "usage": {"stt_audio_ms": 1_800_000}}], prices=prices)
    gathered = compare_records(calls, [{**turn, "usage": {}}], prices=prices)
    assert "twilio_speech_recognition" not in azure.arms["legacy"].cost_usd
    assert azure.arms["legacy"].cost_usd["stt"] == pytest.approx(0.5)  # half an hour of audio at $1/h
    assert gathered.arms["legacy"].cost_usd["twilio_speech_recognition"] == pytest.approx(0.02)


def test_merging_two_replica_reports_equals_the_report_of_all_records():
    calls_a, turns_a = records("a", 10, seed=5)
    calls_b, turns_b = records("b", 14, seed=6)
    a = compare_records(calls_a, turns_a, prices=PRICES, now=1.0)
    b = compare_records(calls_b, turns_b, prices=PRICES, now=2.0)
    union = compare_records(calls_a + calls_b, turns_a + turns_b, prices=PRICES, now=2.0)
    merged = a.merge(type(a).from_dict(b.to_dict()))
    assert render_table(merged) == render_table(union)
    for name in ("legacy", "realtime"):
        left = merged.arms[name].overall("stages", "response_ms")
        right = union.arms[name].overall("stages", "response_ms")
        assert [left.quantile(q) for q in (0.5, 0.9, 0.99)] == [right.quantile(q) for q in (0.5, 0.9, 0.99)]


def test_merging_a_windowed_report_with_an_all_time_one_covers_all_time():
    calls, turns = records("w", 4, seed=7)
    windowed = compare_records(calls, turns, prices=PRICES, since=500.0)
    all_time = compare_records(calls, turns, prices=PRICES)
    assert windowed.merge(all_time).since is None
    assert all_time.merge(windowed).since is None
    assert windowed.merge(compare_records(calls, turns, prices=PRICES, since=400.0)).since == 400.0


def test_round_trip_and_rendering():
    calls, turns = records("c", 8, seed=7)
    c = compare_records(calls, turns, prices=PRICES)
    data = c.to_dict()
    again = type(c).from_dict(data)
    assert render_table(again) == render_table(c)
    table = render_table(c)
    assert "legacy" in table and "realtime" in table and "response_ms (ms)" in table
    page = render_html(c)
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page and "<link" not in page and "src=" not in page
    assert page.count("<polyline") >= 2  # one CDF curve per pipeline
    summary = data["arms"]["legacy"]["stages"]["response_ms"]["all"]
    assert summary["count"] == 16 and summary["p50"] <= summary["p90"] <= summary["p99"]
    assert summary["cdf"][0][1] == 0.0 and summary["cdf"][-1][1] == 1.0


async def test_build_comparison_reads_the_store(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    await store.open()
    try:
        calls, turns = records("d", 6, seed=8)
        for call in calls:
            await store.put_call(call)
        for turn in turns:
            await store.append_turn(turn)
        c = await build_comparison(store, since=None, prices=Prices.load())
        assert c.arms["legacy"].calls == 3 and c.arms["realtime"].calls == 3
        assert c.arms["legacy"].turns == 12
        assert c.arms["realtime"].cost_per_call_usd > 0
    finally:
        await store.close()


async def test_build_comparison_reads_every_turn_past_one_store_page(tmp_path):
    """A window with more turns than one list_turns page: every turn is counted once, including the newest
    and runs of equal times across page boundaries (seven turns share one time: more than a page)."""
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    await store.open()
    try:
        times = [1.0, 2.0, 3.0, 3.0, 3.0, 4.0, 5.0, 5.0] + [6.0] * 7 + [7.0, 8.0, 9.0]
        turns = [
            {"call_sid": f"CA{i}", "pipeline": "legacy", "turn": i, "at": T0 + at, "response_ms": 700.0}
            for i, at in enumerate(times)
        ]
        await store.append_turns(turns)
        await store.append_turn({**turns[-1], "turn": 99, "pipeline": "realtime", "error": "session_failed"})
        c = await build_comparison(store, since=T0, prices=Prices.load(), turns_page=5)
        assert (c.arms["legacy"].turns, c.arms["realtime"].turns) == (len(times), 1)
        read = await read_all_turns(store, since=T0, page=5)
        assert [t["turn"] for t in read] == [*range(len(times)), 99]
        assert await read_all_turns(store, since=T0 + 6.0, page=3) == read[8:]
    finally:
        await store.close()


async def test_build_comparison_aggregates_off_the_event_loop(tmp_path, monkeypatch):
    """Aggregating a day of records takes seconds of CPU: it must not run on the loop serving webhooks."""
    import threading

    import router.comparison

    threads = []

    def recording_compare(*args, **kwargs):
        threads.append(threading.current_thread())
        return compare_records(*args, **kwargs)

    monkeypatch.setattr(router.comparison, "compare_records", recording_compare)
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    await store.open()
    try:
        await build_comparison(store, since=None, prices=Prices.load())
    finally:
        await store.close()
    assert threads and threads[0] is not threading.current_thread()

    prices = Prices.load()
    assert prices.voicelive_audio_output_per_mtok > 0 and prices.openai_input_per_mtok > 0
    assert prices.tts_per_mchar > 0


def test_cdf_curves_leave_the_greeting_out():
    calls, turns = records("g", 6, seed=11)
    c = compare_records(calls, turns, prices=PRICES)
    legacy = c.arms["legacy"]
    everything = legacy.overall("stages", "response_ms")
    caller_turns = legacy.overall("stages", "response_ms", exclude=("greeting",))
    greetings = legacy.stages["response_ms"]["greeting"]
    assert greetings.count > 0
    assert caller_turns.count == everything.count - greetings.count
    assert "(CDF, caller turns 1+)" in render_html(c)


def test_only_calls_that_completed_count_as_completed():
    """Twilio's status callback ends busy, failed, no-answer and canceled calls too (each gets ``ended_at``):
    they were counted as completed, hiding failed calls from the completion guardrail."""
    calls = [
        {"call_sid": f"CA{status}", "pipeline": "realtime", "status": status, "ended_at": 1010.0}
        for status in ("completed", "busy", "failed", "no-answer", "canceled")
    ]
    calls.append({"call_sid": "CAlive", "pipeline": "realtime", "status": "in-progress"})
    c = compare_records(calls, [], prices=PRICES)
    assert c.arms["realtime"].calls == 6
    assert c.arms["realtime"].completed_calls == 1


def test_cached_input_tokens_are_not_charged_twice():
    """Voice Live's ``cached_tokens`` are a subset of its text and audio input tokens (input_tokens =
    text + audio). They were charged at the full text/audio price and again at the cached price."""
    from realtime_pipeline.voicelive_events import parse_event

    prices = Prices.from_mapping(
        {
            "voicelive": {
                "text_input_per_mtok": 4,
                "cached_input_per_mtok": 0.4,
                "audio_input_per_mtok": 32,
                "audio_output_per_mtok": 64,
            }
        }
    )
    done = parse_event(
        '{"type": "response.done", "response": {"id": "r", "status": "completed", "usage": {'
        '"total_tokens": 1100, "input_tokens": 1000, "output_tokens": 100,'
        '"input_token_details": {"cached_tokens": 600, "text_tokens": 200, "audio_tokens": 800,'
        '"cached_tokens_details": {"text_tokens": 200, "audio_tokens": 400}},'
        '"output_token_details": {"text_tokens": 0, "audio_tokens": 100}}}}'
    )
    usage = done.usage  # type: ignore[union-attr]
    lines = prices.turn_cost("realtime", usage, gathered=False)
    # 400 uncached audio in, 600 cached (200 text + 400 audio), 100 audio out.
    assert lines["voicelive_tokens"] == pytest.approx((400 * 32 + 600 * 0.4 + 100 * 64) / 1e6)
    # Without the cached split (older API versions) the cached tokens come off the text input first.
    plain = {"input_tokens": 1000, "input_text_tokens": 200, "input_audio_tokens": 800}
    lines = prices.turn_cost("realtime", {**plain, "input_cached_tokens": 300}, gathered=False)
    assert lines["voicelive_tokens"] == pytest.approx((700 * 32 + 300 * 0.4) / 1e6)
    # Only the totals: text = input - audio, cached still inside it.
    lines = prices.turn_cost(
        "realtime",
        {"input_tokens": 1000, "input_audio_tokens": 800, "input_cached_tokens": 150},
        gathered=False,
    )
    assert lines["voicelive_tokens"] == pytest.approx((50 * 4 + 150 * 0.4 + 800 * 32) / 1e6)


async def test_cost_per_call_counts_only_the_turns_of_the_calls_in_the_window(tmp_path):
    """The window selects calls by start and turns by time: the turns of a call that started before the
    window were charged to the window's calls (a ramp's long legacy calls inflated legacy's cost per call),
    and a moved call's legacy turns were charged to legacy when its realtime call record was outside."""
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    await store.open()
    try:
        since = T0
        await store.put_call({"call_sid": "CAold", "pipeline": "legacy", "started_at": since - 300})
        await store.put_call({"call_sid": "CAmoved", "pipeline": "realtime", "started_at": since - 60})
        await store.put_call({"call_sid": "CAnew", "pipeline": "legacy", "started_at": since + 10})
        usage = {"prompt_tokens": 1000, "completion_tokens": 100, "tts_chars": 100}
        turns = [
            {"call_sid": sid, "pipeline": "legacy", "turn": n, "at": since + 20 + n, "usage": usage}
            for sid, count in (("CAold", 5), ("CAmoved", 3), ("CAnew", 2))
            for n in range(1, count + 1)
        ]
        await store.append_turns(turns)
        c = await build_comparison(store, since=since, prices=PRICES)
    finally:
        await store.close()
    per_turn = (1000 * 0.15 + 100 * 0.6) / 1e6 + 100 * 15 / 1e6
    legacy = c.arms["legacy"]
    assert legacy.calls == 1
    assert legacy.cost_usd["openai_tokens"] == pytest.approx(2 * (1000 * 0.15 + 100 * 0.6) / 1e6)
    assert legacy.cost_per_call_usd == pytest.approx(2 * per_turn)
    assert sum(c.arms["realtime"].cost_usd.values()) == 0.0


def test_the_report_window_shows_its_date_in_the_table_and_the_page():
    """``--since 2d`` printed "since 14:03:00", read as today; the HTML page did not show the window at all."""
    import time as _time

    now = T0
    since = now - 2 * 86400
    c = compare_records([], [], prices=PRICES, since=since, now=now)
    day = _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(since))
    assert f"since {day}" in render_table(c)
    assert f"since {day}" in render_html(c)
    assert "all time" in render_html(compare_records([], [], prices=PRICES, since=None, now=now))


def test_a_barge_in_seen_by_the_server_and_the_caller_is_not_shown_twice():
    """The summary added the server's interrupted turns to the caller simulator's barge-ins: one barge-in,
    seen from both ends, showed as 2 for realtime (legacy, which detects none, showed only the caller's)."""
    calls = [{"call_sid": "CA1", "pipeline": "realtime", "status": "completed"}]
    turns = [{"call_sid": "CA1", "pipeline": "realtime", "turn": 1, "at": 1.0, "interrupted": True}]
    caller = [{"call_sid": "CA1", "pipeline": "realtime", "turn": 1, "latency_ms": 400.0, "barge_in": True}]
    c = compare_records(calls, turns, prices=PRICES, caller_measurements=caller)
    columns = outcome_columns(c, "realtime")
    assert "2" not in (columns.get("barge"), columns.get("barge-ins"))
    assert columns["barge"] == "1" and columns["c.barge"] == "1"
    page = render_html(c)
    assert "<th>barge-ins (server)</th><th>barge-ins (caller side)</th>" in page


def test_the_server_side_latency_says_its_anchors_differ_by_arm():
    """Legacy's server-side latency starts after Twilio's own recognition, realtime's at Voice Live's VAD:
    the same label on both would read as a like-for-like comparison, so the report says where each starts."""
    calls = [
        {"call_sid": "CA1", "pipeline": "realtime", "status": "completed"},
        {"call_sid": "CA2", "pipeline": "legacy", "status": "completed"},
    ]
    turns = [
        {"call_sid": "CA1", "pipeline": "realtime", "turn": 1, "at": 1.0, "response_ms": 400.0},
        {"call_sid": "CA2", "pipeline": "legacy", "turn": 1, "at": 1.0, "response_ms": 1900.0},
    ]
    c = compare_records(calls, turns, prices=PRICES)
    table = " ".join(render_table(c).split())
    assert "Server-side anchors differ by arm" in table
    assert "recognition, which are not counted" in table and "legacy has no heard_ms" in table
    assert "Server-side anchors differ by arm" in render_html(c)
    # Nothing to qualify when no server-side latency is shown.
    empty = compare_records([], [], prices=PRICES)
    assert "anchors" not in render_table(empty)


def test_turns_with_a_mid_reply_silence_are_a_guardrail_next_to_the_outcomes():
    """Choppy audio (D.4's "gap > 100 ms between consecutive output frames") shows per arm: the turns it hit,
    how many gaps and how long, in the table, the page and the JSON, and it merges by addition."""
    calls = [{"call_sid": "CA1", "pipeline": "realtime", "status": "completed"}]
    turns = [
        {
            "call_sid": "CA1",
            "pipeline": "realtime",
            "turn": 1,
            "at": 1.0,
            "playback_gaps": 2,
            "playback_gap_ms": 450.0,
        },
        {
            "call_sid": "CA1",
            "pipeline": "realtime",
            "turn": 2,
            "at": 2.0,
            "playback_gaps": 0,
            "playback_gap_ms": 0.0,
        },
        {
            "call_sid": "CA1",
            "pipeline": "realtime",
            "turn": 3,
            "at": 3.0,
            "playback_gaps": 1,
            "playback_gap_ms": 150.0,
        },
    ]
    c = compare_records(calls, turns, prices=PRICES)
    arm = c.arm("realtime")
    assert (arm.gap_turns, arm.playback_gaps, arm.playback_gap_ms) == (2, 3, 600.0)
    assert outcome_columns(c, "realtime")["gap.t"] == "2"
    assert "<td>2 (3 gaps, 0.6 s)</td>" in render_html(c)
    doubled = Comparison.from_dict(c.to_dict()).merge(Comparison.from_dict(c.to_dict()))
    assert (doubled.arm("realtime").gap_turns, doubled.arm("realtime").playback_gap_ms) == (4, 1200.0)


def test_false_barge_ins_are_counted_among_the_barge_ins_whose_words_are_known():
    """P9 next to the barge-in count: how many interruptions were noise (no words), of those transcribed."""
    calls = [{"call_sid": "CA1", "pipeline": "realtime", "status": "completed"}]
    turns = [
        {"call_sid": "CA1", "pipeline": "realtime", "turn": 1, "at": 1.0, "false_interrupt": None},
        {"call_sid": "CA1", "pipeline": "realtime", "turn": 2, "at": 2.0, "false_interrupt": True},
        {"call_sid": "CA1", "pipeline": "realtime", "turn": 3, "at": 3.0, "false_interrupt": False},
        {"call_sid": "CA1", "pipeline": "realtime", "turn": 4, "at": 4.0},  # written before the field existed
    ]
    c = compare_records(calls, turns, prices=PRICES)
    assert (c.arm("realtime").false_interrupts, c.arm("realtime").judged_barge_ins) == (1, 2)
    assert outcome_columns(c, "realtime")["f.int"] == "1/2"
    assert "<td>1 of 2</td>" in render_html(c)
    merged = Comparison.from_dict(c.to_dict()).merge(Comparison.from_dict(c.to_dict()))
    assert (merged.arm("realtime").false_interrupts, merged.arm("realtime").judged_barge_ins) == (2, 4)


def test_calls_the_agent_ended_on_a_quiet_caller_are_a_guardrail_of_each_arm():
    """Call completion next to latency (D.4 item 5): how many calls ended because the caller went quiet, on
    each arm, as both pipelines record it (``end_reason: silence``)."""
    calls = [
        {"call_sid": "CA1", "pipeline": "realtime", "status": "completed", "end_reason": "silence"},
        {"call_sid": "CA2", "pipeline": "realtime", "status": "completed"},
        {"call_sid": "CA3", "pipeline": "legacy", "status": "completed", "end_reason": "silence"},
        {"call_sid": "CA4", "pipeline": "legacy", "status": "completed", "end_reason": "caller"},
    ]
    c = compare_records(calls, [], prices=PRICES)
    assert (c.arm("realtime").silence_hang_ups, c.arm("legacy").silence_hang_ups) == (1, 1)
    assert outcome_columns(c, "realtime")["quiet"] == "1"
    assert "ended by the agent after the caller went quiet</th>" in render_html(c)
    merged = Comparison.from_dict(c.to_dict()).merge(Comparison.from_dict(c.to_dict()))
    assert merged.arm("legacy").silence_hang_ups == 2


def test_voice_live_failures_are_counted_by_kind_and_close_code_or_status():
    """D.4's WS error codes: an outage shows as what it was (503s at the upgrade, 1006 drops, errors)."""

    def call(sid: str, *events: dict) -> dict:
        return {"call_sid": sid, "pipeline": "realtime", "status": "completed", "events": list(events)}

    rejected = {"type": "voicelive_failed", "reason": "voicelive_handshake_failed", "code": 503}
    calls = [
        call("CA1", rejected),
        call("CA2", rejected),
        call("CA3", {"type": "voicelive_failed", "reason": "voicelive_unreachable", "code": None}),
        call(
            "CA4",
            {"type": "voicelive_lost", "cause": "lost", "code": 1006},
            {"type": "voicelive_lost", "cause": "error", "code": "internal_server_error"},
        ),
        call("CA5", {"type": "voicelive_lost", "cause": "lost"}),  # written before codes were recorded
        call("CA6"),
    ]
    c = compare_records(calls, [], prices=PRICES)
    assert c.arm("realtime").voicelive_failures == {
        "handshake_failed 503": 2,
        "unreachable": 1,
        "lost 1006": 1,
        "error internal_server_error": 1,
        "lost": 1,
    }
    expected = (
        "handshake_failed 503 ×2, error internal_server_error ×1, lost ×1, lost 1006 ×1, unreachable ×1"
    )
    assert f"Voice Live failures on realtime calls (close code or HTTP status): {expected}" in render_table(c)
    assert expected in render_html(c)
    assert "Voice Live failures on legacy" not in render_table(c)
    merged = Comparison.from_dict(c.to_dict()).merge(Comparison.from_dict(c.to_dict()))
    assert merged.arm("realtime").voicelive_failures["handshake_failed 503"] == 4
