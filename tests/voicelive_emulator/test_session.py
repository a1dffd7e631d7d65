"""session.created defaults, session.update merge, and the service's error shape for bad input."""

from __future__ import annotations

from typing import Any

import pytest

from emulators.voicelive import VoiceLiveEmulator
from tests.voicelive_emulator.client import open_client


async def test_session_created_carries_full_defaults(emulator: VoiceLiveEmulator) -> None:
    client = await open_client(emulator)
    session = client.received[0]["session"]
    assert client.received[0]["event_id"]
    assert session["object"] == "realtime.session"
    assert session["id"].startswith("sess_")
    assert session["model"] == "gpt-realtime"
    assert session["modalities"] == ["text", "audio"]
    assert session["input_audio_format"] == session["output_audio_format"] == "pcm16"
    assert session["input_audio_sampling_rate"] == 24000
    assert session["voice"]["type"] == "openai"
    td = session["turn_detection"]
    assert (td["type"], td["threshold"], td["prefix_padding_ms"], td["silence_duration_ms"]) == (
        "server_vad",
        0.5,
        300,
        500,
    )
    assert td["create_response"] is True and td["interrupt_response"] is True
    await client.ws.close()


async def test_update_merges_and_g711_reports_8000(emulator: VoiceLiveEmulator) -> None:
    client = await open_client(emulator)
    session = await client.update(
        input_audio_format="g711_ulaw",
        output_audio_format="g711_ulaw",
        voice={"type": "azure-standard", "name": "en-US-AvaNeural"},
        turn_detection={"type": "server_vad", "silence_duration_ms": 400},
        input_audio_noise_reduction={"type": "azure_deep_noise_suppression"},
        input_audio_echo_cancellation={"type": "server_echo_cancellation"},
        input_audio_transcription={"model": "azure-speech"},
        instructions="Be brief.",
    )
    assert session["input_audio_sampling_rate"] == 8000
    assert session["voice"] == {"type": "azure-standard", "name": "en-US-AvaNeural"}
    assert session["turn_detection"]["silence_duration_ms"] == 400
    assert session["turn_detection"]["threshold"] == 0.5  # filled from defaults
    assert session["instructions"] == "Be brief."
    assert session["modalities"] == ["text", "audio"]  # untouched fields survive the merge
    # a second update merges onto the first
    session = await client.update(temperature=0.9)
    assert session["temperature"] == 0.9
    assert session["input_audio_format"] == "g711_ulaw"
    assert emulator.sessions[0].session["temperature"] == 0.9
    await client.ws.close()


INVALID: list[tuple[dict[str, Any], str, str]] = [
    ({"input_audio_format": "mp3"}, "session.input_audio_format", "invalid_value"),
    ({"output_audio_format": "opus"}, "session.output_audio_format", "invalid_value"),
    ({"turn_detection": {"type": "push_to_talk"}}, "session.turn_detection.type", "invalid_value"),
    (
        {"turn_detection": {"type": "server_vad", "threshold": 1.5}},
        "session.turn_detection.threshold",
        "decimal_above_max_value",
    ),
    ({"voice": {"type": "azure-neural", "name": "x"}}, "session.voice.type", "invalid_value"),
    ({"voice": {"type": "openai", "name": "bob"}}, "session.voice.name", "invalid_value"),
    ({"voice": {"type": "azure-standard", "name": ""}}, "session.voice.name", "invalid_value"),
    (
        {"voice": {"type": "azure-custom", "name": "v"}},
        "session.voice.endpoint_id",
        "missing_required_parameter",
    ),
    ({"modalities": ["audio"]}, "session.modalities", "invalid_value"),
    ({"modalities": ["text", "smell"]}, "session.modalities[1]", "invalid_value"),
    (
        {"input_audio_noise_reduction": {"type": "magic"}},
        "session.input_audio_noise_reduction.type",
        "invalid_value",
    ),
    (
        {"input_audio_transcription": {"model": "nope"}},
        "session.input_audio_transcription.model",
        "invalid_value",
    ),
    ({"temperature": 2.0}, "session.temperature", "decimal_above_max_value"),
    ({"temperature": 0.1}, "session.temperature", "decimal_below_min_value"),
    ({"max_response_output_tokens": 5000}, "session.max_response_output_tokens", "integer_above_max_value"),
    ({"max_response_output_tokens": 0}, "session.max_response_output_tokens", "integer_below_min_value"),
    ({"tool_choice": "sometimes"}, "session.tool_choice", "invalid_value"),
    (
        {
            "turn_detection": {
                "type": "azure_semantic_vad",
                "end_of_utterance_detection": {"model": "semantic_detection_v1", "threshold_level": "loud"},
            }
        },
        "session.turn_detection.end_of_utterance_detection.threshold_level",
        "invalid_value",
    ),
    (
        {
            "turn_detection": {
                "type": "azure_semantic_vad",
                "end_of_utterance_detection": {"model": "semantic_detection_v1", "timeout_ms": "1s"},
            }
        },
        "session.turn_detection.end_of_utterance_detection.timeout_ms",
        "invalid_type",
    ),
    ({"input_audio_sampling_rate": 11025}, "session.input_audio_sampling_rate", "invalid_value"),
    ({"colour": "blue"}, "session.colour", "unknown_parameter"),
    ({"model": "gpt-4o"}, "session.model", "invalid_value"),
]


