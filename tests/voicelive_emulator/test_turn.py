"""A spoken turn end to end: VAD events in appended-audio time, the response sequence, audio, transcripts."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pytest

from emulators.speechlike import silence_ulaw, speechlike_pcm16, speechlike_ulaw
from emulators.voicelive import Faults, VoiceLiveEmulator, VoiceLiveEmulatorConfig
from emulators.voicelive.config import DEFAULT_REPLIES, DEFAULT_USER_TRANSCRIPTS
from emulators.voicelive.vad import EnergyVad, SpeechStarted
from tests.voicelive_emulator.client import audio_bytes, open_client, types, ulaw_session

TURN_ORDER_HEAD = [
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "conversation.item.created",
    "response.created",
    "rate_limits.updated",
    "response.output_item.added",
    "conversation.item.created",
    "response.content_part.added",
]
TURN_ORDER_TAIL = [
    "response.audio.done",
    "response.audio_transcript.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.done",
]


async def test_spoken_turn_event_order_and_audio_times(emulator: VoiceLiveEmulator) -> None:
    client = await ulaw_session(emulator)
    await client.speak(1000, lead_ms=600, tail_ms=700)
    events = await client.until("response.done")
    names = types(events)
    assert names[: len(TURN_ORDER_HEAD)] == TURN_ORDER_HEAD
    assert names[-len(TURN_ORDER_TAIL) :] == TURN_ORDER_TAIL
    middle = set(names[len(TURN_ORDER_HEAD) : -len(TURN_ORDER_TAIL)])
    assert middle == {"response.audio.delta", "response.audio_transcript.delta"}

    started, stopped, committed, user_item = events[:4]
    # speech begins at 600 ms of appended audio; prefix padding 300 ms is included
    assert started["audio_start_ms"] == 600 - 300
    # speech ends at 1600 ms; the stop is reported after 500 ms of silence
    assert stopped["audio_end_ms"] == 1600 + 500
    assert started["item_id"] == stopped["item_id"] == committed["item_id"] == user_item["item"]["id"]
    assert committed["previous_item_id"] is None
    assert user_item["item"]["role"] == "user"
    assert user_item["item"]["content"][0]["type"] == "input_audio"

    created = events[4]["response"]
    assert created["status"] == "in_progress" and created["output"] == []
    item = events[6]["item"]
    assert item["role"] == "assistant" and item["status"] == "in_progress"
    assert events[7]["previous_item_id"] == user_item["item"]["id"]
    for event in events:
        if event["type"].startswith("response.audio"):
            assert event["response_id"] == created["id"]
            assert event["item_id"] == item["id"]
            assert (event["output_index"], event["content_index"]) == (0, 0)

    done = events[-1]["response"]
    assert done["status"] == "completed" and done["status_details"] is None
    usage = done["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["input_token_details"]["audio_tokens"] > 0
    assert usage["output_token_details"]["audio_tokens"] > 0
    assert set(usage["input_token_details"]) == {"cached_tokens", "text_tokens", "audio_tokens"}
    transcript = "".join(e["delta"] for e in events if e["type"] == "response.audio_transcript.delta")
    assert transcript == DEFAULT_REPLIES[0]
    assert events[-4]["transcript"] == DEFAULT_REPLIES[0]
    assert done["output"][0]["content"][0] == {"type": "audio", "transcript": DEFAULT_REPLIES[0]}
    await client.ws.close()


async def test_ulaw_reply_length_follows_text(emulator: VoiceLiveEmulator) -> None:
    client = await ulaw_session(emulator)
    await client.speak()
    events = await client.until("response.done")
    audio = audio_bytes(events)
    assert len(audio) == len(DEFAULT_REPLIES[0]) * 65 * 8  # 8 bytes per ms of μ-law
    deltas = [e for e in events if e["type"] == "response.audio.delta"]
    assert all(len(base64.b64decode(d["delta"])) == 800 for d in deltas[:-1])  # 100 ms chunks
    await client.ws.close()


async def test_second_turn_uses_next_script_line_and_appended_time_continues(
    emulator: VoiceLiveEmulator,
) -> None:
    client = await ulaw_session(emulator, input_audio_transcription={"model": "azure-speech"})
    await client.speak(500, tail_ms=600)
    first = await client.until("response.done")
    await client.speak(500, tail_ms=600, seed=1)
    second = await client.until("response.done")
    transcript = "".join(e["delta"] for e in second if e["type"] == "response.audio_transcript.delta")
    assert transcript == DEFAULT_REPLIES[1]
    started = next(e for e in second if e["type"] == "input_audio_buffer.speech_started")
    assert started["audio_start_ms"] == 1100 - 300  # the second utterance starts after 1100 ms appended
    completions = [
        e for e in first + second if e["type"] == "conversation.item.input_audio_transcription.completed"
    ]
    assert [c["transcript"] for c in completions] == list(DEFAULT_USER_TRANSCRIPTS[:2])
    assert emulator.sessions[0].appended_audio_ms == 2200
    await client.ws.close()


async def test_no_transcription_event_when_transcription_is_off(emulator: VoiceLiveEmulator) -> None:
    client = await ulaw_session(emulator)
    await client.speak()
    events = await client.until("response.done")
    assert "conversation.item.input_audio_transcription.completed" not in types(events)
    await client.ws.close()


async def test_pcm16_in_and_out(emulator: VoiceLiveEmulator) -> None:
    client = await open_client(emulator)  # defaults: pcm16 24 kHz both ways
    speech = speechlike_pcm16(800, sample_rate=24000).astype("<i2").tobytes()
    silence = np.zeros(24 * 700, dtype="<i2").tobytes()
    await client.append(speech + silence, frame=960)  # 20 ms frames
    events = await client.until("response.done")
    assert events[0]["audio_start_ms"] == 0
    assert events[1]["audio_end_ms"] == 800 + 500
    audio = audio_bytes(events)
    assert len(audio) == len(DEFAULT_REPLIES[0]) * 65 * 48  # 24 kHz × 2 bytes
    assert events[4]["response"]["output_audio_format"] == "pcm16"
    await client.ws.close()


async def test_pcm16_at_16khz_input(emulator: VoiceLiveEmulator) -> None:
    client = await open_client(emulator)
    await client.update(input_audio_sampling_rate=16000, output_audio_format="pcm16_16000hz")
    speech = speechlike_pcm16(400, sample_rate=16000).astype("<i2").tobytes()
    await client.append(b"\x00\x00" * 16 * 200 + speech + b"\x00\x00" * 16 * 600, frame=640)
    events = await client.until("response.done")
    assert events[0]["audio_start_ms"] == 0  # 200 ms lead minus 300 ms padding, clamped
    assert events[1]["audio_end_ms"] == 600 + 500
    assert len(audio_bytes(events)) == len(DEFAULT_REPLIES[0]) * 65 * 32
    await client.ws.close()


async def test_pcm16_at_a_rate_of_fractional_bytes_per_ms_sends_the_whole_reply(
    emulator: VoiceLiveEmulator,
) -> None:
    """22.05 kHz is 44.1 bytes per ms: the deltas were cut at 44 bytes per ms (4,400 instead of 4,410 per
    100 ms), so the reply's tail was never sent and the audio the session counted as sent fell short."""
    client = await open_client(emulator)
    await client.update(output_audio_format="pcm16_22050hz")
    speech = speechlike_pcm16(800, sample_rate=24000).astype("<i2").tobytes()
    await client.append(speech + np.zeros(24 * 700, dtype="<i2").tobytes(), frame=960)
    events = await client.until("response.done")
    duration_ms = len(DEFAULT_REPLIES[0]) * 65
    assert len(audio_bytes(events)) == duration_ms * 22050 // 1000 * 2
    deltas = [e for e in events if e["type"] == "response.audio.delta"]
    assert all(len(base64.b64decode(d["delta"])) == 4410 for d in deltas[:-1])
    item_id = deltas[0]["item_id"]
    await client.send(
        {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": duration_ms,
        }
    )
    answer = await client.until("conversation.item.truncated")
    assert answer[-1]["audio_end_ms"] == duration_ms, answer
    await client.ws.close()


