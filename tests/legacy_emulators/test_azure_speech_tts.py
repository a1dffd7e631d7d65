"""Text to speech: the real Speech SDK against the Azure Speech emulator over loopback."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from azure.cognitiveservices import speech as speechsdk

from emulators.azure_speech import AzureSpeechEmulator
from emulators.twilio.audio import read_wav
from tests.legacy_emulators.speech_sdk import speak, synthesizer

KEY = "speech-key"
Reason = speechsdk.ResultReason
ErrorCode = speechsdk.CancellationErrorCode


@pytest.fixture
def emulator() -> Iterator[AzureSpeechEmulator]:
    with AzureSpeechEmulator() as emu:
        yield emu


def expected_bytes(text: str, bytes_per_ms: int = 8) -> int:
    return round(len(text) * 65) * bytes_per_ms


def test_mulaw_wav_whose_length_follows_the_text_and_second_turn_reuses_the_connection(
    emulator: AzureSpeechEmulator,
) -> None:
    synth = synthesizer(emulator)
    short, long = "Hello there.", "Your appointment is booked for Tuesday at ten in the morning."
    first = speak(synth, short)
    second = speak(synth, long)
    for result, text in ((first, short), (second, long)):
        assert result.reason == Reason.SynthesizingAudioCompleted
        wav = read_wav(bytes(result.audio_data))
        assert (wav.format_code, wav.channels, wav.sample_rate) == (7, 1, 8000)
        assert len(wav.data) == expected_bytes(text)
        assert result.audio_duration.total_seconds() == pytest.approx(len(text) * 0.065, abs=0.001)
        assert wav.data[:4] != b"RIFF"  # the service sends raw audio; only the SDK adds a header
        assert len(set(wav.data)) > 50  # speech-like, not silence
    records = emulator.syntheses
    assert [r.text for r in records] == [short, long]
    assert {r.output_format for r in records} == {"raw-8khz-8bit-mono-mulaw"}
    assert {r.voice for r in records} == {"en-US-JennyNeural"}
    assert records[0].connection_id == records[1].connection_id
    assert len(emulator.handshakes) == 1 and emulator.handshakes[0].path == "/cognitiveservices/websocket/v1"


def test_raw_and_riff_pcm_formats(emulator: AzureSpeechEmulator) -> None:
    raw = speak(
        synthesizer(emulator, output=speechsdk.SpeechSynthesisOutputFormat.Raw16Khz16BitMonoPcm), "Raw audio."
    )
    assert raw.reason == Reason.SynthesizingAudioCompleted
    assert bytes(raw.audio_data)[:4] != b"RIFF"
    assert len(raw.audio_data) == expected_bytes("Raw audio.", 32)
    riff = speak(
        synthesizer(emulator, output=speechsdk.SpeechSynthesisOutputFormat.Riff24Khz16BitMonoPcm),
        "Wave audio.",
    )
    wav = read_wav(bytes(riff.audio_data))
    assert (wav.format_code, wav.sample_rate, wav.bits_per_sample) == (1, 24000, 16)
    assert len(wav.data) == expected_bytes("Wave audio.", 48)
    assert [r.output_format for r in emulator.syntheses] == [
        "raw-16khz-16bit-mono-pcm",
        "raw-24khz-16bit-mono-pcm",
    ]


def test_ssml_tags_are_stripped_and_breaks_add_pauses(emulator: AzureSpeechEmulator) -> None:
    ssml = (
        "<speak version='1.0' xmlns='http://www.w3.org/2001/10/synthesis' xml:lang='en-US'>"
        "<voice name='en-GB-SoniaNeural'><prosody rate='fast'>One moment.</prosody>"
        "<break time='500ms'/>Thanks.</voice></speak>"
    )
    result = speak(synthesizer(emulator), ssml, ssml=True)
    assert result.reason == Reason.SynthesizingAudioCompleted
    record = emulator.syntheses[-1]
    assert record.text == "One moment.Thanks."
    assert record.voice == "en-GB-SoniaNeural"
    assert len(read_wav(bytes(result.audio_data)).data) == expected_bytes(record.text) + 500 * 8


def test_subscription_key_is_checked() -> None:
    with AzureSpeechEmulator(subscription_key=KEY) as emu:
        ok = speak(synthesizer(emu, key=KEY), "Hi.")
        assert ok.reason == Reason.SynthesizingAudioCompleted
        bad = speak(synthesizer(emu, key="wrong"), "Hi.")
        assert bad.reason == Reason.Canceled
        assert bad.cancellation_details.error_code == ErrorCode.AuthenticationFailure
        assert [h.status for h in emu.handshakes] == [101, 401]
        assert emu.handshakes[0].subscription_key == KEY


def test_malformed_ssml_closes_with_1007(emulator: AzureSpeechEmulator) -> None:
    synth = synthesizer(emulator)
    result = speak(synth, "<speak version='1.0'><voice name='en-US-JennyNeural'>Hi</voice>", ssml=True)
    assert result.reason == Reason.Canceled
    details = result.cancellation_details
    assert details.error_code == ErrorCode.BadRequest
    assert "1007" in details.error_details and "not well-formed" in details.error_details
    again = speak(synth, "Still works.")
    assert again.reason == Reason.SynthesizingAudioCompleted


def test_unknown_voice_is_rejected(emulator: AzureSpeechEmulator) -> None:
    result = speak(synthesizer(emulator, voice="en-US-Nope"), "Hi.")
    assert result.reason == Reason.Canceled
    assert result.cancellation_details.error_code == ErrorCode.BadRequest
    assert "Unsupported voice en-US-Nope." in result.cancellation_details.error_details


def test_voice_allow_list() -> None:
    with AzureSpeechEmulator(voices=["en-US-AvaNeural"]) as emu:
        assert speak(synthesizer(emu, voice="en-US-AvaNeural"), "Hi.").reason == (
            Reason.SynthesizingAudioCompleted
        )
        assert speak(synthesizer(emu, voice="en-US-JennyNeural"), "Hi.").reason == Reason.Canceled


def test_stall_trips_the_first_chunk_timeout_then_recovers(emulator: AzureSpeechEmulator) -> None:
    emulator.set_faults(stall_next=1)
    synth = synthesizer(emulator)
    result = speak(synth, "Are you there?")
    assert result.reason == Reason.Canceled
    assert result.cancellation_details.error_code == ErrorCode.ServiceTimeout
    assert "first audio chunk" in result.cancellation_details.error_details
    assert emulator.syntheses[0].outcome == "stalled"
    assert speak(synthesizer(emulator), "Yes.").reason == Reason.SynthesizingAudioCompleted


def test_first_chunk_delay_longer_than_the_sdk_timeout(emulator: AzureSpeechEmulator) -> None:
    emulator.set_faults(tts_first_chunk_delay_s=5)
    result = speak(synthesizer(emulator), "Slow.")
    assert result.reason == Reason.Canceled
    assert result.cancellation_details.error_code == ErrorCode.ServiceTimeout
    emulator.set_faults(tts_first_chunk_delay_s=0.05, tts_chunk_delay_s=0.01)
    assert speak(synthesizer(emulator), "Fast enough.").reason == Reason.SynthesizingAudioCompleted


@pytest.mark.parametrize(
    ("code", "error_code"), [(1007, ErrorCode.BadRequest), (1011, ErrorCode.ServiceError)]
)
def test_close_with_error_code(emulator: AzureSpeechEmulator, code: int, error_code: object) -> None:
    emulator.set_faults(close_next=1, close_code=code, close_reason="Emulated outage.")
    result = speak(synthesizer(emulator), "Hello.")
    assert result.reason == Reason.Canceled
    assert result.cancellation_details.error_code == error_code
    assert f"Error code: {code}" in result.cancellation_details.error_details
    assert "Emulated outage." in result.cancellation_details.error_details
    assert emulator.syntheses[0].outcome == f"closed:{code}"
    assert speak(synthesizer(emulator), "Back.").reason == Reason.SynthesizingAudioCompleted


def test_close_mid_audio(emulator: AzureSpeechEmulator) -> None:
    emulator.set_faults(close_next=1, close_code=1011, close_reason="Lost backend.", close_after_chunks=2)
    result = speak(synthesizer(emulator), "A sentence long enough for several chunks.")
    assert result.reason == Reason.Canceled
    assert "Received audio size: 1600 bytes" in result.cancellation_details.error_details


def test_refused_handshakes(emulator: AzureSpeechEmulator) -> None:
    emulator.set_faults(refuse_handshakes_next=-1)
    result = speak(synthesizer(emulator), "Hello.")
    assert result.reason == Reason.Canceled
    assert result.cancellation_details.error_code == ErrorCode.ServiceUnavailable
    assert {h.status for h in emulator.handshakes} == {503}
    emulator.set_faults(refuse_handshakes_next=0)
    assert speak(synthesizer(emulator), "Hello.").reason == Reason.SynthesizingAudioCompleted


def test_control_endpoint(emulator: AzureSpeechEmulator) -> None:
    with httpx.Client(base_url=emulator.http_url) as http:
        response = http.post(
            "/_emulator/faults", json={"close_next": 1, "close_code": 1007, "close_reason": "Via HTTP."}
        )
        assert response.status_code == 200 and response.json()["knobs"]["close_next"] == 1
        for unsendable in (99, 1005, 1006, 1015, 2000):  # RFC 6455: no close frame can carry these
            assert http.post("/_emulator/faults", json={"close_code": unsendable}).status_code == 400
        assert http.post("/_emulator/faults", json={"nope": 1}).status_code == 400
        result = speak(synthesizer(emulator), "Hello.")
        assert "Via HTTP." in result.cancellation_details.error_details
        state = http.get("/_emulator/state").json()
        assert state["syntheses"] == 1 and state["recent_syntheses"][0]["outcome"] == "closed:1007"
        assert state["knobs"]["close_next"] == 0


def test_close_after_more_chunks_than_the_audio_has_still_closes(emulator: AzureSpeechEmulator) -> None:
    """A close fault is taken by the request: one shorter than ``close_after_chunks`` is closed after its last
    chunk (no ``turn.end``), not answered in full with the fault spent."""
    emulator.set_faults(close_next=1, close_code=1011, close_reason="Lost backend.", close_after_chunks=50)
    result = speak(synthesizer(emulator), "Hi.")  # 195 ms: two 100 ms chunks
    assert result.reason == Reason.Canceled
    assert "Lost backend." in result.cancellation_details.error_details
    assert emulator.syntheses[0].outcome == "closed:1011"
    assert speak(synthesizer(emulator), "Back.").reason == Reason.SynthesizingAudioCompleted


async def test_a_synthesis_context_whose_synthesis_is_not_an_object_closes_with_1007() -> None:
    """A ``synthesis.context`` like ``{"synthesis": "x"}`` raised AttributeError in the emulator: the client
    got 1011 "Emulator internal error", not the 1007 the service closes a malformed request with."""
    import websockets

    from emulators.azure_speech.usp import text_frame

    with AzureSpeechEmulator() as emu:
        async with websockets.connect(emu.tts_endpoint) as ws:
            await ws.send(text_frame("synthesis.context", "R1", '{"synthesis": "x"}'))
            await ws.send(
                text_frame(
                    "ssml", "R1", "<speak version='1.0'>Hi</speak>", content_type="application/ssml+xml"
                )
            )
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await ws.recv()
            assert ws.close_code == 1007, (ws.close_code, ws.close_reason)
