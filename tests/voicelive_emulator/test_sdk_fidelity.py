"""The official azure-ai-voicelive SDK runs a full turn against the emulator.

Every server event must deserialize to its typed SDK model (only ``rate_limits.updated``, which the SDK has
no model for, stays a base ``ServerEvent``) and the typed attributes must carry values: the SDK maps wire
names to attributes, so a misspelt field would read back as ``None``.
"""

from __future__ import annotations

import base64
from typing import Any

from azure.ai.voicelive import models as m
from azure.ai.voicelive.aio import connect
from azure.core.credentials import AzureKeyCredential

from emulators.speechlike import silence_ulaw, speechlike_ulaw
from emulators.voicelive import Faults, VoiceLiveEmulator, VoiceLiveEmulatorConfig
from emulators.voicelive.config import DEFAULT_REPLIES, DEFAULT_USER_TRANSCRIPTS

UNTYPED = {"rate_limits.updated"}


def telephony_session() -> m.RequestSession:
    return m.RequestSession(
        modalities=[m.Modality.TEXT, m.Modality.AUDIO],
        instructions="You are a dental front desk.",
        voice=m.AzureStandardVoice(name="en-US-AvaNeural"),
        input_audio_format=m.InputAudioFormat.G711_ULAW,
        output_audio_format=m.OutputAudioFormat.G711_ULAW,
        input_audio_sampling_rate=8000,
        turn_detection=m.ServerVad(threshold=0.5, prefix_padding_ms=300, silence_duration_ms=500),
        input_audio_echo_cancellation=m.AudioEchoCancellation(),
        input_audio_noise_reduction=m.AudioNoiseReduction(type="azure_deep_noise_suppression"),
        input_audio_transcription=m.AudioInputTranscriptionOptions(model="azure-speech"),
    )


async def test_sdk_full_turn_deserializes_to_typed_models(emulator: VoiceLiveEmulator) -> None:
    events: list[m.ServerEvent] = []
    audio = speechlike_ulaw(800) + silence_ulaw(700)
    async with connect(
        endpoint=emulator.url,
        credential=AzureKeyCredential(emulator.api_key),
        model="gpt-realtime",
        api_version="2025-10-01",
    ) as conn:
        await conn.session.update(session=telephony_session())
        async for event in conn:
            events.append(event)
            if event.type == "session.updated":
                for start in range(0, len(audio), 160):
                    await conn.input_audio_buffer.append(
                        audio=base64.b64encode(audio[start : start + 160]).decode()
                    )
            if event.type == "response.done":
                break
        added_event: Any = next(e for e in events if isinstance(e, m.ServerEventResponseOutputItemAdded))
        item_id = added_event.item.id
        await conn.conversation.item.truncate(item_id=item_id, audio_end_ms=200, content_index=0)
        truncated = await conn.recv()
        await conn.response.cancel()
        cancel_error = await conn.recv()

    for event in events:
        if event.type in UNTYPED:
            continue
        assert type(event) is not m.ServerEvent, f"{event.type} did not map to a typed model"

    def first(cls: type) -> Any:
        return next(e for e in events if isinstance(e, cls))

    created = first(m.ServerEventSessionCreated)
    assert created.session.id and created.session.input_audio_format == "pcm16"
    updated = first(m.ServerEventSessionUpdated)
    assert updated.session.input_audio_format == "g711_ulaw"
    assert updated.session.input_audio_sampling_rate == 8000
    # ``voice`` is a union the SDK leaves as a mapping
    assert dict(updated.session.voice) == {"type": "azure-standard", "name": "en-US-AvaNeural"}
    assert isinstance(updated.session.turn_detection, m.ServerVad)
    assert updated.session.turn_detection.silence_duration_ms == 500

    started = first(m.ServerEventInputAudioBufferSpeechStarted)
    stopped = first(m.ServerEventInputAudioBufferSpeechStopped)
    assert started.audio_start_ms == 0 and stopped.audio_end_ms == 800 + 500
    assert started.item_id == stopped.item_id
    committed = first(m.ServerEventInputAudioBufferCommitted)
    assert committed.item_id == started.item_id
    user_item = first(m.ServerEventConversationItemCreated)
    assert isinstance(user_item.item, m.ResponseMessageItem) and user_item.item.role == "user"
    transcription = first(m.ServerEventConversationItemInputAudioTranscriptionCompleted)
    assert (
        transcription.transcript == DEFAULT_USER_TRANSCRIPTS[0] and transcription.item_id == started.item_id
    )

    response_created = first(m.ServerEventResponseCreated)
    assert response_created.response.status == "in_progress"
    added = first(m.ServerEventResponseOutputItemAdded)
    assert added.response_id == response_created.response.id and added.output_index == 0
    part = first(m.ServerEventResponseContentPartAdded)
    assert isinstance(part.part, m.ResponseAudioContentPart)

    deltas = [e for e in events if isinstance(e, m.ServerEventResponseAudioDelta)]
    assert all(isinstance(d.delta, bytes) for d in deltas)
    assert sum(len(d.delta) for d in deltas) == len(DEFAULT_REPLIES[0]) * 65 * 8
    assert {(d.response_id, d.item_id, d.output_index, d.content_index) for d in deltas} == {
        (response_created.response.id, added.item.id, 0, 0)
    }
    transcript_deltas = [e for e in events if isinstance(e, m.ServerEventResponseAudioTranscriptDelta)]
    assert "".join(t.delta for t in transcript_deltas) == DEFAULT_REPLIES[0]
    assert first(m.ServerEventResponseAudioTranscriptDone).transcript == DEFAULT_REPLIES[0]
    assert first(m.ServerEventResponseAudioDone).item_id == added.item.id
    assert first(m.ServerEventResponseContentPartDone).part.transcript == DEFAULT_REPLIES[0]
    assert first(m.ServerEventResponseOutputItemDone).item.status == "completed"

    done = first(m.ServerEventResponseDone)
    assert done.response.status == m.ResponseStatus.COMPLETED
    usage = done.response.usage
    assert isinstance(usage, m.TokenUsage)
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_token_details.audio_tokens > 0 and usage.output_token_details.audio_tokens > 0

    assert isinstance(truncated, m.ServerEventConversationItemTruncated)
    assert (truncated.item_id, truncated.audio_end_ms, truncated.content_index) == (item_id, 200, 0)
    assert isinstance(cancel_error, m.ServerEventError)
    assert cancel_error.error.type == "invalid_request_error" and cancel_error.error.code


