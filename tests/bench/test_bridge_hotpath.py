"""The in-process hot-path benchmark drives the real ``CallBridge`` through all three phases: every caller frame
reaches Voice Live, every agent delta reaches Twilio with its mark, and every mark echo is taken."""

from __future__ import annotations

import asyncio

from bench.bridge_hotpath import per_event, run_minimal, run_ours


def test_the_bridge_forwards_every_event_of_each_phase() -> None:
    marks = asyncio.run(run_ours(300))  # run_ours asserts the appends and the media it forwarded
    assert len(marks) == 4 and marks == sorted(marks)
    timings = per_event(marks, 300)
    assert set(timings) == {"inbound_us", "outbound_us", "mark_echo_us"}
    assert all(value >= 0 for value in timings.values())


def test_the_minimal_loop_runs_the_same_phases() -> None:
    marks = asyncio.run(run_minimal(300))
    assert len(marks) == 4 and marks == sorted(marks)