async def test_silence_alone_triggers_nothing(emulator: VoiceLiveEmulator) -> None:
    client = await ulaw_session(emulator)
    await client.append(silence_ulaw(2000))
    await client.send({"type": "input_audio_buffer.clear"})
    assert (await client.recv())["type"] == "input_audio_buffer.cleared"
    await client.ws.close()


async def test_turn_detection_off_needs_manual_commit(emulator: VoiceLiveEmulator) -> None:
    client = await ulaw_session(emulator, turn_detection=None)
    await client.speak(400, tail_ms=600)
    await client.send({"type": "input_audio_buffer.commit"})
    committed, created = await client.recv(), await client.recv()
    assert committed["type"] == "input_audio_buffer.committed"
    assert created["type"] == "conversation.item.created" and created["item"]["id"] == committed["item_id"]
    await client.send({"type": "input_audio_buffer.commit", "event_id": "c2"})
    error = await client.recv()
    assert error["error"]["code"] == "input_audio_buffer_commit_empty"
    assert error["error"]["event_id"] == "c2"
    await client.send({"type": "response.create"})
    events = await client.until("response.done")
    assert events[0]["type"] == "response.created"
    await client.ws.close()


async def test_create_response_false_commits_without_responding(emulator: VoiceLiveEmulator) -> None:
    client = await ulaw_session(emulator, turn_detection={"type": "server_vad", "create_response": False})
    await client.speak()
    events = await client.until("conversation.item.created")
    assert types(events)[-2] == "input_audio_buffer.committed"
    await client.send({"type": "conversation.item.retrieve", "item_id": events[-1]["item"]["id"]})
    assert (await client.recv())["type"] == "conversation.item.retrieved"
    await client.ws.close()


