"""A worker takes at most ``REALTIME_MAX_CALLS`` realtime calls at once; a stream over the limit is moved to
legacy before any Voice Live session is opened, and the breaker hears nothing of it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from emulators.speechlike import silence_ulaw, speechlike_ulaw
from flags.breaker import BreakerConfig, Outcome
from flags.breaker_state import BreakerState
from realtime_pipeline.admission import CallSlots
from tests.realtime.harness import PUBLIC_BASE_URL, Harness, new_call_sid
from tests.realtime.twilio_client import wait_until

SPEECH = speechlike_ulaw(900, seed=2) + silence_ulaw(800)
LEGACY_GREET = {"Url": f"{PUBLIC_BASE_URL}/legacy/start?greet=1", "Method": "POST"}


def test_slots_fill_up_to_the_limit_and_free_on_release() -> None:
    slots = CallSlots(2)
    assert slots.try_take() and slots.try_take()
    assert slots.full and not slots.try_take() and slots.active == 2
    slots.release()
    assert not slots.full and slots.try_take()


def test_a_zero_limit_means_no_limit_and_bad_use_is_refused() -> None:
    unlimited = CallSlots(0)
    assert all(unlimited.try_take() for _ in range(1000)) and not unlimited.full
    with pytest.raises(ValueError):
        CallSlots(-1)
    with pytest.raises(RuntimeError):
        CallSlots(1).release()


async def test_a_stream_over_the_limit_moves_to_legacy_without_a_session_or_a_breaker_outcome(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(settings_overrides={"realtime_max_calls": 1})
    first, second, third = new_call_sid(), new_call_sid(), new_call_sid()
    for call_sid in (first, second, third):
        await harness.register_call(call_sid)
    async with harness.client(first) as talking:
        await talking.start()
        await wait_until(lambda: len(harness.voicelive.sessions) == 1)
        assert not harness.pipeline.has_capacity()
        assert harness.metric("voice_router_realtime_calls") == 1
        assert harness.metric("voice_router_realtime_call_limit") == 1
        async with harness.client(second) as refused:
            await refused.start()
            await refused.send_audio(SPEECH[:1600])
            await wait_until(lambda: bool(harness.rest.updates_for(second)))
            assert not refused.closed.is_set()  # Twilio ends the stream itself once it runs the redirect
            await refused.stop()
            await refused.wait_closed()
        assert harness.rest.updates_for(second) == [LEGACY_GREET]  # they heard nothing here: legacy greets
        record = await harness.call(second)
        assert record["moved_to_legacy"] is True and record["move_reason"] == "realtime_full"
        assert record.get("breaker_outcome") is None
        assert harness.metric("voice_router_fallbacks_total", reason="realtime_full") == 1
        assert len(harness.voicelive.sessions) == 1  # no Voice Live minutes spent on the refused call
        assert harness.metric("voice_router_realtime_calls") == 1  # the refused stream held no slot
        # The call already talking was not disturbed: its audio still reaches Voice Live.
        appended = harness.voicelive.sessions[0].append_count
        await talking.send_audio(SPEECH[:1600])
        await wait_until(lambda: harness.voicelive.sessions[0].append_count > appended)
        await talking.stop()
        await talking.wait_closed()
    await wait_until(harness.pipeline.has_capacity)  # the slot is free again once the call ended
    assert harness.metric("voice_router_realtime_calls") == 0
    async with harness.client(third) as next_call:
        await next_call.start()
        await wait_until(lambda: len(harness.voicelive.sessions) == 2)
        await next_call.stop()
        await next_call.wait_closed()
    assert not harness.rest.updates_for(third)
    assert await harness.breaker_window() == (2, 0, 0)  # the two bridged calls, not the refused one
    assert (await harness.call(second)).get("breaker_outcome") is None


async def test_a_half_open_trial_refused_by_a_full_worker_gives_its_permit_back(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(settings_overrides={"realtime_max_calls": 1})
    # One trial permit, no stale-trial release within the test: only the refusal can give the permit back.
    harness.breaker.config = BreakerConfig(
        consecutive_connect_failures=1, wait_open_seconds=0.1, half_open_calls=1, trial_timeout_seconds=600
    )
    await harness.on_server(harness.breaker.record(Outcome.CONNECT_FAILURE))
    await asyncio.sleep(0.15)  # past the open wait: half-open
    permit = await harness.on_server(harness.breaker.try_acquire_trial())  # what the webhook did for `trial`
    assert permit is not None
    talking, trial = new_call_sid(), new_call_sid()
    await harness.register_call(talking)
    await harness.register_call(trial, trial=permit)
    async with harness.client(talking) as first:
        await first.start()
        await wait_until(lambda: len(harness.voicelive.sessions) == 1)
        async with harness.client(trial) as refused:
            await refused.start()
            await wait_until(lambda: bool(harness.rest.updates_for(trial)))
            await refused.stop()
            await refused.wait_closed()
        status = await harness.on_server(harness.breaker.status())
        assert (status.state, status.trial_permits) == (BreakerState.HALF_OPEN, 0)
        # The next caller can be the trial now, not after the stale-trial timeout.
        assert await harness.on_server(harness.breaker.try_acquire_trial()) is not None
        await first.stop()
        await first.wait_closed()
