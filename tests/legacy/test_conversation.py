"""A whole legacy call over real sockets: greeting, three turns, audio, history and records."""

from __future__ import annotations

import asyncio

from emulators.twilio.audio import read_wav
from tests.legacy.conftest import HarnessFactory
from tests.legacy.twilio_script import Twiml

CALL = "CA" + "1" * 32


async def test_greeting_and_three_turns(legacy: HarnessFactory) -> None:
    h = await legacy()
    greeting = await h.twilio.incoming_call(CALL)
    assert greeting.status == 200
    assert len(greeting.plays) == 1 and not greeting.says
    assert greeting.gather == {
        "action": f"{h.url}/legacy/turn",
        "actionOnEmptyResult": "true",
        "hints": "appointment, cancel, reschedule, opening hours",
        "input": "speech",
        "language": "en-US",
        "method": "POST",
        "speechTimeout": "auto",
    }
    # The SAS query string is escaped in the XML and intact once parsed.
    assert "&amp;sp=r" in greeting.text or "&amp;sig=" in greeting.text
    assert "sig=" in greeting.plays[0] and "sp=r" in greeting.plays[0]

    audio = read_wav(await h.twilio.fetch_audio(greeting.plays[0]))
    (synthesis,) = h.speech.syntheses
    assert synthesis.text == h.profile.greeting
    assert synthesis.voice == h.profile.voice
    assert (audio.format_code, audio.channels, audio.sample_rate, audio.bits_per_sample) == (7, 1, 8000, 8)
    assert len(audio.data) == synthesis.duration_ms * 8 > 0

    said = ["I'd like to book a cleaning", "Tuesday morning works", "Thanks, that's all"]
    twiml = greeting
    replies = []
    for text in said:
        twiml = await h.twilio.say(twiml, CALL, text)
        assert twiml.status == 200 and len(twiml.plays) == 1 and twiml.gather is not None, twiml.text
        assert not twiml.says
        wav = read_wav(await h.twilio.fetch_audio(twiml.plays[0]))
        synthesis = h.speech.syntheses[-1]
        assert wav.format_code == 7 and wav.sample_rate == 8000
        assert len(wav.data) == synthesis.duration_ms * 8 > 0
        replies.append(synthesis.text)

    # History went to the model: the third request carries the whole conversation so far.
    requests = h.openai.requests
    assert len(requests) == 3
    last = requests[-1].body
    assert last["stream"] is True and last["stream_options"] == {"include_usage": True}
    assert last["max_tokens"] == h.profile.max_output_tokens
    assert last["temperature"] == h.profile.temperature
    assert [m["role"] for m in last["messages"]] == [
        "system",
        "assistant",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    assert last["messages"][0]["content"] == h.profile.instructions
    assert [m["content"] for m in last["messages"][1:]] == [
        h.profile.greeting,
        said[0],
        replies[0],
        said[1],
        replies[1],
        said[2],
    ]

    turns = await h.list_turns(CALL)
    assert [t["turn"] for t in turns] == [0, 1, 2, 3]
    assert all(t["pipeline"] == "legacy" and t["error"] is None for t in turns)
    assert turns[0]["assistant_text"] == h.profile.greeting
    assert {"tts", "upload", "server_total"} <= set(turns[0]["stages"])
    for turn, user, reply in zip(turns[1:], said, replies, strict=True):
        assert turn["user_text"] == user and turn["assistant_text"] == reply
        assert {"llm_first_token", "llm_total", "tts", "upload", "server_total"} <= set(turn["stages"])
        assert turn["response_ms"] == turn["stages"]["server_total"] > 0
        assert turn["usage"]["completion_tokens"] > 0 and turn["usage"]["prompt_tokens"] > 0
        assert turn["usage"]["tts_chars"] == len(reply)
    # ...and into Prometheus under the shared stage names.
    assert h.sample("voice_router_turn_latency_seconds_count", pipeline="legacy", stage="llm_total") == 3
    assert h.sample("voice_router_turn_latency_seconds_count", pipeline="legacy", stage="server_total") == 4
    # The router wrote the call record; the pipeline never replaced it.
    call = await h.store.get_call(CALL)
    assert call is not None and call["pipeline"] == "legacy"


async def test_greeting_is_synthesised_once_and_reused(legacy: HarnessFactory) -> None:
    h = await legacy()
    first = await h.twilio.incoming_call("CA" + "a" * 32)
    second = await h.twilio.incoming_call("CA" + "b" * 32)
    assert [s.text for s in h.speech.syntheses] == [h.profile.greeting]
    assert first.plays[0].split("?")[0] == second.plays[0].split("?")[0]
    assert "/phrases/" in first.plays[0]
    read_wav(await h.twilio.fetch_audio(second.plays[0]))
    turns = await h.list_turns("CA" + "b" * 32)
    assert turns[0]["turn"] == 0 and "tts" not in turns[0]["stages"]


async def test_history_is_capped(legacy: HarnessFactory) -> None:
    h = await legacy(profile_legacy={"max_history_messages": 4})
    twiml = await h.twilio.incoming_call(CALL)
    for i in range(4):
        twiml = await h.twilio.say(twiml, CALL, f"utterance number {i}")
    messages = h.openai.requests[-1].body["messages"]
    assert messages[0]["role"] == "system"
    assert len(messages) == 1 + 4 + 1
    assert messages[-1]["content"] == "utterance number 3"
    assert messages[1]["content"] == "utterance number 1"
    assert len(await h.store.get_history(CALL)) == 4


async def test_silence_reprompts_then_says_goodbye(legacy: HarnessFactory) -> None:
    h = await legacy()
    twiml = await h.twilio.incoming_call(CALL)
    reprompt = await h.twilio.say(twiml, CALL, None)
    assert reprompt.gather is not None and len(reprompt.plays) == 1 and not reprompt.hangup
    assert h.speech.syntheses[-1].text == h.profile.legacy.reprompt
    # A real utterance in between resets the count of empty turns.
    spoken = await h.twilio.say(reprompt, CALL, "hello?")
    again = await h.twilio.say(spoken, CALL, "")
    assert again.gather is not None and not again.hangup
    goodbye = await h.twilio.say(again, CALL, None)
    assert goodbye.hangup and goodbye.gather is None and len(goodbye.plays) == 1
    assert h.speech.syntheses[-1].text == h.profile.legacy.goodbye
    assert len(h.openai.requests) == 1  # silence never reaches the model
    turns = await h.list_turns(CALL)
    assert [t["turn"] for t in turns] == [0, 1]
    events = (await h.store.get_call(CALL) or {}).get("events", [])
    assert [e["empty_turns"] for e in events if e["type"] == "legacy.no_speech"] == [1, 1, 2]
    assert h.sample("voice_router_silence_hang_ups_total", pipeline="legacy") == 1
    record = await h.store.get_call(CALL) or {}
    assert (record.get("ended_by"), record.get("end_reason")) == ("agent", "silence")


async def test_call_moved_from_realtime_resumes_the_conversation(legacy: HarnessFactory) -> None:
    h = await legacy()
    call = "CA" + "5" * 32
    await h.store.append_history(
        call,
        [{"role": "user", "content": "I want to cancel"}, {"role": "assistant", "content": "Which day?"}],
        20,
    )
    await h.store.append_turn(
        {"call_sid": call, "pipeline": "realtime", "turn": 2, "at": 1.0, "stages": {}, "usage": {}}
    )
    resumed = await h.twilio.post("/legacy/start", h.twilio.params(call))
    from tests.legacy.twilio_script import Twiml

    twiml = Twiml.parse(resumed)
    assert twiml.status == 200 and len(twiml.plays) == 1 and twiml.gather is not None
    assert [s.text for s in h.speech.syntheses] == [h.settings.legacy_resume_phrase]
    reply = await h.twilio.say(twiml, call, "Friday")
    assert len(reply.plays) == 1
    messages = h.openai.requests[-1].body["messages"]
    assert [m["content"] for m in messages[1:]] == ["I want to cancel", "Which day?", "Friday"]
    legacy_turns = [t for t in await h.list_turns(call) if t["pipeline"] == "legacy"]
    assert [t["turn"] for t in legacy_turns] == [3]


async def test_a_moved_call_whose_caller_never_heard_the_agent_is_greeted(legacy: HarnessFactory) -> None:
    """Voice Live unreachable at call start (an outage) or a full worker: the caller heard nothing of realtime.
    Legacy opened with "Sorry about that. Let's carry on." and never greeted them; the bridge now asks for
    the greeting (``?greet=1``), which the next turn's model sees, as for a call that began on legacy."""
    h = await legacy()
    call = "CA" + "7" * 32
    await h.store.append_turn(
        {"call_sid": call, "pipeline": "realtime", "turn": 0, "at": 1.0, "stages": {}, "usage": {}}
    )
    from tests.legacy.twilio_script import Twiml

    greeted = Twiml.parse(await h.twilio.post("/legacy/start?greet=1", h.twilio.params(call)))
    assert greeted.status == 200 and len(greeted.plays) == 1 and greeted.gather is not None
    assert [s.text for s in h.speech.syntheses] == [h.profile.greeting]
    reply = await h.twilio.say(greeted, call, "Can I book for Friday?")
    assert len(reply.plays) == 1
    messages = h.openai.requests[-1].body["messages"]
    assert [(m["role"], m["content"]) for m in messages[1:]] == [
        ("assistant", h.profile.greeting),
        ("user", "Can I book for Friday?"),
    ]
    assert [t["turn"] for t in await h.list_turns(call) if t["pipeline"] == "legacy"] == [1]


async def test_a_moved_call_numbers_its_turns_after_the_realtime_turn_written_as_its_stream_ended(
    legacy: HarnessFactory,
) -> None:
    """The bridge writes its last turn when its stream ends, which Twilio does as it fetches /legacy/start:
    that turn is often stored just after the resume. The caller's first legacy turn, seconds later, must
    still come after it, not take its number."""
    h = await legacy()
    call = "CA" + "6" * 32
    await h.store.append_history(
        call,
        [{"role": "user", "content": "I want to cancel"}, {"role": "assistant", "content": "Which day?"}],
        20,
    )
    await h.store.append_turn(
        {"call_sid": call, "pipeline": "realtime", "turn": 1, "at": 1.0, "stages": {}, "usage": {}}
    )
    from tests.legacy.twilio_script import Twiml

    resumed = Twiml.parse(await h.twilio.post("/legacy/start", h.twilio.params(call)))
    # The realtime turn the caller's loss cut short lands now, after the resume read the turns.
    await h.store.append_turn(
        {"call_sid": call, "pipeline": "realtime", "turn": 2, "at": 2.0, "stages": {}, "usage": {}}
    )
    await h.twilio.say(resumed, call, "Friday")
    turns = await h.list_turns(call)
    assert sorted((t["turn"], t["pipeline"]) for t in turns) == [
        (1, "realtime"),
        (2, "realtime"),
        (3, "legacy"),
    ]


async def test_turn_for_a_call_with_no_stored_state_assumes_the_greeting(legacy: HarnessFactory) -> None:
    # Every legacy call starts with the greeting, which is implied rather than stored: a turn whose call
    # left nothing in the store (a lost store, another replica's call) is turn 1 after the greeting.
    h = await legacy()
    call = "CA" + "9" * 32
    from tests.legacy.twilio_script import Twiml

    twiml = Twiml.parse(await h.twilio.post("/legacy/turn", h.twilio.params(call, SpeechResult="Hi there")))
    assert twiml.status == 200 and len(twiml.plays) == 1 and twiml.gather is not None
    messages = h.openai.requests[-1].body["messages"]
    assert [(m["role"], m["content"]) for m in messages[1:]] == [
        ("assistant", h.profile.greeting),
        ("user", "Hi there"),
    ]
    turns = await h.list_turns(call)
    assert [(t["turn"], t["user_text"], t["error"]) for t in turns] == [(1, "Hi there", None)]
    assert turns[0]["stt_confidence"] is None  # this request sent no Confidence


async def test_a_gather_turn_records_twilios_confidence(legacy: HarnessFactory) -> None:
    """Twilio sends Confidence with SpeechResult (the contract lists it); it was dropped."""
    h = await legacy()
    call = "CA" + "7" * 32
    greeting = await h.twilio.incoming_call(call)
    await h.twilio.say(greeting, call, "Tuesday please")  # Confidence 0.92, as Twilio sends it
    await h.twilio.post("/legacy/turn", h.twilio.params(call, SpeechResult="Noon", Confidence="high"))
    turns = [t for t in await h.list_turns(call) if t["turn"] >= 1]
    assert [(t["user_text"], t["stt_confidence"]) for t in turns] == [
        ("Tuesday please", 0.92),
        ("Noon", None),
    ]


async def test_warm_phrases_prepares_every_fixed_phrase(legacy: HarnessFactory) -> None:
    import asyncio

    h = await legacy()
    assert h.server.loop is not None
    warm = asyncio.run_coroutine_threadsafe(h.pipeline.warm_phrases(), h.server.loop)
    await asyncio.wrap_future(warm)
    expected = {
        h.profile.greeting,
        h.profile.legacy.reprompt,
        h.profile.legacy.goodbye,
        h.settings.legacy_resume_phrase,
    }
    assert {s.text for s in h.speech.syntheses} == expected
    greeting = await h.twilio.incoming_call(CALL)
    assert len(greeting.plays) == 1 and len(h.speech.syntheses) == len(expected)  # served from the cache
    (turn0,) = await h.list_turns(CALL)
    assert "tts" not in turn0["stages"] and turn0["error"] is None


async def test_startup_warms_the_phrase_cache_so_the_first_greeting_needs_no_synthesis(
    legacy: HarnessFactory,
) -> None:
    h = await legacy(legacy_warm_phrases_on_start=True)
    for _ in range(300):
        if h.pipeline.is_warm:
            break
        await asyncio.sleep(0.05)
    assert h.pipeline.is_warm
    warmed = {record.text for record in h.speech.syntheses}
    assert h.profile.greeting in warmed and h.profile.legacy.reprompt in warmed
    before = len(h.speech.syntheses)
    twiml = Twiml.parse(await h.twilio.post("/twilio/voice", h.twilio.params("CA" + "e" * 32)))
    assert len(twiml.plays) == 1
    assert len(h.speech.syntheses) == before