async def test_agent_greets_first(emulator: VoiceLiveEmulator) -> None:
    client = await ulaw_session(emulator)
    await client.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "system",
                "content": [{"type": "input_text", "text": "Greet."}],
            },
        }
    )
    created = await client.recv()
    assert created["type"] == "conversation.item.created" and created["previous_item_id"] is None
    await client.send({"type": "response.create", "response": {"instructions": "Say hello"}})
    events = await client.until("response.done")
    assert events[0]["type"] == "response.created"
    assert events[3]["previous_item_id"] == created["item"]["id"]
    assert len(audio_bytes(events)) == len(DEFAULT_REPLIES[0]) * 65 * 8
    await client.ws.close()


async def test_items_create_retrieve_delete(emulator: VoiceLiveEmulator) -> None:
    client = await ulaw_session(emulator)
    # an output needs its call in the conversation (test_tools.py covers the orphan error)
    call = {"type": "function_call", "name": "f", "call_id": "c1", "arguments": "{}"}
    await client.send({"type": "conversation.item.create", "item": call})
    assert (await client.recv())["type"] == "conversation.item.created"
    await client.send(
        {
            "type": "conversation.item.create",
            "item": {"id": "out1", "type": "function_call_output", "call_id": "c1", "output": "{}"},
        }
    )
    created = await client.recv()
    assert created["item"]["id"] == "out1" and created["item"]["type"] == "function_call_output"
    await client.send({"type": "conversation.item.retrieve", "item_id": "out1"})
    assert (await client.recv())["item"]["call_id"] == "c1"
    await client.send({"type": "conversation.item.delete", "item_id": "out1"})
    assert await client.recv() == {
        **client.received[-1],
        "type": "conversation.item.deleted",
        "item_id": "out1",
    }
    await client.send({"type": "conversation.item.retrieve", "item_id": "out1"})
    error = await client.recv()
    assert error["error"]["code"] == "item_not_found"
    await client.send({"type": "conversation.item.create", "item": {"type": "banana"}})
    assert (await client.recv())["error"]["param"] == "item.type"
    await client.ws.close()


@pytest.mark.parametrize(
    ("extra", "item_extra", "param"),
    [({"previous_item_id": ["x"]}, {}, "previous_item_id"), ({}, {"id": ["x"]}, "item.id")],
)
async def test_item_create_with_non_string_ids_is_invalid_type(
    emulator: VoiceLiveEmulator, extra: dict[str, Any], item_extra: dict[str, Any], param: str
) -> None:
    """A list where an id belongs is a typed invalid_request_error, not a crash (lists are unhashable)."""
    client = await ulaw_session(emulator)
    item = {"type": "message", "role": "user", "content": [], **item_extra}
    await client.send({"type": "conversation.item.create", "event_id": "c1", "item": item, **extra})
    error = (await client.recv())["error"]
    assert (error["type"], error["code"], error["param"], error["event_id"]) == (
        "invalid_request_error",
        "invalid_type",
        param,
        "c1",
    )
    await client.send({"type": "conversation.item.create", "item": {**item, "id": "ok1"}})
    assert (await client.recv())["item"]["id"] == "ok1"
    await client.ws.close()


