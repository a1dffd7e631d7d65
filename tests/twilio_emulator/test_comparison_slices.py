"""The report's slices (decision reason, breaker state, bucket), guardrails and same-population filter."""

from __future__ import annotations

import pytest

from router.comparison import Comparison, build_comparison, compare_records, render_table
from router.report_html import render_html
from router.report_slices import DIMENSIONS, bucket_label
from router.store.factory import open_store
from tests.twilio_emulator.test_comparison import PRICES, outcome_columns

SLICE_COUNTS = ("calls", "completed_calls", "turns", "turn_errors", "moved_to_legacy")


def call(sid: str, pipeline: str, reason: str, **fields: object) -> dict:
    return {"call_sid": sid, "pipeline": pipeline, "reason": reason, "status": "completed", **fields}


def turns_of(sid: str, pipeline: str, ms: float, count: int = 3, **fields: object) -> list[dict]:
    """A greeting (turn 0, 10 ms) and ``count - 1`` caller turns of ``ms`` milliseconds."""
    return [
        {
            "call_sid": sid,
            "pipeline": pipeline,
            "turn": n,
            "at": 1000.0 + n,
            "response_ms": 10.0 if n == 0 else ms,
            **fields,
        }
        for n in range(count)
    ]


def mixed_window() -> tuple[list[dict], list[dict], list[dict]]:
    """Rollout at 20 %: in and out callers, an allow-listed test number, calls sent to legacy while the breaker
    was open (slow), a call recorded before breaker states were, a moved call and an outside call's turns."""
    calls = [
        call("CAin1", "realtime", "rollout_in", bucket=150, percent=20.0, breaker_state="closed"),
        call("CAin2", "realtime", "rollout_in", bucket=1999, percent=20.0, breaker_state="closed"),
        call("CAout1", "legacy", "rollout_out", bucket=2000, percent=20.0, breaker_state="closed"),
        call("CAout2", "legacy", "rollout_out", bucket=9999, percent=20.0),  # no breaker_state: older record
        call("CAallow", "realtime", "allow_list", bucket=None, percent=20.0, breaker_state="closed"),
        call("CAopen", "legacy", "breaker_open", bucket=None, percent=20.0, breaker_state="open"),
        call(
            "CAmoved",
            "realtime",
            "rollout_in",
            bucket=700,
            percent=20.0,
            breaker_state="half_open",
            moved_to_legacy=True,
        ),
    ]
    turns = [
        *turns_of("CAin1", "realtime", 400.0),
        *turns_of("CAin2", "realtime", 420.0, heard_ms=500.0),
        *turns_of("CAout1", "legacy", 2000.0),
        *turns_of("CAout2", "legacy", 2100.0),
        *turns_of("CAallow", "realtime", 300.0),
        *turns_of("CAopen", "legacy", 5000.0, error="timeout", error_stage="llm"),
        *turns_of("CAmoved", "realtime", 450.0, count=2),
        {"call_sid": "CAmoved", "pipeline": "legacy", "turn": 2, "at": 1003.0, "response_ms": 2500.0},
        *turns_of("CAbefore", "legacy", 1800.0),  # its call started before the window
    ]
    caller = [
        {"call_sid": "CAin1", "turn_pipeline": "realtime", "turn": 1, "latency_ms": 700.0},
        {"call_sid": "CAout1", "turn_pipeline": "legacy", "turn": 1, "latency_ms": 2600.0},
    ]
    return calls, turns, caller


def test_bucket_labels_are_tenths_of_the_bucket_space():
    assert [bucket_label(b) for b in (0, 999, 1000, 1999, 9999)] == [
        "0-10%",
        "0-10%",
        "10-20%",
        "10-20%",
        "90-100%",
    ]
    assert bucket_label(None) == bucket_label(True) == bucket_label(10_000) == "none"


