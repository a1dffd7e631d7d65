"""The circuit breaker driven through every transition with a fake clock and the in-memory backend."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import pytest

from flags.breaker import BreakerConfig, BreakerConflictError, CircuitBreaker, Outcome, TrialPermit
from flags.breaker_state import BreakerDocument, BreakerState, BreakerTransition, WindowTotals
from flags.clock import FakeClock
from flags.memory_backend import InMemoryBreakerBackend

S = Outcome.SUCCESS
SLOW = Outcome.SLOW
F = Outcome.FAILURE
CF = Outcome.CONNECT_FAILURE


@dataclass
class Recorded:
    calls: list[tuple[BreakerState, BreakerState, str, str]] = field(default_factory=list)

    async def __call__(self, before: BreakerDocument, after: BreakerDocument, cause: str, actor: str) -> None:
        self.calls.append((before.state, after.state, cause, actor))


def make(
    config: BreakerConfig | None = None, backend: InMemoryBreakerBackend | None = None
) -> tuple[CircuitBreaker, FakeClock, Recorded, InMemoryBreakerBackend]:
    clock = FakeClock()
    listener = Recorded()
    backend = backend or InMemoryBreakerBackend()
    breaker = CircuitBreaker(config or BreakerConfig(), backend, clock=clock, listeners=[listener])
    return breaker, clock, listener, backend


async def feed(
    breaker: CircuitBreaker, clock: FakeClock, outcomes: list[Outcome], every: float = 1.0
) -> None:
    for outcome in outcomes:
        await breaker.record(outcome)
        clock.advance(every)


async def state(breaker: CircuitBreaker) -> BreakerState:
    return (await breaker.current()).state


async def open_breaker(breaker: CircuitBreaker, clock: FakeClock) -> None:
    await feed(breaker, clock, [CF, CF, CF])
    assert await state(breaker) is BreakerState.OPEN


async def half_open_breaker(breaker: CircuitBreaker, clock: FakeClock) -> None:
    await open_breaker(breaker, clock)
    clock.advance(breaker.config.wait_open_seconds)
    assert await state(breaker) is BreakerState.HALF_OPEN


async def take(breaker: CircuitBreaker, count: int) -> list[TrialPermit]:
    """``count`` trial permits, each of which must be granted."""
    permits = [await breaker.try_acquire_trial() for _ in range(count)]
    assert None not in permits
    return [permit for permit in permits if permit is not None]


# CLOSED ------------------------------------------------------------------------------------------------


async def test_starts_closed_with_an_empty_window() -> None:
    breaker, _, listener, _ = make()
    status = await breaker.status()
    assert (status.state, status.calls_in_window, status.failure_rate) == (BreakerState.CLOSED, 0, 0.0)
    assert listener.calls == []


async def test_closed_to_open_by_failure_rate() -> None:
    breaker, clock, listener, _ = make()
    await feed(breaker, clock, [S, S, S, S, S, F, F, F, F])  # 9 calls: below minimum
    assert await state(breaker) is BreakerState.CLOSED
    await feed(breaker, clock, [F])  # 10 calls, 5 failed: 50 % ≥ 50 %
    doc = await breaker.current()
    assert doc.state is BreakerState.OPEN
    assert "failure rate 50.0%" in doc.reason
    assert listener.calls == [(BreakerState.CLOSED, BreakerState.OPEN, "failure_rate", "breaker")]


async def test_failure_rate_below_threshold_stays_closed() -> None:
    breaker, clock, _, _ = make()
    await feed(breaker, clock, [S] * 11 + [F] * 9 + [CF, S])  # 10 of 22 failed: 45 %
    status = await breaker.status()
    assert status.state is BreakerState.CLOSED
    assert status.calls_in_window == 22
    assert status.failure_rate == pytest.approx(100 * 10 / 22)


async def test_connect_failures_count_toward_the_failure_rate() -> None:
    breaker, clock, listener, _ = make()
    await feed(breaker, clock, [S, S, CF, CF, S, CF, F, S, CF, F])  # 6 of 10, never 3 CF in a row
    assert await state(breaker) is BreakerState.OPEN
    assert listener.calls[-1][2] == "failure_rate"


async def test_closed_to_open_by_slow_call_rate() -> None:
    breaker, clock, listener, _ = make()
    await feed(breaker, clock, [S, S] + [SLOW] * 7)
    assert await state(breaker) is BreakerState.CLOSED
    await feed(breaker, clock, [SLOW])  # 8 of 10 slow = 80 %
    doc = await breaker.current()
    assert doc.state is BreakerState.OPEN
    assert listener.calls == [(BreakerState.CLOSED, BreakerState.OPEN, "slow_call_rate", "breaker")]


async def test_consecutive_connect_failures_trip_below_minimum_calls() -> None:
    breaker, clock, listener, _ = make()
    await feed(breaker, clock, [CF, CF])
    assert (await breaker.status()).consecutive_connect_failures == 2
    await feed(breaker, clock, [CF])
    doc = await breaker.current()
    assert doc.state is BreakerState.OPEN
    assert doc.consecutive_connect_failures == 0
    assert listener.calls == [
        (BreakerState.CLOSED, BreakerState.OPEN, "consecutive_connect_failures", "breaker")
    ]


@pytest.mark.parametrize("breaks_streak", [S, SLOW])
async def test_success_or_slow_resets_the_connect_failure_streak(breaks_streak: Outcome) -> None:
    breaker, clock, _, _ = make()
    await feed(breaker, clock, [CF, CF, breaks_streak, CF, CF])
    status = await breaker.status()
    assert (status.state, status.consecutive_connect_failures) == (BreakerState.CLOSED, 2)


async def test_a_plain_failure_neither_extends_nor_resets_the_streak() -> None:
    breaker, clock, _, _ = make()
    await feed(breaker, clock, [CF, CF, F])
    assert (await breaker.status()).consecutive_connect_failures == 2
    await feed(breaker, clock, [CF])
    assert await state(breaker) is BreakerState.OPEN


async def test_fast_trip_can_be_turned_off() -> None:
    breaker, clock, _, _ = make(BreakerConfig(consecutive_connect_failures=0))
    await feed(breaker, clock, [CF] * 9)
    assert await state(breaker) is BreakerState.CLOSED
    await feed(breaker, clock, [CF])  # now the rate: 10 of 10
    assert await state(breaker) is BreakerState.OPEN


async def test_below_minimum_calls_never_trips_however_bad() -> None:
    breaker, clock, listener, _ = make(BreakerConfig(minimum_calls=10))
    await feed(breaker, clock, [F] * 9 + [SLOW] * 0)
    status = await breaker.status()
    assert (status.state, status.failure_rate, status.calls_in_window) == (BreakerState.CLOSED, 100.0, 9)
    assert listener.calls == []


async def test_window_expiry_forgets_old_outcomes() -> None:
    breaker, clock, _, _ = make(BreakerConfig(window_seconds=300))
    await feed(breaker, clock, [F] * 9, every=10)  # at t = 0, 10, … 80
    assert (await breaker.status()).calls_in_window == 9
    clock.advance(300 - 90 + 1)  # now t = 301: the outcome from t = 0 has left the window
    assert (await breaker.status()).calls_in_window == 8
    await feed(breaker, clock, [F])  # 9 calls in the window again: still below the minimum
    assert await state(breaker) is BreakerState.CLOSED
    clock.advance(1_000)
    status = await breaker.status()
    assert (status.calls_in_window, status.failure_rate) == (0, 0.0)
    await feed(breaker, clock, [F] * 9)
    assert await state(breaker) is BreakerState.CLOSED


async def test_the_longest_window_settings_allow_keeps_all_its_outcomes_in_memory_too() -> None:
    """Settings allow a window up to 7,200 s, the stores' bucket retention; the in-memory backend (tests,
    benchmarks) dropped buckets after 3,600 s and so counted only the window's newest hour."""
    breaker, clock, _, _ = make(BreakerConfig(window_seconds=7_200, minimum_calls=100_000))
    await feed(breaker, clock, [S] * 4_000)  # one a second, all inside the window
    assert (await breaker.status()).calls_in_window == 4_000