async def test_client_events_are_recorded(emulator: VoiceLiveEmulator) -> None:
    client = await ulaw_session(emulator)
    await client.speak(300, tail_ms=500)  # the last append completes the turn
    await client.until("response.done")
    record = emulator.sessions[0]
    assert list(record.client_events) == ["session.update"]
    assert record.append_count == (300 + 500) // 20
    assert record.last_client_event["input_audio_buffer.append"]["audio_bytes"] == 160
    assert list(record.responses.values()) == ["completed"]
    assert "response.done" in record.server_events
    await client.ws.close()


async def test_each_session_starts_at_the_top_of_the_script(emulator: VoiceLiveEmulator) -> None:
    for _ in range(2):
        client = await ulaw_session(emulator)
        await client.send({"type": "response.create"})
        events = await client.until("response.done")
        assert events[-1]["response"]["output"][0]["content"][0]["transcript"] == DEFAULT_REPLIES[0]
        await client.ws.close()


async def test_configured_script_and_audio_sizing() -> None:
    config = VoiceLiveEmulatorConfig(
        replies=("Hi there.", "Bye."),
        user_transcripts=("hello",),
        ms_per_char=10,
        chunk_ms=20,
        faults=Faults(first_audio_ms=0, pace=0),
    )
    with VoiceLiveEmulator(config) as custom:
        client = await ulaw_session(custom, input_audio_transcription={"model": "whisper-1"})
        await client.speak(400, tail_ms=600)
        events = await client.until("response.done")
        transcription = next(e for e in events if e["type"].endswith("input_audio_transcription.completed"))
        assert transcription["transcript"] == "hello"
        deltas = [base64.b64decode(e["delta"]) for e in events if e["type"] == "response.audio.delta"]
        assert len(b"".join(deltas)) == len("Hi there.") * 10 * 8
        assert {len(d) for d in deltas[:-1]} == {160}
        await client.send({"type": "response.create"})
        second = await client.until("response.done")
        assert second[-1]["response"]["output"][0]["content"][0]["transcript"] == "Bye."
        await client.ws.close()


async def test_a_click_shorter_than_speech_duration_is_not_a_turn(emulator: VoiceLiveEmulator) -> None:
    """speech_duration_ms (server_vad default 200): a 20 ms click must not start a turn, speech must."""
    client = await ulaw_session(emulator, turn_detection={"type": "server_vad", "create_response": False})
    await client.append(silence_ulaw(500) + speechlike_ulaw(20, seed=1) + silence_ulaw(700))
    await client.append(speechlike_ulaw(400, seed=2) + silence_ulaw(600))
    events = await client.until("input_audio_buffer.committed")
    assert types(events) == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
    ]
    # reported from the first voiced frame of the speech (at 1220 ms), minus prefix_padding_ms
    assert events[0]["audio_start_ms"] == 1220 - 300
    assert events[1]["audio_end_ms"] == 1620 + 500
    await client.ws.close()


def test_vad_starts_after_speech_duration_of_consecutive_voiced_audio() -> None:
    vad = EnergyVad(sample_rate=8000, prefix_padding_ms=100, speech_duration_ms=200, silence_duration_ms=300)
    loud = speechlike_pcm16(190, sample_rate=8000, seed=1)
    quiet = np.zeros(8 * 100, dtype=np.int16)
    assert vad.feed(np.concatenate([quiet, loud, quiet])) == []  # 190 ms then a gap: no speech
    assert vad.feed(speechlike_pcm16(200, sample_rate=8000, seed=2)) == [SpeechStarted(390 - 100)]