@pytest.mark.parametrize(("update", "param", "code"), INVALID)
async def test_invalid_update_gets_service_shaped_error(
    emulator: VoiceLiveEmulator, update: dict[str, Any], param: str, code: str
) -> None:
    client = await open_client(emulator)
    await client.send({"type": "session.update", "event_id": "evt-client-1", "session": update})
    error = await client.recv()
    assert error["type"] == "error"
    assert error["event_id"] and error["event_id"] != "evt-client-1"
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["code"] == code
    assert error["error"]["param"] == param
    assert error["error"]["event_id"] == "evt-client-1"
    assert error["error"]["message"]
    # the session is unchanged and still usable
    session = await client.update(temperature=0.7)
    assert session["input_audio_format"] == "pcm16"
    assert session["voice"]["type"] == "openai"
    await client.ws.close()


async def test_g711_with_other_rate_is_rejected(emulator: VoiceLiveEmulator) -> None:
    client = await open_client(emulator)
    await client.send(
        {
            "type": "session.update",
            "session": {"input_audio_format": "g711_ulaw", "input_audio_sampling_rate": 16000},
        }
    )
    error = await client.recv()
    assert error["error"]["param"] == "session.input_audio_sampling_rate"
    await client.ws.close()


@pytest.mark.parametrize(
    ("frame", "code", "param"),
    [
        ("not json", "invalid_json", None),
        ("[1, 2]", "invalid_json", None),
        ('{"event_id": "e1"}', "missing_required_parameter", "type"),
        ('{"type": "session.fly", "event_id": "e1"}', "invalid_value", "type"),
        ('{"type": "input_audio_buffer.append", "audio": "!!!"}', "invalid_value", "audio"),
        ('{"type": "input_audio_buffer.append"}', "missing_required_parameter", "audio"),
    ],
)
async def test_bad_frames_get_errors_and_session_survives(
    emulator: VoiceLiveEmulator, frame: str, code: str, param: str | None
) -> None:
    client = await open_client(emulator)
    await client.ws.send(frame)
    error = await client.recv()
    assert error["type"] == "error"
    assert (error["error"]["code"], error["error"]["param"]) == (code, param)
    await client.ws.send(b"\x00\x01")  # binary frames are not part of the protocol either
    assert (await client.recv())["error"]["code"] == "invalid_json"
    session = await client.update(temperature=1.0)
    assert session["temperature"] == 1.0
    await client.ws.close()


INVALID_RESPONSE_OPTIONS: list[tuple[Any, str, str]] = [
    ({"temperature": "hot"}, "response.temperature", "invalid_type"),
    ({"temperature": 1.5}, "response.temperature", "decimal_above_max_value"),
    ({"modalities": ["audio"]}, "response.modalities", "invalid_value"),  # "You can't enable only audio"
    ({"modalities": []}, "response.modalities", "invalid_type"),
    ({"voice": {"type": "openai", "name": "bob"}}, "response.voice.name", "invalid_value"),
    ({"output_audio_format": "opus"}, "response.output_audio_format", "invalid_value"),
    ({"max_response_output_tokens": 0}, "response.max_response_output_tokens", "integer_below_min_value"),
    ({"metadata": ["x"]}, "response.metadata", "invalid_type"),
    ("fast", "response", "invalid_type"),
]


