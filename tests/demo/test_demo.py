"""The demo scenario, time-compressed, end to end: router + every emulator + simulated callers.

Checks the invariants the demo exists to show: every call answered and completed by its caller, nobody left
in dead air beyond the limit, the breaker opened during the Voice Live outage and closed after it on its own,
the calls moved mid-call finished on legacy, and the comparison holds both arms with the calls placed.
"""

from __future__ import annotations

import asyncio

import pytest

from emulators.demo import DemoConfig, DemoReport, run_demo


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> DemoReport:
    """One compressed run of the scenario, shared by the checks below (its own event loop)."""
    config = DemoConfig.fast()
    config.output_dir = tmp_path_factory.mktemp("demo")
    return asyncio.run(run_demo(config))


def test_every_call_answered_and_completed_by_its_caller(report):
    config = DemoConfig.fast()
    placed = config.calls_at_0 + config.calls_at_25 + config.calls_at_50
    assert len(report.results) >= placed + config.calls_after_recovery
    for result in report.results:
        assert result.answered, result.errors
        assert result.status == "completed"
        if result.call_sid not in report.silent_calls:  # those the agent ends: see below
            assert result.ended_by == "caller", (result.call_sid, result.ended_by, result.errors)
        assert result.status_callback is not None and result.status_callback < 300
        assert all(t["error"] != "no_reply" for t in result.turns), result.turns


def test_callers_who_went_quiet_were_checked_on_and_hung_up_by_the_agent(report):
    """One quiet caller per pipeline (pinned there by the allow and deny lists): legacy ends the call
    with <Hangup> after its empty turns, realtime re-prompts (the emulator speaks the words asked for), says
    goodbye and ends the call through Twilio's REST API; the report counts one such call on each arm."""
    silent = [r for r in report.results if r.call_sid in report.silent_calls]
    assert sorted(r.pipeline for r in silent) == ["legacy", "realtime"]
    for result in silent:
        assert not result.moved, result.redirects
        expected = "api" if result.pipeline == "realtime" else "twiml_hangup"
        assert result.ended_by == expected, (result.pipeline, result.ended_by, result.errors)
    assert {r.pipeline: r.reason for r in silent} == {"legacy": "deny_list", "realtime": "allow_list"}
    realtime = next(r for r in silent if r.pipeline == "realtime")
    assert realtime.redirects == [{"Status": "completed"}]
    arms = report.comparison.arms
    assert (arms["legacy"].silence_hang_ups, arms["realtime"].silence_hang_ups) == (1, 1)


def test_no_caller_heard_dead_air_beyond_the_limit(report):
    limit = DemoConfig.fast().silence_limit_ms
    worst = max(r.max_silence_ms for r in report.results)
    assert 0 < worst <= limit


def test_breaker_opened_during_the_outage_and_closed_after_it(report):
    states = [state for _, state in report.breaker_states]
    assert "open" in states
    opened_at = next(t for t, state in report.breaker_states if state == "open")
    begin, end = report.outage_window
    assert begin <= opened_at <= end + 5.0
    assert states[-1] == "closed"
    assert states.index("open") < len(states) - 1
    # Nobody forced it: the store's audit trail shows the transitions were the breaker's own.
    actors = {entry.get("actor") for entry in report.breaker_transitions}
    assert actors and "demo" not in actors


def test_calls_in_flight_were_moved_and_finished_on_legacy(report):
    moved = [r for r in report.results if r.moved]
    assert moved
    for result in moved:
        assert result.pipeline == "realtime"
        assert result.modes[0] == "realtime" and result.final_mode == "legacy"


def test_routing_followed_the_ramp(report):
    at_zero = [r for r in report.results if r.call_sid in report.phases["rollout 0%"]]
    assert {r.pipeline for r in at_zero} == {"legacy"}
    later = [r for r in report.results if r.call_sid not in report.phases["rollout 0%"]]
    assert {r.pipeline for r in later} == {"legacy", "realtime"}


def test_comparison_has_both_arms_with_the_calls_placed(report):
    arms = report.comparison.arms
    by_pipeline = {"legacy": 0, "realtime": 0}
    for result in report.results:
        by_pipeline[result.pipeline] += 1
    assert arms["legacy"].calls == by_pipeline["legacy"]
    assert arms["realtime"].calls == by_pipeline["realtime"]
    moved = [r.call_sid for r in report.results if r.moved]
    # Server-side record of the move must match what the callers experienced.
    assert arms["realtime"].moved_to_legacy == len(moved), moved
    for name in ("legacy", "realtime"):
        assert arms[name].caller.get("caller_latency_ms"), name
        assert arms[name].stages, name
    assert "legacy" in report.table and "realtime" in report.table
    assert report.html_path.exists() and "<svg" in report.html_path.read_text()


def test_the_agent_s_tool_ran_on_both_pipelines_and_is_sliced_in_the_report(report):
    """The demo agent checks availability on each caller's first question (emulators.demo): both arms have
    turns that ran the tool, their time is a stage of its own, and the report separates them (D.4 item 4)."""
    for name in ("legacy", "realtime"):
        arm = report.comparison.arms[name]
        tool_turns = arm.slices["tools"]["tool_call"]
        assert tool_turns.turns > 0 and tool_turns.calls == 0, name
        # What the callers heard on those turns, joined to the turn records.
        assert tool_turns.overall("caller_latency_ms").count > 0, name
        assert arm.slices["tools"]["no_tool"].turns > 0, name
        assert "tool" in arm.stages, name
    assert "by tool use" in report.table


def test_caller_side_measurements_land_in_their_calls_slices(report):
    """The simulated callers' latencies are compared with the call records, so each lands in its call's
    routing slices; none is left in no_call_record."""
    for name in ("legacy", "realtime"):
        reasons = report.comparison.arms[name].slices["reason"]
        measured = sum(
            sketch.count
            for value, stats in reasons.items()
            if value != "no_call_record"
            for sketch in stats.latency.get("caller_latency_ms", {}).values()
        )
        assert measured > 0, name
        assert "no_call_record" not in reasons, (name, sorted(reasons))