async def test_window_edges_are_inclusive_of_now_minus_window_plus_one() -> None:
    breaker, clock, _, _ = make(BreakerConfig(window_seconds=10))
    await breaker.record(S)
    clock.advance(9)  # the first outcome's second is now - 9 = now - window + 1: still in
    assert (await breaker.status()).calls_in_window == 1
    clock.advance(1)
    assert (await breaker.status()).calls_in_window == 0


# OPEN → HALF_OPEN ----------------------------------------------------------------------------------------


async def test_open_moves_to_half_open_only_after_the_wait_on_read() -> None:
    breaker, clock, listener, _ = make(BreakerConfig(wait_open_seconds=60))
    await open_breaker(breaker, clock)
    opened_at = (await breaker.current()).since
    clock.advance(opened_at + 59 - clock.time())
    assert await state(breaker) is BreakerState.OPEN
    assert await breaker.try_acquire_trial() is None
    clock.advance(1)
    doc = await breaker.current()
    assert doc.state is BreakerState.HALF_OPEN
    assert doc.since == clock.time()
    assert listener.calls[-1] == (BreakerState.OPEN, BreakerState.HALF_OPEN, "wait_elapsed", "breaker")


async def test_outcomes_while_open_do_not_change_the_state() -> None:
    breaker, clock, listener, _ = make()
    await open_breaker(breaker, clock)
    await feed(breaker, clock, [S] * 30 + [CF] * 30, every=0.5)  # 30 s: still inside the wait
    assert await state(breaker) is BreakerState.OPEN
    assert len(listener.calls) == 1
    assert (await breaker.status()).calls_in_window == 63  # counted, visible, but not acted on


