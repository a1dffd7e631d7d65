"""The routing decision: stickiness, monotonic ramp-up, accuracy and order of precedence."""

from __future__ import annotations

import random

import pytest

from flags.breaker_state import BreakerState
from flags.bucketing import bucket
from flags.decision import Decision, decide, sticky_key
from flags.rollout import Mode, RolloutConfig, Stickiness
from router.records import Pipeline

CLOSED = BreakerState.CLOSED


def callers(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [f"+1{rng.randrange(200, 999)}{rng.randrange(10**7):07d}" for _ in range(n)]


def test_same_caller_always_gets_same_pipeline_at_fixed_percent() -> None:
    config = RolloutConfig(percent_bp=3_000)
    outcomes = {Pipeline.LEGACY: 0, Pipeline.REALTIME: 0}
    for number in callers(500):
        first = decide(config, caller=number, call_sid="CA-first", breaker_state=CLOSED)
        outcomes[first.pipeline] += 1
        for attempt in range(5):
            again = decide(config, caller=number, call_sid=f"CA-{attempt}", breaker_state=CLOSED)
            assert again.pipeline is first.pipeline
            assert again.bucket == first.bucket
    assert outcomes[Pipeline.LEGACY] and outcomes[Pipeline.REALTIME]  # both arms were exercised


def test_from_is_normalised_before_bucketing() -> None:
    config = RolloutConfig(percent_bp=5_000)
    plain = decide(config, caller="+14155550100", call_sid="CA1", breaker_state=CLOSED)
    spaced = decide(config, caller=" +1 415 555 0100 ", call_sid="CA2", breaker_state=CLOSED)
    assert spaced.bucket == plain.bucket == bucket(config.salt, "+14155550100")


def test_raising_percent_never_moves_a_realtime_caller_back_to_legacy() -> None:
    numbers = callers(5_000, seed=2)
    steps = [0, 1, 10, 50, 100, 250, 500, 1_000, 1_250, 2_500, 3_750, 5_000, 7_500, 9_000, 9_999, 10_000]
    realtime_before: set[str] = set()
    for percent_bp in steps:
        config = RolloutConfig(percent_bp=percent_bp)
        realtime_now = {
            n
            for n in numbers
            if decide(config, caller=n, call_sid="CA", breaker_state=CLOSED).pipeline is Pipeline.REALTIME
        }
        assert realtime_before <= realtime_now, f"callers moved back to legacy at {percent_bp} bp"
        realtime_before = realtime_now
    assert len(realtime_before) == len(numbers)


def test_realtime_share_at_37_5_percent_is_within_half_a_point() -> None:
    config = RolloutConfig(percent_bp=3_750)
    numbers = callers(100_000, seed=3)
    realtime = sum(
        decide(config, caller=n, call_sid="CA", breaker_state=CLOSED).pipeline is Pipeline.REALTIME
        for n in numbers
    )
    share = 100 * realtime / len(numbers)
    assert abs(share - 37.5) <= 0.5, share


def test_rollout_decision_carries_bucket_and_percent() -> None:
    config = RolloutConfig(percent_bp=1_234)
    for number in callers(300, seed=4):
        d = decide(config, caller=number, call_sid="CA", breaker_state=CLOSED)
        expected = bucket(config.salt, number)
        assert d.bucket == expected
        assert d.percent == 12.34
        assert d.trial is False
        if expected < 1_234:
            assert (d.pipeline, d.reason) == (Pipeline.REALTIME, "rollout_in")
        else:
            assert (d.pipeline, d.reason) == (Pipeline.LEGACY, "rollout_out")


# Precedence ---------------------------------------------------------------------------------------

NUMBER = "+14155550100"


def everything_on(**changes: object) -> RolloutConfig:
    """A config where every rule would match NUMBER, so the first rule in order must win."""
    base = RolloutConfig(
        percent_bp=10_000, mode=Mode.SPLIT, allow=frozenset({NUMBER}), deny=frozenset({NUMBER})
    )
    return base.with_changes(**changes)


def reason(config: RolloutConfig, state: BreakerState = CLOSED) -> Decision:
    return decide(config, caller=NUMBER, call_sid="CA1", breaker_state=state)


def test_kill_switch_beats_everything() -> None:
    for state in BreakerState:
        for percent_bp in (0, 10_000):
            d = reason(everything_on(mode=Mode.LEGACY_ONLY, percent_bp=percent_bp), state)
            assert (d.pipeline, d.reason, d.trial) == (Pipeline.LEGACY, "kill_switch", False)


def test_forced_realtime_beats_deny_list_breaker_and_percent() -> None:
    for state in BreakerState:
        d = reason(everything_on(mode=Mode.REALTIME_ONLY, percent_bp=0), state)
        assert (d.pipeline, d.reason, d.trial) == (Pipeline.REALTIME, "forced_realtime", False)


def test_deny_list_beats_breaker_allow_list_and_percent() -> None:
    for state in BreakerState:
        d = reason(everything_on(), state)
        assert (d.pipeline, d.reason) == (Pipeline.LEGACY, "deny_list")


@pytest.mark.parametrize("state", [BreakerState.OPEN, BreakerState.FORCED_OPEN])
def test_open_breaker_beats_allow_list_and_percent(state: BreakerState) -> None:
    d = reason(everything_on(deny=frozenset()), state)
    assert (d.pipeline, d.reason) == (Pipeline.LEGACY, "breaker_open")


@pytest.mark.parametrize("state", [BreakerState.CLOSED, BreakerState.FORCED_CLOSED])
def test_allow_list_beats_percent(state: BreakerState) -> None:
    d = reason(everything_on(deny=frozenset(), percent_bp=0), state)
    assert (d.pipeline, d.reason, d.bucket, d.trial) == (Pipeline.REALTIME, "allow_list", None, False)


def test_deny_list_beats_a_full_rollout_only_for_listed_numbers() -> None:
    config = RolloutConfig(percent_bp=10_000, deny=frozenset({NUMBER}))
    assert reason(config).reason == "deny_list"
    other = decide(config, caller="+14155550199", call_sid="CA", breaker_state=CLOSED)
    assert (other.pipeline, other.reason) == (Pipeline.REALTIME, "rollout_in")


def test_lists_match_normalised_from() -> None:
    config = RolloutConfig(percent_bp=0, allow=frozenset({NUMBER}))
    d = decide(config, caller="+1 415 555 0100", call_sid="CA", breaker_state=CLOSED)
    assert d.reason == "allow_list"


def test_half_open_marks_realtime_decisions_as_trials() -> None:
    half = BreakerState.HALF_OPEN
    allow = reason(everything_on(deny=frozenset()), half)
    assert (allow.pipeline, allow.reason, allow.trial) == (Pipeline.REALTIME, "allow_list", True)
    rollout_in = reason(RolloutConfig(percent_bp=10_000), half)
    assert (rollout_in.pipeline, rollout_in.reason, rollout_in.trial) == (
        Pipeline.REALTIME,
        "rollout_in",
        True,
    )
    rollout_out = reason(RolloutConfig(percent_bp=0), half)
    assert (rollout_out.pipeline, rollout_out.trial) == (Pipeline.LEGACY, False)
    closed = reason(RolloutConfig(percent_bp=10_000), CLOSED)
    assert closed.trial is False


# Stickiness ---------------------------------------------------------------------------------------


def test_stickiness_call_sid_buckets_each_call_independently() -> None:
    config = RolloutConfig(percent_bp=5_000, stickiness=Stickiness.CALL_SID)
    pipelines = set()
    for i in range(200):
        call_sid = f"CA{i:032x}"
        d = decide(config, caller=NUMBER, call_sid=call_sid, breaker_state=CLOSED)
        assert d.bucket == bucket(config.salt, call_sid)
        pipelines.add(d.pipeline)
    assert pipelines == {Pipeline.LEGACY, Pipeline.REALTIME}  # one caller spread over both arms


def test_stickiness_from_keys_on_the_number() -> None:
    config = RolloutConfig(percent_bp=5_000, stickiness=Stickiness.FROM)
    buckets = {
        decide(config, caller=NUMBER, call_sid=f"CA{i}", breaker_state=CLOSED).bucket for i in range(50)
    }
    assert buckets == {bucket(config.salt, NUMBER)}
    assert sticky_key(config, caller=" +1 415 555 0100", call_sid="CA1") == NUMBER


@pytest.mark.parametrize(
    "anonymous", ["", "   ", "anonymous", "Anonymous", "RESTRICTED", "+266696687", "unknown"]
)
def test_stickiness_from_falls_back_to_call_sid_for_anonymous_callers(anonymous: str) -> None:
    config = RolloutConfig(percent_bp=5_000, stickiness=Stickiness.FROM)
    assert sticky_key(config, caller=anonymous, call_sid="CA-anon-1") == "CA-anon-1"
    d = decide(config, caller=anonymous, call_sid="CA-anon-1", breaker_state=CLOSED)
    assert d.bucket == bucket(config.salt, "CA-anon-1")
    spread = {
        decide(config, caller=anonymous, call_sid=f"CA{i}", breaker_state=CLOSED).pipeline for i in range(100)
    }
    assert spread == {Pipeline.LEGACY, Pipeline.REALTIME}


def test_salt_changes_the_assignment() -> None:
    numbers = callers(1_000, seed=5)
    a = RolloutConfig(percent_bp=5_000, salt="a")
    b = RolloutConfig(percent_bp=5_000, salt="b")
    differ = sum(
        decide(a, caller=n, call_sid="CA", breaker_state=CLOSED).pipeline
        is not decide(b, caller=n, call_sid="CA", breaker_state=CLOSED).pipeline
        for n in numbers
    )
    assert 400 < differ < 600  # independent halves disagree about half the time


def test_bucket_equal_to_percent_is_out_and_one_below_is_in() -> None:
    config = RolloutConfig()
    for number in callers(200, seed=6):
        b = bucket(config.salt, number)
        at = decide(config.with_changes(percent_bp=b), caller=number, call_sid="CA", breaker_state=CLOSED)
        above = decide(
            config.with_changes(percent_bp=b + 1), caller=number, call_sid="CA", breaker_state=CLOSED
        )
        assert (at.reason, above.reason) == ("rollout_out", "rollout_in")