def test_slices_split_calls_turns_errors_and_latency_by_routing():
    calls, turns, caller = mixed_window()
    c = compare_records(calls, turns, prices=PRICES, caller_measurements=caller)
    legacy, realtime = c.arms["legacy"], c.arms["realtime"]
    # Every dimension partitions its arm: the slices add up to the arm's own counts.
    for arm in (legacy, realtime):
        for dimension in DIMENSIONS:
            for name in SLICE_COUNTS:
                assert sum(getattr(s, name) for s in arm.slices[dimension].values()) == getattr(arm, name)
            total = sum(s.overall("response_ms").count for s in arm.slices[dimension].values())
            assert total == arm.overall("stages", "response_ms").count
    reasons = realtime.slices["reason"]
    assert {k: v.calls for k, v in reasons.items()} == {"rollout_in": 3, "allow_list": 1}
    assert realtime.slices["reason"]["rollout_in"].moved_to_legacy == 1
    assert realtime.slices["reason"]["rollout_in"].fallback_rate == pytest.approx(1 / 3)
    # The breaker_open calls' slow, failing turns are theirs alone, not rollout_out's.
    open_slice = legacy.slices["reason"]["breaker_open"]
    assert (open_slice.calls, open_slice.turns, open_slice.turn_errors) == (1, 3, 3)
    assert open_slice.overall("response_ms", exclude=("greeting",)).quantile(0.5) == pytest.approx(
        5000, rel=0.01
    )
    out = legacy.slices["reason"]["rollout_out"]
    assert out.turn_errors == 0
    assert out.overall("response_ms", exclude=("greeting",)).quantile(0.99) == pytest.approx(2100, rel=0.01)
    # A moved call's legacy turn counts in legacy, in the slices of the call's routing.
    assert (
        legacy.slices["reason"]["rollout_in"].turns == 1 and legacy.slices["reason"]["rollout_in"].calls == 0
    )
    assert legacy.slices["breaker_state"]["half_open"].turns == 1
    # The turns of a call outside the window, and a record without the field, are named as such.
    assert legacy.slices["reason"]["no_call_record"].turns == 3
    assert legacy.slices["bucket"]["no_call_record"].turns == 3
    assert legacy.slices["breaker_state"]["unknown"].calls == 1  # CAout2
    assert legacy.slices["breaker_state"]["open"].calls == 1
    assert {k: v.calls for k, v in realtime.slices["bucket"].items()} == {"0-10%": 2, "10-20%": 1, "none": 1}
    # Legacy's 0-10% slice: the moved call's legacy turn, its call counted in realtime.
    assert {k: v.calls for k, v in legacy.slices["bucket"].items()} == {
        "0-10%": 0,
        "20-30%": 1,
        "90-100%": 1,
        "none": 1,
        "no_call_record": 0,
    }
    # heard_ms and the caller side, where present, go to the same slices.
    assert realtime.slices["bucket"]["10-20%"].overall("heard_ms").count == 3
    assert realtime.slices["reason"]["rollout_in"].overall("caller_latency_ms").count == 1
    assert legacy.slices["reason"]["rollout_out"].overall("caller_latency_ms").quantile(0.5) == pytest.approx(
        2600, rel=0.01
    )


def test_guardrails_count_reconnects_renewals_and_moves_per_arm():
    calls = [
        call(
            "CA1",
            "realtime",
            "rollout_in",
            events=[
                {"type": "stream_started"},
                {"type": "voicelive_session_replaced", "reason": "renewal"},
                {"type": "voicelive_session_replaced", "reason": "session_expired"},
                {"type": "voicelive_session_replaced", "reason": "socket_closed"},
                {"type": "moved_to_legacy", "reason": "voicelive_error", "accepted": True},
            ],
            moved_to_legacy=True,
        ),
        # The move failed: the event says so and the record too (moved_to_legacy back to False).
        call(
            "CA2",
            "realtime",
            "rollout_in",
            events=[{"type": "moved_to_legacy", "accepted": False}],
            moved_to_legacy=False,
            move_failed="voicelive_error",
        ),
        # Events lost (a full write queue): the stream's stats and the record's fields still count.
        call("CA3", "realtime", "rollout_in", realtime={"reconnects": 2, "renewals": 1}, move_failed="x"),
        call("CA4", "realtime", "rollout_in", moved_to_legacy=True),
        call("CA5", "legacy", "rollout_out", events=[{"type": "legacy.no_speech"}]),
    ]
    c = compare_records(calls, [], prices=PRICES)
    realtime, legacy = c.arms["realtime"], c.arms["legacy"]
    assert (realtime.reconnects, realtime.renewals) == (2 + 2, 1 + 1)
    assert (realtime.moves_ok, realtime.moves_failed) == (2, 2)
    assert (legacy.reconnects, legacy.renewals, legacy.moves_ok, legacy.moves_failed) == (0, 0, 0, 0)
    columns = outcome_columns(c, "realtime")
    assert (columns["reconn"], columns["renew"], columns["mv.ok"], columns["mv.fail"]) == ("4", "2", "2", "2")
    assert "<th>session reconnects</th>" in render_html(c)


