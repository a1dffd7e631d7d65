"""Item 6: any stage failing or running late → a spoken apology and a new <Gather>, never dead air or a 5xx."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import SecretStr

from emulators.azurite import connection_string
from emulators.runner import free_port
from router.store.base import StateStore
from tests.legacy.conftest import HarnessFactory, LegacyHarness
from tests.legacy.twilio_script import Twiml

CALL = "CA" + "f" * 32


async def _failed_turn(h: LegacyHarness, greeting: Twiml) -> tuple[Twiml, dict[str, Any]]:
    twiml = await h.twilio.say(greeting, CALL, "Can I book for Monday?")
    assert twiml.status == 200, twiml.text
    assert twiml.says == [h.profile.legacy.apology] and not twiml.plays
    assert twiml.gather is not None and twiml.gather["action"] == f"{h.url}/legacy/turn"
    turns = await h.list_turns(CALL)
    assert turns[-1]["turn"] == 1 and turns[-1]["user_text"] == "Can I book for Monday?"
    # The router's call record survives the failure.
    call = await h.store.get_call(CALL)
    assert call is not None and call["pipeline"] == "legacy"
    return twiml, turns[-1]


@pytest.mark.parametrize(
    ("faults", "error_part"),
    [
        ({"rate_limit_next": 1}, "RateLimitError"),
        ({"server_error_next": 1}, "InternalServerError"),
        ({"midstream_error_next": 1, "midstream_error_after": 1}, "APIError"),
    ],
    ids=["429", "500", "midstream"],
)
async def test_llm_failure_apologises(
    legacy: HarnessFactory, faults: dict[str, Any], error_part: str
) -> None:
    h = await legacy()
    greeting = await h.twilio.incoming_call(CALL)
    h.openai.set_faults(**faults)
    twiml, turn = await _failed_turn(h, greeting)
    assert turn["error_stage"] == "llm" and error_part in turn["error"]
    assert "tts" not in turn["stages"] and turn["response_ms"] > 0
    assert h.sample("voice_router_turn_failures_total", pipeline="legacy", stage="llm") == 1
    # The next turn works again and the failed one left no half-written history.
    recovered = await h.twilio.say(twiml, CALL, "Monday at nine")
    assert len(recovered.plays) == 1
    roles = [m["role"] for m in h.openai.requests[-1].body["messages"]]
    assert roles == ["system", "assistant", "user"]
    assert [t["turn"] for t in await h.list_turns(CALL)] == [0, 1, 2]


@pytest.mark.parametrize(
    ("faults", "error_part"),
    [
        (
            {"close_next": 1, "close_code": 1011, "close_reason": "Internal service error."},
            "Internal service error",
        ),
        ({"stall_next": 1}, "SpeechError"),
    ],
    ids=["closed", "stalled"],
)
async def test_speech_failure_apologises(
    legacy: HarnessFactory, faults: dict[str, Any], error_part: str
) -> None:
    h = await legacy()
    greeting = await h.twilio.incoming_call(CALL)
    h.speech.set_faults(**faults)
    _, turn = await _failed_turn(h, greeting)
    assert turn["error_stage"] == "tts" and error_part in turn["error"]
    assert "llm_total" in turn["stages"] and "upload" not in turn["stages"]
    assert h.sample("voice_router_turn_failures_total", pipeline="legacy", stage="tts") == 1


async def test_blob_failure_apologises_and_keeps_the_record(legacy: HarnessFactory) -> None:
    dead = connection_string(free_port())  # nothing listens there: connection refused
    h = await legacy(azure_storage_connection_string=SecretStr(dead))
    greeting = await h.twilio.incoming_call(CALL)
    # Even the greeting cannot be uploaded: it is spoken with <Say> instead of silence.
    assert greeting.says == [h.profile.greeting] and greeting.gather is not None
    _, turn = await _failed_turn(h, greeting)
    assert turn["error_stage"] == "upload"
    assert {"llm_total", "tts"} <= set(turn["stages"])
    turns = await h.list_turns(CALL)
    assert turns[0]["error_stage"] == "upload"
    assert h.sample("voice_router_turn_failures_total", pipeline="legacy", stage="upload") == 2


async def test_late_llm_hits_the_turn_deadline(legacy: HarnessFactory) -> None:
    h = await legacy(legacy_turn_deadline_seconds=1.0)
    greeting = await h.twilio.incoming_call(CALL)
    h.openai.set_faults(first_token_delay_s=4.0)
    _, turn = await _failed_turn(h, greeting)
    assert turn["error_stage"] == "llm" and "deadline" in turn["error"]
    assert h.sample("voice_router_turn_failures_total", pipeline="legacy", stage="llm") == 1


async def test_unconfigured_services_still_answer(legacy: HarnessFactory) -> None:
    h = await legacy(openai_base_url="", openai_api_key=SecretStr(""))
    greeting = await h.twilio.incoming_call(CALL)
    _, turn = await _failed_turn(h, greeting)
    assert turn["error_stage"] == "llm" and "not configured" in turn["error"]


class _SlowHistoryAck:
    """A store whose history write commits at once but is acknowledged late (a busy Redis, say)."""

    def __init__(self, inner: StateStore, ack_delay_s: float) -> None:
        self._inner = inner
        self._ack_delay_s = ack_delay_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def append_history(self, call_sid: str, messages: list[dict[str, Any]], cap: int) -> None:
        await self._inner.append_history(call_sid, messages, cap)
        await asyncio.sleep(self._ack_delay_s)


async def test_a_reply_stored_in_the_history_is_the_reply_the_caller_hears(legacy: HarnessFactory) -> None:
    """The turn deadline used to cover the history write: a late acknowledgement made the caller hear the
    apology while the history said the reply had been given, and the next turn went on from an unheard
    answer."""
    h = await legacy(
        wrap_store=lambda store: _SlowHistoryAck(store, 1.5),
        legacy_turn_deadline_seconds=1.0,
    )
    call = "CA" + "8" * 32
    greeting = await h.twilio.incoming_call(call)
    twiml = await h.twilio.say(greeting, call, "Can I book for Monday?")
    history = await h.store.get_history(call)
    assert len(twiml.plays) == 1 and not twiml.says  # the reply, not the apology
    assert [message["role"] for message in history] == ["user", "assistant"]


async def test_a_silent_caller_is_reprompted_not_apologised_to_when_the_phrase_outlasts_the_deadline(
    legacy: HarnessFactory,
) -> None:
    """The empty turn ran inside the caller turn's deadline as well as under its own: when synthesising the
    re-prompt ran past it, the outer deadline won, so a silent caller heard "I'm having trouble", the run of
    empty turns went back to 0 (a silent line during a slow TTS was never hung up on) and a failed caller
    turn was recorded for silence."""
    h = await legacy(legacy_turn_deadline_seconds=1.0, legacy_tts_first_chunk_timeout_ms=3000)
    greeting = await h.twilio.incoming_call(CALL)
    h.speech.set_faults(tts_first_chunk_delay_s=2.0)  # Speech answers, but later than a turn may wait
    reprompt = await h.twilio.say(greeting, CALL, None)
    assert reprompt.says == [h.profile.legacy.reprompt] and reprompt.gather is not None, reprompt.text
    goodbye = await h.twilio.say(reprompt, CALL, None)
    assert goodbye.says == [h.profile.legacy.goodbye] and goodbye.hangup, goodbye.text
    assert [t["turn"] for t in await h.list_turns(CALL)] == [0]
    assert h.sample("voice_router_turn_failures_total", pipeline="legacy", stage="deadline") == 0


class _StuckWrites:
    """A store whose history and counter writes never answer (a Redis that accepts and then goes quiet) or
    fail with something other than an outage."""

    def __init__(self, inner: StateStore, *, fail: bool = False) -> None:
        self._inner = inner
        self._fail = fail
        self.stuck = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def _stuck(self) -> None:
        if self._fail:
            raise ValueError("a value the store cannot encode")
        await self.stuck.wait()

    async def append_history(self, call_sid: str, messages: list[dict[str, Any]], cap: int) -> None:
        await self._stuck()

    async def set_value(self, key: str, value: dict[str, Any], ttl: float = 86_400) -> None:
        await self._stuck()


class _StuckCallWrites(_StuckWrites):
    """Its call record and call event writes never answer either."""

    async def append_call_event(self, call_sid: str, event: dict[str, Any]) -> None:
        await self._stuck()

    async def merge_call(self, call_sid: str, fields: dict[str, Any]) -> None:
        await self._stuck()


async def test_a_store_that_stops_answering_holds_neither_a_resume_nor_an_empty_turn(
    legacy: HarnessFactory,
) -> None:
    """The resume of a moved call and a silent turn wrote their call event (and the hang-up its call record)
    with no bound: a store that accepted and went quiet held the answer until Twilio gave up (15 s) and the
    caller heard Twilio's application error."""
    h = await legacy(wrap_store=lambda store: _StuckCallWrites(store), profile_legacy={"max_empty_turns": 1})
    call = "CA" + "8" * 32
    resumed = await asyncio.wait_for(h.twilio.post("/legacy/start", h.twilio.params(call)), 8)
    assert resumed.status_code == 200 and h.settings.legacy_resume_phrase in [
        s.text for s in h.speech.syntheses
    ]
    goodbye = await asyncio.wait_for(h.twilio.say(Twiml.parse(resumed), call, None), 8)
    assert goodbye.hangup, goodbye.text


@pytest.mark.parametrize("fail", [False, True], ids=["stuck", "failing"])
async def test_history_and_counter_writes_after_the_reply_neither_hold_it_nor_replace_it(
    legacy: HarnessFactory, fail: bool
) -> None:
    """The writes after the turn's deadline were unbounded: a store that stopped answering held the reply past
    Twilio's 15 s (the caller would hear Twilio's application error). And a store error other than an outage
    turned the uploaded reply into the apology."""
    h = await legacy(
        wrap_store=lambda store: _StuckWrites(store, fail=fail), legacy_turn_deadline_seconds=2.0
    )
    call = "CA" + "6" * 32
    greeting = await h.twilio.incoming_call(call)
    twiml = await asyncio.wait_for(h.twilio.say(greeting, call, "Can I book for Monday?"), 10)
    assert len(twiml.plays) == 1 and not twiml.says, twiml.text  # the reply, not the apology
    operation = "append_history" if fail else "append_history_timeout"
    assert h.sample("voice_router_store_errors_total", operation=operation) == 1
