"""Twilio retries a legacy turn (same I-Twilio-Idempotency-Token): the turn is taken once, answered twice."""

from __future__ import annotations

import asyncio

from tests.legacy.conftest import HarnessFactory
from tests.legacy.twilio_script import Twiml

CALL = "CA" + "7" * 32


async def test_a_retried_turn_asks_the_model_once_and_gets_the_same_answer(legacy: HarnessFactory) -> None:
    h = await legacy()
    greeting = await h.twilio.incoming_call(CALL)
    assert greeting.gather is not None
    action = greeting.gather["action"]
    params = h.twilio.params(CALL, SpeechResult="I'd like to book a cleaning", Confidence="0.92")

    # The retry arrives while the first attempt is still being answered (its answer was lost on the way).
    first, retry = await asyncio.gather(
        h.twilio.post(action, params, idempotency_token="tok-turn-1"),
        h.twilio.post(action, params, idempotency_token="tok-turn-1"),
    )
    late_retry = await h.twilio.post(action, params, idempotency_token="tok-turn-1")
    assert first.status_code == retry.status_code == late_retry.status_code == 200
    assert retry.text == first.text == late_retry.text
    assert len(Twiml.parse(first).plays) == 1
    assert len(h.openai.requests) == 1
    assert len(h.speech.syntheses) == 2  # the greeting and this one reply
    assert [t["user_text"] for t in await h.list_turns(CALL) if t.get("user_text")] == [
        "I'd like to book a cleaning"
    ]
    assert h.sample("voice_router_webhook_replays_total", route="/legacy/turn") == 2

    # The caller's next utterance is a new request (a new token): a new turn.
    params = h.twilio.params(CALL, SpeechResult="Tuesday morning works", Confidence="0.9")
    await h.twilio.post(action, params, idempotency_token="tok-turn-2")
    assert len(h.openai.requests) == 2
