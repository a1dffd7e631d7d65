"""Twilio retries a legacy turn (same I-Twilio-Idempotency-Token): the turn is taken once, answered twice."""

from __future__ import annotations

import asyncio
from typing import Any

from legacy_pipeline.twiml import START_PATH, TURN_PATH
from tests.legacy.conftest import HarnessFactory
from tests.legacy.test_failures import _StuckWrites
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


async def test_a_retried_turn_that_reaches_another_replica_asks_the_model_once(
    legacy: HarnessFactory, shared_state_url: str
) -> None:
    a = await legacy(state_url=shared_state_url)
    b = await legacy(state_url=shared_state_url)
    call = "CA" + "8" * 32
    greeting = await a.twilio.incoming_call(call)
    assert greeting.gather is not None
    params = a.twilio.params(call, SpeechResult="I'd like to book a cleaning", Confidence="0.92")

    # The first attempt's answer was lost on its way back; Twilio's retry reaches the other replica.
    first = await a.twilio.post(TURN_PATH, params, idempotency_token="tok-turn-1")
    retry = await b.twilio.post(TURN_PATH, params, idempotency_token="tok-turn-1")
    assert first.status_code == retry.status_code == 200
    assert len(a.openai.requests) == 1
    # The same answer, even the first replica's own URLs in it (each harness has its own public URL).
    assert retry.text == first.text and retry.headers["content-type"] == first.headers["content-type"]
    assert len(Twiml.parse(retry).plays) == 1
    assert b.sample("voice_router_webhook_replays_total", route=TURN_PATH) == 1
    await a.list_turns(call)  # each replica writes its turn records behind its answers: flush both
    turns = [t["user_text"] for t in await b.list_turns(call) if t.get("user_text")]
    assert turns == ["I'd like to book a cleaning"]
    history = [m["content"] for m in await b.store.get_history(call) if m["role"] == "user"]
    assert history == ["I'd like to book a cleaning"]

    # Both at once (the retry while the first attempt is still being answered), each on its own replica.
    params = a.twilio.params(call, SpeechResult="Tuesday morning works", Confidence="0.9")
    first, retry = await asyncio.gather(
        a.twilio.post(TURN_PATH, params, idempotency_token="tok-turn-2"),
        b.twilio.post(TURN_PATH, params, idempotency_token="tok-turn-2"),
    )
    assert len(a.openai.requests) == 2
    assert first.status_code == retry.status_code == 200 and retry.text == first.text
    history = [m["content"] for m in await a.store.get_history(call) if m["role"] == "user"]
    assert history == ["I'd like to book a cleaning", "Tuesday morning works"]


async def test_a_retried_resume_that_reaches_another_replica_resumes_once(
    legacy: HarnessFactory, shared_state_url: str
) -> None:
    a = await legacy(state_url=shared_state_url)
    b = await legacy(state_url=shared_state_url)
    call = "CA" + "9" * 32
    params = a.twilio.params(call)
    first = await a.twilio.post(START_PATH, params, idempotency_token="tok-start")
    retry = await b.twilio.post(START_PATH, params, idempotency_token="tok-start")
    record = await a.store.get_call(call)
    assert record is not None
    assert [e["type"] for e in record["events"] if e.get("type") == "legacy.resumed"] == ["legacy.resumed"]
    assert first.status_code == retry.status_code == 200 and retry.text == first.text


async def test_a_retry_on_another_replica_waits_out_the_writes_behind_the_first_attempts_reply(
    legacy: HarnessFactory, shared_state_url: str
) -> None:
    """The retry waited one turn deadline for the first attempt's answer, but that attempt may take its
    deadline and then up to 1 s each for its history and counter writes: a slow store made the retry run the
    turn again (the model asked twice, two records of one utterance)."""
    a = await legacy(
        state_url=shared_state_url,
        wrap_store=lambda store: _StuckWrites(store),
        legacy_turn_deadline_seconds=1.0,
    )
    b = await legacy(state_url=shared_state_url, legacy_turn_deadline_seconds=1.0)
    call = "CA" + "9" * 32
    greeting = await b.twilio.incoming_call(call)
    assert greeting.gather is not None
    params = a.twilio.params(call, SpeechResult="I'd like to book a cleaning", Confidence="0.92")

    async def retry_soon() -> Any:
        await asyncio.sleep(0.2)  # the first attempt has claimed the turn
        return await b.twilio.post(TURN_PATH, params, idempotency_token="tok-slow")

    first, retry = await asyncio.gather(
        a.twilio.post(TURN_PATH, params, idempotency_token="tok-slow"), retry_soon()
    )
    assert first.status_code == retry.status_code == 200
    assert a.openai is b.openai and len(a.openai.requests) == 1
    assert retry.text == first.text and len(Twiml.parse(retry).plays) == 1, (first.text, retry.text)