def ramp_window() -> tuple[list[dict], list[dict], list[dict]]:
    """10 % then 20 %: buckets 1000-1999 were legacy before the ramp and realtime after it."""
    calls = [
        call("CAa", "realtime", "rollout_in", bucket=500, percent=10.0),
        call("CAb", "legacy", "rollout_out", bucket=1500, percent=10.0),  # kept
        call("CAc", "legacy", "rollout_out", bucket=5000, percent=10.0),
        call("CAd", "realtime", "rollout_in", bucket=1200, percent=20.0),  # kept
        call("CAe", "realtime", "rollout_in", bucket=1999, percent=20.0),  # kept
        call("CAf", "legacy", "rollout_out", bucket=2000, percent=20.0),
        call("CAg", "realtime", "allow_list", bucket=None, percent=20.0),
        {"call_sid": "CAstub", "events": [{"type": "dtmf"}]},  # no routing record: not a call of the report
    ]
    turns = [t for c in calls if c.get("pipeline") for t in turns_of(c["call_sid"], c["pipeline"], 800.0)]
    turns += turns_of("CAbefore", "legacy", 900.0)
    caller = [
        {"call_sid": "CAb", "turn_pipeline": "legacy", "turn": 1, "latency_ms": 2400.0},
        {"call_sid": "CAc", "turn_pipeline": "legacy", "turn": 1, "latency_ms": 2500.0},
    ]
    return calls, turns, caller


def test_same_population_keeps_the_buckets_both_arms_served_in_the_window():
    calls, turns, caller = ramp_window()
    everyone = compare_records(calls, turns, prices=PRICES, caller_measurements=caller)
    same = compare_records(calls, turns, prices=PRICES, caller_measurements=caller, same_population=True)
    assert (everyone.arms["legacy"].calls, everyone.arms["realtime"].calls) == (3, 4)
    assert (same.arms["legacy"].calls, same.arms["realtime"].calls) == (1, 2)
    assert (same.arms["legacy"].turns, same.arms["realtime"].turns) == (3, 6)
    assert same.arms["legacy"].caller_turns == 1
    population = same.population
    assert population.ranges == [(1000, 2000)]
    assert (population.dropped_calls, population.dropped_turns, population.dropped_caller_turns) == (4, 15, 1)
    header = render_table(same).splitlines()[2]
    assert header.startswith("population: same sticky buckets 10-20%")
    assert "dropped 4 of 7 calls, 15 turns, 1 caller-side turns" in header
    assert "dropped 4 of 7 calls" in render_html(same)
    assert render_table(everyone).splitlines()[2] == "population: all calls"


def test_same_population_at_one_percent_keeps_nothing_and_says_why():
    calls, turns, _ = mixed_window()
    same = compare_records(calls, turns, prices=PRICES, same_population=True)
    assert sum(arm.calls for arm in same.arms.values()) == 0
    assert same.population.dropped_calls == len(calls)
    assert "no bucket was served by both arms in the window" in render_table(same)


def test_slices_guardrails_and_population_round_trip_and_merge_exactly():
    calls, turns, caller = mixed_window()
    ramp_calls, ramp_turns, ramp_caller = ramp_window()
    a = compare_records(
        calls, turns, prices=PRICES, caller_measurements=caller, now=1.0, same_population=True
    )
    b = compare_records(
        ramp_calls, ramp_turns, prices=PRICES, caller_measurements=ramp_caller, now=2.0, same_population=True
    )
    data = b.to_dict()
    again = Comparison.from_dict(data)
    assert again.to_dict() == data
    assert data["arms"]["realtime"]["slices"]["bucket"]["10-20%"]["calls"] == 2
    assert data["population"]["filter"] == "same_buckets"
    # Two windows (or replicas) merged add up to the report of all their records.
    whole = compare_records(calls, turns, prices=PRICES, caller_measurements=caller, now=2.0)
    part_one = compare_records(
        calls[:4],
        [t for t in turns if t["call_sid"] in {"CAin1", "CAin2", "CAout1", "CAout2"}],
        prices=PRICES,
        caller_measurements=caller,
        now=1.0,
    )
    part_two = compare_records(
        calls[4:],
        [t for t in turns if t["call_sid"] not in {"CAin1", "CAin2", "CAout1", "CAout2"}],
        prices=PRICES,
        now=2.0,
    )
    merged = part_one.merge(Comparison.from_dict(part_two.to_dict()))
    assert merged.to_dict()["arms"] == whole.to_dict()["arms"]
    assert render_table(merged) == render_table(whole)
    # The filters' drop counts add up too.
    both = a.merge(b)
    assert both.population.dropped_calls == a.population.dropped_calls + b.population.dropped_calls
    assert both.population.dropped_turns == a.population.dropped_turns + b.population.dropped_turns
    assert both.population.ranges == [(1000, 2000)]
    # A filtered report merged with an unfiltered one says so, not that no bucket was shared.
    mixed = a.merge(compare_records([], [], prices=PRICES))
    assert mixed.population.name == "mixed"
    assert render_table(mixed).splitlines()[2].startswith("population: mixed filters (reports merged")