@pytest.mark.parametrize(("options", "param", "code"), INVALID_RESPONSE_OPTIONS)
async def test_invalid_response_create_gets_error_and_session_survives(
    emulator: VoiceLiveEmulator, options: Any, param: str, code: str
) -> None:
    """response.create options follow the session.update rules; a bad one must not kill the session."""
    client = await open_client(emulator)
    await client.send({"type": "response.create", "event_id": "r1", "response": options})
    error = await client.recv()
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert (error["error"]["code"], error["error"]["param"], error["error"]["event_id"]) == (
        code,
        param,
        "r1",
    )
    assert emulator.sessions[0].responses == {}  # no response was started
    session = await client.update(temperature=1.0)
    assert session["temperature"] == 1.0
    await client.ws.close()


async def test_handler_crash_becomes_server_error_and_session_survives(
    emulator: VoiceLiveEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected exception in a client-event handler is logged and answered, not a closed socket."""

    def broken(current: Any, update: Any, **options: Any) -> Any:
        raise RuntimeError("emulator bug")

    client = await open_client(emulator)
    monkeypatch.setattr("emulators.voicelive.connection.merge_session", broken)
    await client.send({"type": "session.update", "event_id": "u1", "session": {"temperature": 1.0}})
    error = await client.recv()
    assert error["type"] == "error"
    assert (error["error"]["type"], error["error"]["code"], error["error"]["event_id"]) == (
        "server_error",
        "internal_server_error",
        "u1",
    )
    monkeypatch.undo()
    session = await client.update(temperature=0.9)
    assert session["temperature"] == 0.9
    await client.ws.close()


@pytest.mark.parametrize(
    ("api_version", "kind", "padding"),
    [
        ("2025-10-01", "server_vad", 300),
        ("2025-10-01", "azure_semantic_vad", 300),
        ("2026-01-01-preview", "server_vad", 300),
        ("2026-04-10", "server_vad", 400),
        ("2026-04-10", "azure_semantic_vad", 420),
        ("2026-06-01-preview", "azure_semantic_vad_multilingual", 420),
    ],
)
async def test_prefix_padding_default_follows_the_api_version(
    emulator: VoiceLiveEmulator, api_version: str, kind: str, padding: int
) -> None:
    """voice-live.md 1.5: prefix_padding_ms is 300, "From API 2026-04-10: 400 (server_vad) / 420 (azure_*)"."""
    client = await open_client(emulator, api_version=api_version)
    if kind == "server_vad":
        td = client.received[0]["session"]["turn_detection"]
    else:
        td = (await client.update(turn_detection={"type": kind}))["turn_detection"]
    assert (td["type"], td["prefix_padding_ms"]) == (kind, padding)
    await client.ws.close()


async def test_voice_cannot_change_after_audio_was_produced(emulator: VoiceLiveEmulator) -> None:
    """voice-live.md 1.3: "Voice can't be changed after the model has produced audio"."""
    client = await open_client(emulator)
    await client.update(voice={"type": "openai", "name": "echo"})  # before any audio: fine
    await client.update(voice="echo")  # the same voice, spelt as a bare name: not a change
    await client.send({"type": "response.create"})
    await client.until("response.done")
    await client.update(voice={"type": "openai", "name": "echo"}, temperature=0.9)  # unchanged voice
    await client.send({"type": "session.update", "event_id": "v1", "session": {"voice": "alloy"}})
    error = (await client.recv())["error"]
    assert (error["type"], error["code"], error["param"], error["event_id"]) == (
        "invalid_request_error",
        "cannot_update_voice",
        "session.voice",
        "v1",
    )
    assert emulator.sessions[0].session["voice"] == {"type": "openai", "name": "echo"}
    await client.ws.close()