# HALF_OPEN -------------------------------------------------------------------------------------------------


async def test_half_open_trial_permit_limit() -> None:
    breaker, clock, _, _ = make(BreakerConfig(half_open_calls=3))
    await half_open_breaker(breaker, clock)
    permits = [await breaker.try_acquire_trial() for _ in range(5)]
    assert [permit is not None for permit in permits] == [True, True, True, False, False]
    status = await breaker.status()
    assert (status.trial_permits, status.trial_outcomes) == (3, 0)


async def test_half_open_to_closed_when_trials_pass_and_window_is_cleared() -> None:
    breaker, clock, listener, _ = make()
    await half_open_breaker(breaker, clock)
    first, second, third = await take(breaker, 3)
    await breaker.record(S, trial=first)
    await breaker.record(F, trial=second)  # 1 of 3 failed: 33 % < 50 %
    assert await state(breaker) is BreakerState.HALF_OPEN  # not every trial has reported yet
    await breaker.record(S, trial=third)
    status = await breaker.status()
    assert status.state is BreakerState.CLOSED
    assert status.calls_in_window == 0
    assert listener.calls[-1] == (BreakerState.HALF_OPEN, BreakerState.CLOSED, "trials_passed", "breaker")
    # Old failures are gone: it takes a fresh set of bad calls to trip again.
    await feed(breaker, clock, [F] * 9)
    assert await state(breaker) is BreakerState.CLOSED


async def test_half_open_to_open_when_trials_fail() -> None:
    breaker, clock, listener, _ = make()
    await half_open_breaker(breaker, clock)
    first, second, third = await take(breaker, 3)
    await breaker.record(F, trial=first)
    await breaker.record(S, trial=second)
    await breaker.record(F, trial=third)  # 2 of 3
    doc = await breaker.current()
    assert doc.state is BreakerState.OPEN
    assert doc.since == clock.time()
    assert listener.calls[-1] == (BreakerState.HALF_OPEN, BreakerState.OPEN, "trial_failure_rate", "breaker")
    clock.advance(59)
    assert await state(breaker) is BreakerState.OPEN  # a new wait started
    clock.advance(1)
    assert await state(breaker) is BreakerState.HALF_OPEN


async def test_half_open_to_open_when_trials_are_slow() -> None:
    breaker, clock, listener, _ = make()
    await half_open_breaker(breaker, clock)
    for permit in await take(breaker, 3):
        await breaker.record(SLOW, trial=permit)
    assert await state(breaker) is BreakerState.OPEN
    assert listener.calls[-1][2] == "trial_slow_call_rate"


async def test_a_connect_failure_trial_reopens_at_once() -> None:
    breaker, clock, listener, _ = make()
    await half_open_breaker(breaker, clock)
    (permit,) = await take(breaker, 1)
    await breaker.record(CF, trial=permit)
    assert await state(breaker) is BreakerState.OPEN
    assert listener.calls[-1][2] == "trial_connect_failure"


async def test_non_trial_outcomes_are_ignored_while_half_open() -> None:
    breaker, clock, _, _ = make()
    await half_open_breaker(breaker, clock)
    await feed(breaker, clock, [S] * 10, every=0.1)  # not trials: they cannot close it
    assert await state(breaker) is BreakerState.HALF_OPEN
    await feed(breaker, clock, [CF] * 5, every=0.1)  # nor reopen it
    assert await state(breaker) is BreakerState.HALF_OPEN


async def test_trial_outcome_without_a_permit_is_ignored() -> None:
    breaker, clock, _, _ = make()
    await half_open_breaker(breaker, clock)
    (permit,) = await take(breaker, 1)
    await breaker.record(S, trial=permit)
    await breaker.record(F, trial=permit)  # no second permit was ever taken
    await breaker.record(F, trial=permit)
    status = await breaker.status()
    assert (status.state, status.trial_permits, status.trial_outcomes) == (BreakerState.HALF_OPEN, 1, 1)


