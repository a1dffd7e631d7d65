"""A Twilio retry (same I-Twilio-Idempotency-Token) gets the first attempt's answer: the cache itself, then
POST /twilio/voice over a real socket."""

from __future__ import annotations

import asyncio
import time

import pytest
from starlette.responses import Response

from flags.breaker import Outcome
from router.observability import Metrics
from router.webhook_replay import WebhookReplay
from tests.router.conftest import RunningRouter

CALL = "CA" + "1" * 32


class Handler:
    """Counts its calls; each answer is a new Response, so a replay is recognisable by identity."""

    def __init__(self, delay_s: float = 0.0, fail: bool = False) -> None:
        self.calls = 0
        self.delay_s = delay_s
        self.fail = fail

    async def __call__(self) -> Response:
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("handler failed")
        return Response(f"<Response>{self.calls}</Response>")


async def test_a_retry_gets_the_first_answer_and_the_handler_runs_once():
    metrics = Metrics()
    replay = WebhookReplay(metrics=metrics)
    handle = Handler()
    first = await replay.answer("/legacy/turn", CALL, "tok-1", handle)
    again = await replay.answer("/legacy/turn", CALL, "tok-1", handle)
    assert again is first and handle.calls == 1
    assert (
        metrics.registry.get_sample_value("voice_router_webhook_replays_total", {"route": "/legacy/turn"})
        == 1
    )


async def test_a_retry_during_the_first_attempt_waits_for_its_answer():
    replay = WebhookReplay()
    handle = Handler(delay_s=0.05)
    first, retry = await asyncio.gather(
        replay.answer("/legacy/turn", CALL, "tok-1", handle),
        replay.answer("/legacy/turn", CALL, "tok-1", handle),
    )
    assert retry is first and handle.calls == 1


async def test_other_tokens_other_calls_and_no_token_are_each_handled():
    replay = WebhookReplay()
    handle = Handler()
    await replay.answer("/legacy/turn", CALL, "tok-1", handle)
    await replay.answer("/legacy/turn", CALL, "tok-2", handle)
    await replay.answer("/legacy/turn", "CA" + "2" * 32, "tok-1", handle)  # a token sent with another call
    await replay.answer("/legacy/turn", CALL, None, handle)
    await replay.answer("/legacy/turn", CALL, None, handle)
    assert handle.calls == 5


async def test_answers_expire_and_the_cache_is_bounded():
    now = [100.0]
    replay = WebhookReplay(ttl_s=30.0, max_entries=3, monotonic=lambda: now[0])
    handle = Handler()
    await replay.answer("/twilio/voice", CALL, "tok-1", handle)
    now[0] += 30.0
    await replay.answer("/twilio/voice", CALL, "tok-1", handle)  # expired: handled again
    assert handle.calls == 2
    for n in range(10):
        await replay.answer("/twilio/voice", CALL, f"many-{n}", handle)
    assert len(replay) == 3


async def test_a_first_attempt_that_failed_is_redone_by_its_retry():
    replay = WebhookReplay()
    failing = Handler(delay_s=0.02, fail=True)
    working = Handler()
    first = asyncio.ensure_future(replay.answer("/legacy/turn", CALL, "tok-1", failing))
    await asyncio.sleep(0)
    retry = await replay.answer("/legacy/turn", CALL, "tok-1", working)  # arrived while the first ran
    with pytest.raises(RuntimeError):
        await first
    assert working.calls == 1 and retry.body == b"<Response>1</Response>"
    assert len(replay) == 1  # the retry's own answer, replayable in turn


async def test_retries_waiting_on_a_first_attempt_that_failed_redo_it_once_between_them():
    """Every retry woken by the failure ran the handler itself, at the same time: the turn ran (and was
    recorded, and billed) once per waiting retry."""
    replay = WebhookReplay()
    failing = Handler(delay_s=0.02, fail=True)
    working = Handler(delay_s=0.02)
    first = asyncio.ensure_future(replay.answer("/legacy/turn", CALL, "tok-1", failing))
    await asyncio.sleep(0)
    retries = await asyncio.gather(*(replay.answer("/legacy/turn", CALL, "tok-1", working) for _ in range(3)))
    with pytest.raises(RuntimeError):
        await first
    assert working.calls == 1
    assert retries[1] is retries[0] and retries[2] is retries[0]


async def test_a_cancelled_retry_does_not_cancel_the_first_attempt():
    replay = WebhookReplay()
    handle = Handler(delay_s=0.05)
    first = asyncio.ensure_future(replay.answer("/legacy/turn", CALL, "tok-1", handle))
    await asyncio.sleep(0)
    retry = asyncio.ensure_future(replay.answer("/legacy/turn", CALL, "tok-1", handle))
    await asyncio.sleep(0.01)
    retry.cancel()
    assert (await first).body == b"<Response>1</Response>"
    assert retry.cancelled() and handle.calls == 1


def test_a_retried_half_open_voice_webhook_keeps_its_trial_and_its_answer(router_factory) -> None:
    router: RunningRouter = router_factory(
        config_cache_seconds=0.0,
        breaker_wait_open_seconds=0.5,
        breaker_consecutive_connect_failures=1,
        breaker_half_open_calls=1,
    )
    response = router.admin("PUT", "/admin/rollout", json={"percent": 100, "reason": "t", "actor": "pytest"})
    assert response.status_code == 200
    asyncio.run(router.components.breaker.record(Outcome.CONNECT_FAILURE))
    time.sleep(0.6)  # past the open wait: the next realtime call is the one half-open trial
    params = {
        "CallSid": CALL,
        "AccountSid": "AC" + "0" * 32,
        "From": "+14155550100",
        "To": "+14155550199",
        "CallStatus": "ringing",
    }
    token = {"I-Twilio-Idempotency-Token": "9f1c3f0e-retry"}
    first = router.twilio_post("/twilio/voice", params, headers=token)
    retry = router.twilio_post("/twilio/voice", params, headers=token)
    assert first.headers["X-Voice-Router-Reason"] == "rollout_in"
    # The same answer, stream token included; handled again it would be legacy (the trial is taken).
    assert retry.text == first.text and retry.headers["X-Voice-Router-Pipeline"] == "realtime"
    other = router.twilio_post("/twilio/voice", {**params, "CallSid": "CA" + "2" * 32}, headers=token)
    assert other.headers["X-Voice-Router-Reason"] == "breaker_half_open"
    assert (
        router.admin("GET", "/admin/breaker").json()["trial_permits"] == 1
    )  # taken once, by the first attempt
    metrics = router.client.get("/metrics").text
    assert 'voice_router_webhook_replays_total{route="/twilio/voice"} 1.0' in metrics


def test_the_voice_webhook_keeps_its_answers_off_the_store(router: RunningRouter) -> None:
    """Only the legacy turn routes share answers through the store: POST /twilio/voice (the webhook
    benchmark's route) gets no store round trip for its retry cache."""
    token = {"I-Twilio-Idempotency-Token": "7a1d-voice"}
    first = router.incoming_call(CALL, headers=token)
    retry = router.incoming_call(CALL, headers=token)
    assert first.status_code == retry.status_code == 200 and retry.text == first.text
    assert not [name for name in router.store.calls if name.startswith("webhook_")]