async def test_sdk_sees_cancelled_status_details(emulator: VoiceLiveEmulator) -> None:
    emulator.faults.update(delta_delay_ms=30)
    async with connect(
        endpoint=emulator.url,
        credential=AzureKeyCredential(emulator.api_key),
        model="gpt-realtime",
        api_version="2025-10-01",
    ) as conn:
        await conn.session.update(session=telephony_session())
        await conn.response.create()
        async for event in conn:
            if isinstance(event, m.ServerEventResponseAudioDelta):
                await conn.response.cancel()
                break
        done: Any = None
        async for event in conn:
            if isinstance(event, m.ServerEventResponseDone):
                done = event
                break
    assert done.response.status == m.ResponseStatus.CANCELLED
    assert isinstance(done.response.status_details, m.ResponseCancelledDetails)
    assert done.response.status_details.reason == "client_cancelled"


async def test_sdk_parses_a_function_call_response_and_sends_its_output() -> None:
    """The SDK's typed function-call events and items read the emulator's wire names back (none is None)."""
    script = (
        {"tool_calls": [{"name": "check_availability", "arguments": {"day": "Tuesday"}}]},
        "We have {tool_output} open.",
    )
    config = VoiceLiveEmulatorConfig(replies=script, faults=Faults(first_audio_ms=0, pace=0))
    tool = m.FunctionTool(
        name="check_availability",
        description="Free slots on a day.",
        parameters={"type": "object", "properties": {"day": {"type": "string"}}},
    )
    events: list[m.ServerEvent] = []
    with VoiceLiveEmulator(config) as emulator:
        async with connect(
            endpoint=emulator.url,
            credential=AzureKeyCredential(emulator.api_key),
            model="gpt-realtime",
            api_version="2025-10-01",
        ) as conn:
            await conn.session.update(
                session=m.RequestSession(tools=[tool], tool_choice="auto", turn_detection=None)
            )
            await conn.response.create()
            async for event in conn:
                events.append(event)
                if event.type == "response.done":
                    break
            done: Any = events[-1]
            call = done.response.output[0]
            await conn.conversation.item.create(
                item=m.FunctionCallOutputItem(call_id=call.call_id, output="Tuesday 10:00")
            )
            async for event in conn:
                events.append(event)
                if event.type == "conversation.item.created":
                    break
            output_created: Any = events[-1]
            await conn.response.create()
            async for event in conn:
                events.append(event)
                if event.type == "response.done":
                    break

    for event in events:
        if event.type not in UNTYPED:
            assert type(event) is not m.ServerEvent, f"{event.type} did not map to a typed model"

    def first(cls: type) -> Any:
        return next(e for e in events if isinstance(e, cls))

    added = first(m.ServerEventResponseOutputItemAdded)
    assert isinstance(added.item, m.ResponseFunctionCallItem)
    assert (added.item.name, added.item.arguments, added.item.status) == (
        "check_availability",
        "",
        "in_progress",
    )
    deltas = [e for e in events if isinstance(e, m.ServerEventResponseFunctionCallArgumentsDelta)]
    args_done = first(m.ServerEventResponseFunctionCallArgumentsDone)
    assert "".join(d.delta for d in deltas) == args_done.arguments == '{"day":"Tuesday"}'
    assert (args_done.name, args_done.call_id, args_done.item_id, args_done.output_index) == (
        "check_availability",
        added.item.call_id,
        added.item.id,
        0,
    )
    assert all(d.call_id == added.item.call_id and d.response_id == done.response.id for d in deltas)
    assert isinstance(call, m.ResponseFunctionCallItem) and call.status == "completed"
    assert done.response.status == m.ResponseStatus.COMPLETED
    assert done.response.usage.output_token_details.audio_tokens == 0

    assert isinstance(output_created.item, m.ResponseFunctionCallOutputItem)
    assert (output_created.item.call_id, output_created.item.output) == (call.call_id, "Tuesday 10:00")
    spoken = [e for e in events if isinstance(e, m.ServerEventResponseAudioTranscriptDone)]
    assert [s.transcript for s in spoken] == ["We have Tuesday 10:00 open."]