async def test_stale_trials_are_released_so_half_open_cannot_stick(caplog: pytest.LogCaptureFixture) -> None:
    config = BreakerConfig(wait_open_seconds=60)  # trial timeout defaults to 120 s
    breaker, clock, _, _ = make(config)
    await half_open_breaker(breaker, clock)
    reported, *_hung_up = await take(breaker, 3)
    await breaker.record(S, trial=reported)  # one reports; two callers hang up before any outcome
    assert await breaker.try_acquire_trial() is None
    clock.advance(119)
    assert await breaker.try_acquire_trial() is None
    clock.advance(1)
    with caplog.at_level(logging.WARNING, logger="flags.breaker"):
        fourth = await breaker.try_acquire_trial()  # released two, took one
    assert fourth is not None
    assert "released 2 trial permit(s)" in caplog.text
    status = await breaker.status()
    assert (status.state, status.trial_permits, status.trial_outcomes) == (BreakerState.HALF_OPEN, 2, 1)
    (fifth,) = await take(breaker, 1)
    await breaker.record(S, trial=fourth)
    await breaker.record(S, trial=fifth)
    assert await state(breaker) is BreakerState.CLOSED  # the kept outcome + two new ones: 3 of 3


async def test_a_trial_taken_late_in_a_quiet_round_has_the_whole_timeout_to_report() -> None:
    """The timeout ran from the start of the round: a trial admitted 119 s into it was released a second
    later, while its caller was still being connected, and its outcome was thrown away."""
    config = BreakerConfig(wait_open_seconds=60, half_open_calls=1)  # trial timeout: 120 s
    breaker, clock, _, _ = make(config)
    await half_open_breaker(breaker, clock)
    clock.advance(119)  # nobody called for two minutes
    (late,) = await take(breaker, 1)
    clock.advance(5)  # past the round's 120 s, 5 s into the trial
    assert await breaker.try_acquire_trial() is None, "the trial still holds its permit"
    await breaker.record(S, trial=late)
    assert await state(breaker) is BreakerState.CLOSED
    assert (await breaker.status()).trial_outcomes == 0


async def test_a_late_trial_that_never_reports_is_released_a_timeout_after_it_was_taken() -> None:
    breaker, clock, _, _ = make(BreakerConfig(wait_open_seconds=60, half_open_calls=2))
    await half_open_breaker(breaker, clock)
    await take(breaker, 1)
    clock.advance(100)
    await take(breaker, 1)  # both callers hang up before any outcome
    clock.advance(119)
    assert await breaker.try_acquire_trial() is None
    clock.advance(1)
    assert await breaker.try_acquire_trial() is not None


async def test_trial_timeout_is_configurable() -> None:
    breaker, clock, _, _ = make(BreakerConfig(wait_open_seconds=60, trial_timeout_seconds=10))
    await half_open_breaker(breaker, clock)
    for _ in range(3):
        await breaker.try_acquire_trial()
    clock.advance(10)
    assert (await breaker.status()).trial_permits == 0


# Operator states -----------------------------------------------------------------------------------------


async def test_forced_open_stays_until_reset() -> None:
    breaker, clock, listener, _ = make()
    doc = await breaker.force_open(actor="alice", reason="vendor incident")
    assert (doc.state, doc.reason) == (BreakerState.FORCED_OPEN, "vendor incident")
    clock.advance(10_000)
    await feed(breaker, clock, [S] * 20)
    assert await state(breaker) is BreakerState.FORCED_OPEN
    assert await breaker.try_acquire_trial() is None
    doc = await breaker.reset(actor="bob", reason="vendor fixed")
    assert doc.state is BreakerState.CLOSED
    assert (await breaker.status()).calls_in_window == 0
    assert listener.calls == [
        (BreakerState.CLOSED, BreakerState.FORCED_OPEN, "forced_open", "alice"),
        (BreakerState.FORCED_OPEN, BreakerState.CLOSED, "reset", "bob"),
    ]


async def test_forced_closed_counts_outcomes_but_never_trips() -> None:
    breaker, clock, listener, _ = make()
    await breaker.force_closed(actor="alice", reason="known flaky, keep realtime")
    await feed(breaker, clock, [CF] * 20 + [SLOW] * 20)
    status = await breaker.status()
    assert status.state is BreakerState.FORCED_CLOSED
    assert status.calls_in_window == 40
    assert status.failure_rate == 50.0 and status.slow_call_rate == 50.0
    assert await breaker.try_acquire_trial() is not None
    assert listener.calls == [(BreakerState.CLOSED, BreakerState.FORCED_CLOSED, "forced_closed", "alice")]
    await breaker.reset(actor="alice", reason="done")
    status = await breaker.status()
    assert (status.state, status.calls_in_window) == (BreakerState.CLOSED, 0)


