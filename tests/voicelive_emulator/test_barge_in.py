"""Truncate, client cancel and server-side interruption of a response in progress."""

from __future__ import annotations

from emulators.speechlike import silence_ulaw, speechlike_ulaw
from emulators.voicelive import VoiceLiveEmulator
from tests.voicelive_emulator.client import Client, audio_bytes, types, ulaw_session


async def response_in_progress(emulator: VoiceLiveEmulator, deltas: int = 3) -> tuple[Client, list[dict]]:
    """A μ-law session whose first response has sent ``deltas`` audio deltas and is still going."""
    emulator.faults.update(delta_delay_ms=30)
    client = await ulaw_session(emulator)
    await client.speak()
    events: list[dict] = []
    while sum(1 for e in events if e["type"] == "response.audio.delta") < deltas:
        events.append(await client.recv())
    return client, events


def assistant_item_id(events: list[dict]) -> str:
    return next(e["item"]["id"] for e in events if e["type"] == "response.output_item.added")


async def test_truncate_within_generated_audio(emulator: VoiceLiveEmulator) -> None:
    client, events = await response_in_progress(emulator)
    item_id = assistant_item_id(events)
    await client.send(
        {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 250}
    )
    rest = await client.until("conversation.item.truncated")
    truncated = rest[-1]
    assert truncated == {**truncated, "item_id": item_id, "content_index": 0, "audio_end_ms": 250}
    record = emulator.sessions[0]
    assert record.last_client_event["conversation.item.truncate"]["audio_end_ms"] == 250
    await client.ws.close()


async def test_truncate_beyond_generated_audio_is_an_error(emulator: VoiceLiveEmulator) -> None:
    client, events = await response_in_progress(emulator)
    item_id = assistant_item_id(events)
    await client.until("response.done")
    full_ms = len(audio_bytes(client.received)) // 8
    await client.send(
        {
            "type": "conversation.item.truncate",
            "event_id": "t1",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": full_ms + 1,
        }
    )
    error = await client.recv()
    assert error["type"] == "error"
    assert (error["error"]["type"], error["error"]["param"], error["error"]["event_id"]) == (
        "invalid_request_error",
        "audio_end_ms",
        "t1",
    )
    # exactly the generated length is fine (inclusive)
    await client.send(
        {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": full_ms,
        }
    )
    assert (await client.recv())["type"] == "conversation.item.truncated"
    await client.ws.close()


async def test_truncate_unknown_or_user_item_is_an_error(emulator: VoiceLiveEmulator) -> None:
    client, events = await response_in_progress(emulator)
    user_item = next(e["item"]["id"] for e in events if e["type"] == "conversation.item.created")
    await client.until("response.done")
    await client.send(
        {"type": "conversation.item.truncate", "item_id": "nope", "content_index": 0, "audio_end_ms": 0}
    )
    assert (await client.recv())["error"]["code"] == "item_not_found"
    await client.send(
        {"type": "conversation.item.truncate", "item_id": user_item, "content_index": 0, "audio_end_ms": 0}
    )
    error = await client.recv()
    assert error["error"]["message"] == "Only model output audio messages can be truncated."
    await client.ws.close()


async def test_client_cancel_ends_response_cancelled(emulator: VoiceLiveEmulator) -> None:
    client, events = await response_in_progress(emulator)
    await client.send({"type": "response.cancel"})
    rest = await client.until("response.done")
    assert types(rest)[-5:] == [
        "response.audio.done",
        "response.audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.done",
    ]
    done = rest[-1]["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    assert done["output"][0]["status"] == "incomplete"
    sent_ms = len(audio_bytes(events + rest)) // 8
    assert sent_ms < 65 * 60  # stopped well before the whole reply
    # nothing is active any more
    await client.send({"type": "response.cancel", "event_id": "x"})
    error = await client.recv()
    assert error["error"]["code"] == "response_cancel_not_active"
    assert error["error"]["event_id"] == "x"
    await client.ws.close()


async def test_cancel_with_nothing_active_is_an_error(emulator: VoiceLiveEmulator) -> None:
    client = await ulaw_session(emulator)
    await client.send({"type": "response.cancel"})
    error = await client.recv()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    await client.ws.close()


async def test_response_create_while_active_is_an_error(emulator: VoiceLiveEmulator) -> None:
    client, _ = await response_in_progress(emulator)
    await client.send({"type": "response.create"})
    events = await client.until("error")
    assert events[-1]["error"]["code"] == "conversation_already_has_active_response"
    await client.ws.close()


async def test_caller_speech_interrupts_the_response(emulator: VoiceLiveEmulator) -> None:
    client, events = await response_in_progress(emulator)
    first_response = events[next(i for i, e in enumerate(events) if e["type"] == "response.created")][
        "response"
    ]["id"]
    await client.append(speechlike_ulaw(600, seed=3) + silence_ulaw(600))
    rest = await client.until("response.done")
    names = types(rest)
    assert "input_audio_buffer.speech_started" in names
    assert names.index("input_audio_buffer.speech_started") < names.index("response.done")
    done = rest[-1]["response"]
    assert done["id"] == first_response
    assert done["status"] == "cancelled"
    assert done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    # the interruption becomes the next turn, with its own response
    following = await client.until("response.created")
    assert "input_audio_buffer.speech_stopped" in types(following)
    assert following[-1]["response"]["id"] != first_response
    await client.ws.close()


async def test_no_interruption_when_interrupt_response_is_false(emulator: VoiceLiveEmulator) -> None:
    emulator.faults.update(delta_delay_ms=30)
    client = await ulaw_session(emulator, turn_detection={"type": "server_vad", "interrupt_response": False})
    await client.speak()
    await client.until("response.audio.delta")
    await client.append(speechlike_ulaw(300, seed=3) + silence_ulaw(600))
    events = await client.until("response.done")
    assert "input_audio_buffer.speech_started" in types(events)
    assert events[-1]["response"]["status"] == "completed"
    await client.ws.close()