@pytest.mark.parametrize("where", ["session", "response"])
async def test_max_response_output_tokens_stops_the_response_incomplete(
    emulator: VoiceLiveEmulator, where: str
) -> None:
    """The output stops at max_response_output_tokens: status incomplete, reason max_output_tokens."""
    limit = 10
    client = await ulaw_session(
        emulator, **({"max_response_output_tokens": limit} if where == "session" else {})
    )
    options = {"max_response_output_tokens": limit} if where == "response" else {}
    await client.send({"type": "response.create", "response": options})
    events = await client.until("response.done")
    done = events[-1]["response"]
    assert done["status"] == "incomplete"
    assert done["status_details"] == {"type": "incomplete", "reason": "max_output_tokens"}
    assert 0 < done["usage"]["output_tokens"] <= limit
    assert done["output"][0]["status"] == "incomplete"
    assert 0 < len(audio_bytes(events)) < len(DEFAULT_REPLIES[0]) * 65 * 8  # cut short of the full reply
    await client.ws.close()


async def test_append_up_to_15_mib_is_accepted_and_larger_gets_an_error(emulator: VoiceLiveEmulator) -> None:
    """voice-live.md 1.6: one append carries "up to a maximum of 15 MiB" (~20 MiB of base64 in the frame)."""
    client = await ulaw_session(emulator, turn_detection=None)
    limit = 15 * 1024 * 1024
    await client.send(
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(silence_ulaw(limit // 8)).decode()}
    )
    await client.send({"type": "input_audio_buffer.commit"})
    events = await client.until("input_audio_buffer.committed", wait_s=30)
    assert types(events)[-1] == "input_audio_buffer.committed"
    assert emulator.sessions[0].last_client_event["input_audio_buffer.append"]["audio_bytes"] == limit
    too_big = base64.b64encode(b"\xff" * (limit + 3)).decode()
    await client.send({"type": "input_audio_buffer.append", "event_id": "a1", "audio": too_big})
    events = await client.until("error", wait_s=30)
    assert types(events) == ["conversation.item.created", "error"]  # the commit's item, then the refusal
    error = events[-1]["error"]
    assert (error["code"], error["param"], error["event_id"]) == ("invalid_value", "audio", "a1")
    session = await client.update(temperature=0.9)  # the session survives
    assert session["temperature"] == 0.9
    await client.ws.close()


async def test_user_audio_item_content_carries_audio_null(emulator: VoiceLiveEmulator) -> None:
    """voice-live.md 1.8: user audio content is {"type":"input_audio","audio":null,"transcript":…}."""
    client = await ulaw_session(emulator, input_audio_transcription={"model": "azure-speech"})
    await client.speak()
    events = await client.until("conversation.item.created")
    item = events[-1]["item"]
    assert item["content"] == [{"type": "input_audio", "audio": None, "transcript": None}]
    await client.until("response.done")
    await client.send({"type": "conversation.item.retrieve", "item_id": item["id"]})
    retrieved = (await client.until("conversation.item.retrieved"))[-1]["item"]
    assert retrieved["content"] == [
        {"type": "input_audio", "audio": None, "transcript": DEFAULT_USER_TRANSCRIPTS[0]}
    ]
    await client.ws.close()


async def test_follow_say_exactly_speaks_the_instructed_words_and_keeps_the_script_in_place() -> None:
    """The demo's model: a response asked to say given words says them; the script stays where it was, so a
    reprompt between two answers does not shift them. Off by default (the response above speaks entry 0)."""
    config = VoiceLiveEmulatorConfig(
        replies=("First answer.", "Second answer."),
        follow_say_exactly=True,
        faults=Faults(first_audio_ms=0, pace=0),
    )
    instructed = "The caller has been silent for a while. Say exactly this, and nothing else: Are you there?"
    with VoiceLiveEmulator(config) as custom:
        client = await ulaw_session(custom)
        spoken = []
        for options in ({}, {"instructions": instructed}, {"instructions": "Be brief."}):
            await client.send({"type": "response.create", "response": options})
            events = await client.until("response.done")
            spoken.append(events[-1]["response"]["output"][0]["content"][0]["transcript"])
        assert spoken == ["First answer.", "Are you there?", "Second answer."]
        await client.ws.close()


def test_said_exactly_finds_the_words_after_the_colon() -> None:
    from emulators.voicelive.script import said_exactly

    greeting = "Greet the caller by saying exactly this, and nothing else: Hello: welcome!"
    assert said_exactly(greeting) == "Hello: welcome!"
    assert said_exactly("Apologise and ask them to say it again.") is None
    assert said_exactly(None) is None