async def test_force_overrides_an_automatic_state_and_another_force() -> None:
    breaker, clock, listener, _ = make()
    await open_breaker(breaker, clock)
    await breaker.force_closed(actor="alice", reason="override")
    clock.advance(3_600)
    assert await state(breaker) is BreakerState.FORCED_CLOSED  # no timer moves an operator state
    await breaker.force_open(actor="bob", reason="changed my mind")
    assert await state(breaker) is BreakerState.FORCED_OPEN
    assert [c[1:] for c in listener.calls[-2:]] == [
        (BreakerState.FORCED_CLOSED, "forced_closed", "alice"),
        (BreakerState.FORCED_OPEN, "forced_open", "bob"),
    ]


async def test_reset_from_half_open_closes_and_drops_trials() -> None:
    breaker, clock, _, _ = make()
    await half_open_breaker(breaker, clock)
    await breaker.try_acquire_trial()
    doc = await breaker.reset(actor="ops", reason="manual")
    assert (doc.state, doc.half_open.permits, doc.consecutive_connect_failures) == (BreakerState.CLOSED, 0, 0)


# Listeners, logging, storage --------------------------------------------------------------------------------


async def test_listener_gets_before_and_after_documents() -> None:
    seen: list[tuple[BreakerDocument, BreakerDocument, str, str]] = []

    async def listener(before: BreakerDocument, after: BreakerDocument, cause: str, actor: str) -> None:
        seen.append((before, after, cause, actor))

    clock = FakeClock()
    breaker = CircuitBreaker(BreakerConfig(), InMemoryBreakerBackend(), clock=clock)
    breaker.add_listener(listener)
    await breaker.force_open(actor="alice", reason="drill")
    ((before, after, cause, actor),) = seen
    assert (before.state, after.state, cause, actor) == (
        BreakerState.CLOSED,
        BreakerState.FORCED_OPEN,
        "forced_open",
        "alice",
    )
    assert after.version == before.version + 1
    assert (after.reason, after.since) == ("drill", clock.time())


async def test_a_failing_listener_is_logged_and_does_not_break_the_breaker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(before: BreakerDocument, after: BreakerDocument, cause: str, actor: str) -> None:
        raise RuntimeError("metrics exploded")

    later = Recorded()
    clock = FakeClock()
    breaker = CircuitBreaker(
        BreakerConfig(), InMemoryBreakerBackend(), clock=clock, listeners=[broken, later]
    )
    with caplog.at_level(logging.INFO, logger="flags.breaker"):
        await feed(breaker, clock, [CF, CF, CF])
    assert await state(breaker) is BreakerState.OPEN
    assert later.calls == [
        (BreakerState.CLOSED, BreakerState.OPEN, "consecutive_connect_failures", "breaker")
    ]
    assert "metrics exploded" in caplog.text


async def test_every_transition_is_logged_with_from_to_and_cause(caplog: pytest.LogCaptureFixture) -> None:
    breaker, clock, _, _ = make()
    with caplog.at_level(logging.INFO, logger="flags.breaker"):
        await open_breaker(breaker, clock)
    records = [r for r in caplog.records if r.name == "flags.breaker" and r.levelno == logging.INFO]
    assert len(records) == 1
    record = records[0]
    fields = (
        getattr(record, "from_state", None),
        getattr(record, "to_state", None),
        getattr(record, "cause", None),
    )
    assert fields == ("closed", "open", "consecutive_connect_failures")