def test_the_text_and_html_reports_show_every_slice_dimension():
    calls, turns, caller = mixed_window()
    c = compare_records(calls, turns, prices=PRICES, caller_measurements=caller)
    table = render_table(c)
    for title in ("by decision reason", "by breaker state at routing", "by rollout bucket"):
        assert f"slices {title}" in table
    row = next(line.split() for line in table.splitlines() if line.split()[:2] == ["legacy", "breaker_open"])
    assert row[2:5] == ["1", "3", "100.0%"] and row[7] == "5000"  # calls, turns, err%, reply p50
    page = render_html(c)
    assert "<h3>Slices by decision reason</h3>" in page and "<td>breaker_open</td>" in page
    assert "<h3>Slices by rollout bucket" in page and "<td>90-100%</td>" in page


async def test_build_comparison_filters_the_store_by_population(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    await store.open()
    try:
        calls, turns, _ = ramp_window()
        for record in calls:
            if record.get("pipeline"):
                await store.put_call({**record, "started_at": 1000.0})
        await store.append_turns(turns)
        c = await build_comparison(store, since=None, prices=PRICES, same_population=True)
    finally:
        await store.close()
    assert (c.arms["legacy"].calls, c.arms["realtime"].calls) == (1, 2)
    assert c.population.ranges == [(1000, 2000)]


def test_tool_slice_splits_turns_and_the_caller_s_measurements_of_them() -> None:
    """Turn-level: a call has turns of both kinds, so the slice counts turns, not calls; a caller-side
    measurement joins its turn record (same call, arm and index), or is ``unknown`` without one."""
    calls = [call("CA1", "realtime", "rollout_in"), call("CA2", "legacy", "rollout_out")]
    turns = turns_of("CA1", "realtime", 400.0) + turns_of("CA2", "legacy", 2000.0)
    turns[1]["tool_calls"] = [{"name": "check_availability", "ms": 150.0, "ok": True}]
    turns[1]["response_ms"] = 900.0
    turns[4]["tool_calls"] = [{"name": "check_availability", "ms": 160.0, "ok": True}]
    measured = [
        {"call_sid": "CA1", "pipeline": "realtime", "turn": 1, "latency_ms": 950.0},
        {"call_sid": "CA1", "pipeline": "realtime", "turn": 2, "latency_ms": 450.0},
        {"call_sid": "CA1", "pipeline": "realtime", "turn": 7, "latency_ms": 500.0},  # no turn record
    ]
    report = compare_records(calls, turns, prices=PRICES, caller_measurements=measured)
    realtime = report.arms["realtime"].slices["tools"]
    assert (realtime["tool_call"].turns, realtime["no_tool"].turns) == (1, 2)
    assert realtime["tool_call"].calls == realtime["no_tool"].calls == 0
    assert realtime["tool_call"].overall("response_ms").quantile(0.5) == pytest.approx(900.0, rel=0.02)
    assert realtime["tool_call"].overall("caller_latency_ms").quantile(0.5) == pytest.approx(950.0, rel=0.02)
    assert realtime["no_tool"].overall("caller_latency_ms").count == 1
    assert realtime["unknown"].overall("caller_latency_ms").count == 1
    legacy = report.arms["legacy"].slices["tools"]
    assert (legacy["tool_call"].turns, legacy["no_tool"].turns) == (1, 2)
    merged = Comparison.from_dict(report.to_dict()).merge(report)
    assert merged.arms["realtime"].slices["tools"]["tool_call"].turns == 2
    assert "by tool use" in render_table(report)
    assert "by tool use" in render_html(report)
