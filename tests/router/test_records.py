"""Call and turn records survive the round trip through their stored (JSON) form unchanged."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from flags.breaker import TrialPermit
from router.records import CallRecord, Pipeline, TurnRecord


def test_turn_record_round_trip_matches_asdict() -> None:
    turn = TurnRecord(
        call_sid="CA1",
        pipeline=Pipeline.REALTIME,
        turn=2,
        at=1.5,
        response_ms=320.0,
        heard_ms=410.0,
        stages={"first_audio": 320.0},
        user_text="hi",
        assistant_text="hello",
        usage={"output_tokens": 12},
    )
    data = turn.to_dict()
    assert data == {**dataclasses.asdict(turn), "pipeline": "realtime"}
    data["stages"]["first_audio"] = 1.0  # a copy, not the record's own dict
    assert turn.stages["first_audio"] == 320.0
    assert TurnRecord.from_dict(orjson.loads(orjson.dumps(turn.to_dict()))) == turn


def call(**fields: Any) -> CallRecord:
    """A call record with plausible defaults, overridden by ``fields``."""
    defaults: dict[str, Any] = {
        "call_sid": "CA1",
        "pipeline": Pipeline.REALTIME,
        "reason": "rollout_in",
        "bucket": 1,
        "percent": 100.0,
        "caller_hash": "",
        "started_at": 1.0,
    }
    return CallRecord(**{**defaults, **fields})


def test_call_record_without_events_has_no_events_key() -> None:
    record = call()
    assert "events" not in record.to_dict()  # so storing it leaves the call's appended events alone
    assert CallRecord.from_dict(record.to_dict()) == record


def test_call_record_round_trip_ignores_unknown_fields() -> None:
    record = call(
        pipeline=Pipeline.LEGACY,
        reason="rollout_out",
        bucket=9000,
        percent=12.5,
        caller_hash="ab" * 16,
        started_at=10.0,
        events=[{"type": "x"}],
    )
    data = record.to_dict()
    assert data == {**dataclasses.asdict(record), "pipeline": "legacy"}
    stored = {**orjson.loads(orjson.dumps(data)), "realtime": {"reconnects": 1}}
    assert CallRecord.from_dict(stored) == record


def test_trial_permit_of_a_stored_call() -> None:
    stored = orjson.loads(orjson.dumps(call(breaker_trial=True, breaker_trial_round=3).to_dict()))
    assert CallRecord.trial_permit(stored) == TrialPermit(3)
    assert CallRecord.trial_permit({**stored, "breaker_trial": False}) is None
    # A trial written before permits had rounds: no permit (the breaker's stale-trial timeout frees it).
    assert CallRecord.trial_permit({**stored, "breaker_trial_round": None}) is None
    assert CallRecord.trial_permit(None) is None