class LosesFirstSwaps(InMemoryBreakerBackend):
    """Another replica wins the first ``n`` compare-and-sets (and really changes the document)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.remaining = n
        self.swaps = 0

    async def breaker_swap(
        self, expected_version: int | None, new: BreakerDocument, transition: BreakerTransition | None = None
    ) -> bool:
        self.swaps += 1
        if self.remaining > 0:
            self.remaining -= 1
            current = await self.breaker_load()
            bumped = BreakerDocument() if current is None else current
            bumped.version = (expected_version or 0) + 1  # someone else wrote a new version
            await super().breaker_swap(expected_version, bumped)
            return False
        return await super().breaker_swap(expected_version, new, transition)


async def test_cas_conflict_is_retried() -> None:
    backend = LosesFirstSwaps(2)
    breaker, _, listener, _ = make(backend=backend)
    doc = await breaker.force_open(actor="alice", reason="drill")
    assert doc.state is BreakerState.FORCED_OPEN
    assert doc.version == 3  # two versions written by the "other replica", then ours
    assert backend.swaps == 3
    assert (await backend.breaker_load()) == doc
    assert len(listener.calls) == 1  # only the write that won notifies


async def test_cas_conflict_on_a_trip_is_retried() -> None:
    backend = LosesFirstSwaps(0)
    breaker, clock, listener, _ = make(backend=backend)
    await feed(breaker, clock, [CF, CF])
    backend.remaining = 1
    await feed(breaker, clock, [CF])
    assert await state(breaker) is BreakerState.OPEN
    assert listener.calls == [
        (BreakerState.CLOSED, BreakerState.OPEN, "consecutive_connect_failures", "breaker")
    ]


async def test_endless_conflicts_raise() -> None:
    breaker, _, _, _ = make(backend=LosesFirstSwaps(10_000))
    with pytest.raises(BreakerConflictError):
        await breaker.force_open(actor="alice", reason="drill")


async def test_two_breakers_share_one_backend() -> None:
    backend = InMemoryBreakerBackend()
    clock = FakeClock()
    a = CircuitBreaker(BreakerConfig(), backend, clock=clock)
    b = CircuitBreaker(BreakerConfig(), backend, clock=clock)
    await a.record(CF)
    await b.record(CF)
    await a.record(CF)
    assert (await b.current()).state is BreakerState.OPEN
    clock.advance(60)
    assert await b.try_acquire_trial() is not None
    assert await a.try_acquire_trial() is not None
    assert await b.try_acquire_trial() is not None
    assert await a.try_acquire_trial() is None


async def test_status_to_dict() -> None:
    breaker, clock, _, _ = make()
    await feed(breaker, clock, [S, F, SLOW])
    data = (await breaker.status()).to_dict()
    assert data["state"] == "closed"
    assert data["calls_in_window"] == 3
    assert data["failure_rate"] == 33.33
    assert data["slow_call_rate"] == 33.33
    assert data["consecutive_connect_failures"] == 0
    assert set(data) >= {"state", "failure_rate", "slow_call_rate", "calls_in_window", "since", "reason"}


def test_config_validation_and_slow_classification() -> None:
    with pytest.raises(ValueError):
        BreakerConfig(failure_rate_threshold=0)
    with pytest.raises(ValueError):
        BreakerConfig(half_open_calls=0)
    config = BreakerConfig(slow_call_seconds=4.0)
    assert config.is_slow(4.01) and not config.is_slow(4.0)
    assert config.trial_timeout == 120.0


async def test_memory_backend_window_sums_and_clears() -> None:
    backend = InMemoryBreakerBackend()
    await backend.breaker_add_outcome(100, failed=True, slow=False)
    await backend.breaker_add_outcome(100, failed=False, slow=True)
    await backend.breaker_add_outcome(105, failed=False, slow=False)
    assert await backend.breaker_window(100, 104) == WindowTotals(calls=2, failures=1, slow=1)
    assert await backend.breaker_window(101, 105) == WindowTotals(calls=1, failures=0, slow=0)
    await backend.breaker_clear_window()
    assert await backend.breaker_window(0, 1_000) == WindowTotals()


async def test_cas_conflict_on_the_lazy_half_open_transition_is_retried() -> None:
    backend = LosesFirstSwaps(0)
    breaker, clock, listener, _ = make(backend=backend)
    await open_breaker(breaker, clock)
    clock.advance(60)
    backend.remaining = 1
    assert await state(breaker) is BreakerState.HALF_OPEN
    assert [c[1] for c in listener.calls] == [BreakerState.OPEN, BreakerState.HALF_OPEN]


class Yielding(InMemoryBreakerBackend):
    """Gives the event loop a turn inside every call, as a networked store does, so coroutines interleave."""

    async def breaker_load(self) -> BreakerDocument | None:
        await asyncio.sleep(0)
        return await super().breaker_load()

    async def breaker_swap(
        self, expected_version: int | None, new: BreakerDocument, transition: BreakerTransition | None = None
    ) -> bool:
        await asyncio.sleep(0)
        return await super().breaker_swap(expected_version, new, transition)


async def test_concurrent_trial_acquisitions_never_exceed_the_permit_limit() -> None:
    breaker, clock, _, _ = make(backend=Yielding())
    await half_open_breaker(breaker, clock)
    admitted = await asyncio.gather(*(breaker.try_acquire_trial() for _ in range(10)))
    assert sum(permit is not None for permit in admitted) == 3
    assert (await breaker.status()).trial_permits == 3


async def test_concurrent_connect_failures_are_all_counted() -> None:
    breaker, _, listener, _ = make(backend=Yielding())
    await asyncio.gather(*(breaker.record(CF) for _ in range(3)))
    assert await state(breaker) is BreakerState.OPEN
    assert len(listener.calls) == 1  # one transition, however many raced to make it


async def test_a_released_trial_permit_admits_the_next_caller() -> None:
    breaker, clock, _, _ = make(BreakerConfig(half_open_calls=1))
    (unlimited,) = await take(breaker, 1)
    await breaker.release_trial(unlimited)  # closed: nothing to give back
    assert await state(breaker) is BreakerState.CLOSED
    await half_open_breaker(breaker, clock)
    (refused_by_worker,) = await take(breaker, 1)
    assert await breaker.try_acquire_trial() is None
    await breaker.release_trial(refused_by_worker)  # that trial's call never reached the backend
    assert (await breaker.status()).trial_permits == 0
    (permit,) = await take(breaker, 1)
    await breaker.record(S)  # (not a trial: ignored while half-open)
    await breaker.release_trial(permit)
    await breaker.release_trial(permit)  # one more than was taken: ignored
    status = await breaker.status()
    assert (status.state, status.trial_permits) == (BreakerState.HALF_OPEN, 0)
    (permit,) = await take(breaker, 1)
    await breaker.record(S, trial=permit)  # the one trial passed
    await breaker.release_trial(permit)  # nothing outstanding: a reported trial is never given back
    assert await state(breaker) is BreakerState.CLOSED


# Trial rounds ------------------------------------------------------------------------------------------------


async def test_a_released_trial_reporting_late_cannot_decide_the_next_round() -> None:
    config = BreakerConfig(wait_open_seconds=60, half_open_calls=1)  # trial timeout: 120 s
    breaker, clock, _, _ = make(config)
    await half_open_breaker(breaker, clock)
    (stale,) = await take(breaker, 1)
    clock.advance(120)  # no outcome in time: released, the round restarts
    (fresh,) = await take(breaker, 1)
    assert fresh.round == stale.round + 1
    await breaker.record(CF, trial=stale)  # the released caller's late failure
    status = await breaker.status()
    assert (status.state, status.trial_permits, status.trial_outcomes) == (BreakerState.HALF_OPEN, 1, 0)
    await breaker.record(S, trial=fresh)  # the round's own trial decides it
    assert await state(breaker) is BreakerState.CLOSED


async def test_a_trial_from_before_the_breaker_reopened_is_not_counted_in_the_new_round() -> None:
    breaker, clock, listener, _ = make(BreakerConfig(wait_open_seconds=60, half_open_calls=2))
    await half_open_breaker(breaker, clock)
    failed, still_talking = await take(breaker, 2)
    await breaker.record(CF, trial=failed)  # reopens at once; the other trial's call goes on
    clock.advance(60)
    first, second = await take(breaker, 2)
    await breaker.record(F, trial=still_talking)  # its session dropped: a fact about the last round
    await breaker.record(S, trial=first)
    assert await state(breaker) is BreakerState.HALF_OPEN  # waiting for `second`, not decided by the old call
    await breaker.record(S, trial=second)
    assert await state(breaker) is BreakerState.CLOSED
    assert listener.calls[-1][2] == "trials_passed"


async def test_a_permit_given_back_after_the_round_restarted_frees_nothing() -> None:
    breaker, clock, _, _ = make(BreakerConfig(wait_open_seconds=60, half_open_calls=1))
    await half_open_breaker(breaker, clock)
    (stale,) = await take(breaker, 1)
    clock.advance(120)
    (fresh,) = await take(breaker, 1)
    await breaker.release_trial(stale)  # a full worker refused the stale trial's stream late
    assert (await breaker.status()).trial_permits == 1  # `fresh` still holds the only permit
    assert await breaker.try_acquire_trial() is None
    await breaker.release_trial(fresh)
    assert (await breaker.status()).trial_permits == 0


async def test_the_trial_round_is_kept_in_the_stored_document() -> None:
    backend = InMemoryBreakerBackend()
    breaker, clock, _, _ = make(backend=backend)
    await half_open_breaker(breaker, clock)
    (permit,) = await take(breaker, 1)
    stored = await backend.breaker_load()
    assert stored is not None and stored.trial_round == permit.round == 1
    assert BreakerDocument.from_dict(stored.to_dict()).trial_round == 1
    assert BreakerDocument.from_dict({"state": "half_open"}).trial_round == 0  # a document from before rounds


async def test_a_zero_trial_timeout_is_refused_rather_than_admitting_unlimited_trials() -> None:
    """``BREAKER_WAIT_OPEN_SECONDS=0`` made the default trial timeout 0: every read released the trials in
    flight, so half-open admitted any number of trial calls and ignored each one's outcome (its round was
    gone by the time it reported): the breaker could never close again."""
    from pydantic import ValidationError

    from router.settings import Settings

    for config in (
        {"wait_open_seconds": 0},
        {"trial_timeout_seconds": 0},
        {"trial_timeout_seconds": -1},
    ):
        with pytest.raises(ValueError):
            BreakerConfig(**config)
    with pytest.raises(ValidationError):
        Settings(breaker_wait_open_seconds=0)
    # An explicit timeout keeps the permit limit whatever the wait.
    breaker, clock, _, _ = make(BreakerConfig(wait_open_seconds=0.001, trial_timeout_seconds=30))
    await feed(breaker, clock, [CF, CF, CF], every=0)
    clock.advance(1)
    assert await state(breaker) is BreakerState.HALF_OPEN
    await take(breaker, 3)
    assert await breaker.try_acquire_trial() is None


def test_a_document_written_by_a_newer_release_is_read_by_an_older_one() -> None:
    """During a rolling deploy the old replicas read what the new ones write: unknown fields are ignored."""
    written = BreakerDocument(state=BreakerState.HALF_OPEN, version=7, trial_round=2).to_dict()
    written["half_open"] |= {"permits": 2, "abandoned": 1}
    written["introduced_later"] = {"anything": True}

    read = BreakerDocument.from_dict(written)

    assert (read.state, read.version, read.trial_round) == (BreakerState.HALF_OPEN, 7, 2)
    assert read.half_open.permits == 2


def test_the_newest_permit_time_is_kept_exactly_and_an_older_document_reads_without_it() -> None:
    doc = BreakerDocument(state=BreakerState.HALF_OPEN, version=3)
    doc.half_open.last_permit_at = 1_700_000_000.25
    assert BreakerDocument.from_dict(doc.to_dict()) == doc
    older = doc.to_dict()
    del older["half_open"]["last_permit_at"]
    assert BreakerDocument.from_dict(older).half_open.last_permit_at == 0.0


class RecordsTransitions(InMemoryBreakerBackend):
    """Keeps what each successful swap was handed: the transition the store audits in the same write."""

    def __init__(self) -> None:
        super().__init__()
        self.transitions: list[tuple[BreakerState, BreakerTransition | None]] = []
        self.clears = 0

    async def breaker_swap(
        self, expected_version: int | None, new: BreakerDocument, transition: BreakerTransition | None = None
    ) -> bool:
        swapped = await super().breaker_swap(expected_version, new, transition)
        if swapped:
            self.transitions.append((new.state, transition))
        return swapped

    async def breaker_clear_window(self) -> None:
        self.clears += 1
        await super().breaker_clear_window()


async def test_every_announced_change_is_swapped_with_its_transition_for_the_audit() -> None:
    """Operator actions and automatic transitions reach the backend with their transition (audited in the
    same write, window clear included); bookkeeping swaps (a permit taken) carry none."""
    backend = RecordsTransitions()
    breaker, clock, _, _ = make(BreakerConfig(half_open_calls=1), backend=backend)
    await half_open_breaker(breaker, clock)
    [permit] = await take(breaker, 1)
    await breaker.record(Outcome.SUCCESS, trial=permit)
    await breaker.force_open(actor="alice", reason="drill")
    await breaker.reset(actor="bob", reason="over")
    described = [
        (state, None if t is None else (t.before.state, t.cause, t.actor, t.clear_window))
        for state, t in backend.transitions
    ]
    assert described == [
        (BreakerState.CLOSED, None),  # the connect-failure streak, 1
        (BreakerState.CLOSED, None),  # 2
        (BreakerState.OPEN, (BreakerState.CLOSED, "consecutive_connect_failures", "breaker", False)),
        (BreakerState.HALF_OPEN, (BreakerState.OPEN, "wait_elapsed", "breaker", False)),
        (BreakerState.HALF_OPEN, None),  # the trial permit
        (BreakerState.CLOSED, (BreakerState.HALF_OPEN, "trials_passed", "breaker", True)),
        (BreakerState.FORCED_OPEN, (BreakerState.CLOSED, "forced_open", "alice", False)),
        (BreakerState.CLOSED, (BreakerState.FORCED_OPEN, "reset", "bob", True)),
    ]
    assert backend.clears == 0, "the window is cleared inside the swap, never on its own before it"
