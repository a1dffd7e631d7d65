"""Speech to text (``recognize_once``): the real Speech SDK against the Azure Speech emulator."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from azure.cognitiveservices import speech as speechsdk

from emulators.azure_speech import DEFAULT_TRANSCRIPT, AzureSpeechEmulator
from emulators.speechlike import silence_ulaw, speechlike_pcm16, speechlike_ulaw
from tests.legacy_emulators.speech_sdk import get, mulaw_recognizer, push_audio

KEY = "speech-key"
Reason = speechsdk.ResultReason
TICKS_PER_MS = 10_000


@pytest.fixture
def emulator() -> Iterator[AzureSpeechEmulator]:
    with AzureSpeechEmulator() as emu:
        yield emu


def utterance(lead_ms: int = 300, speech_ms: int = 1500, tail_ms: int = 200, seed: int = 1) -> bytes:
    return silence_ulaw(lead_ms) + speechlike_ulaw(speech_ms, seed=seed) + silence_ulaw(tail_ms)


def recognize(
    emulator: AzureSpeechEmulator, audio: bytes, *, close: bool = True, **kwargs: str
) -> tuple[speechsdk.SpeechRecognitionResult, list[str]]:
    recognizer, push = mulaw_recognizer(emulator, **kwargs)
    partials: list[str] = []
    recognizer.recognizing.connect(lambda event: partials.append(event.result.text))
    future = recognizer.recognize_once_async()
    push_audio(push, audio, close=close)
    result = get(future)
    return result, partials


def test_mulaw_push_stream_is_recognised_with_offsets_from_the_audio(emulator: AzureSpeechEmulator) -> None:
    result, partials = recognize(emulator, utterance(lead_ms=300, speech_ms=1500))
    assert result.reason == Reason.RecognizedSpeech
    assert result.text == DEFAULT_TRANSCRIPT
    assert result.offset == 300 * TICKS_PER_MS
    assert result.duration == 1500 * TICKS_PER_MS
    assert partials and partials[-1] in DEFAULT_TRANSCRIPT.lower()
    record = emulator.recognitions[-1]
    assert record.audio_format == {"format_tag": 7, "channels": 1, "sample_rate": 8000, "bits_per_sample": 16}
    assert record.status == "Success" and (record.speech_start_ms, record.speech_end_ms) == (300, 1800)
    assert emulator.handshakes[-1].path == "/speech/recognition/interactive/cognitiveservices/v1"


def test_transcript_script_cycles(emulator: AzureSpeechEmulator) -> None:
    emulator.set_transcripts(["Yes, please.", "No, thank you."])
    texts = [recognize(emulator, utterance(seed=seed))[0].text for seed in range(3)]
    assert texts == ["Yes, please.", "No, thank you.", "Yes, please."]


def test_silence_is_no_match(emulator: AzureSpeechEmulator) -> None:
    result, partials = recognize(emulator, silence_ulaw(1200))
    assert result.reason == Reason.NoMatch
    details = result.no_match_details
    assert details.reason == speechsdk.NoMatchReason.InitialSilenceTimeout
    assert partials == []
    assert emulator.recognitions[-1].status == "InitialSilenceTimeout"
    assert emulator.recognitions[-1].audio_ms == 1200


def test_trailing_silence_ends_the_utterance_without_end_of_audio(emulator: AzureSpeechEmulator) -> None:
    emulator.set_faults(stt_end_silence_ms=400)
    result, _ = recognize(emulator, utterance(speech_ms=800, tail_ms=1000), close=False)
    assert result.reason == Reason.RecognizedSpeech
    assert emulator.recognitions[-1].audio_ms == 300 + 800 + 400


def test_audio_cap_answers_a_speaker_who_never_pauses(emulator: AzureSpeechEmulator) -> None:
    emulator.set_faults(stt_max_audio_ms=1000)
    result, _ = recognize(emulator, speechlike_ulaw(3000), close=False)
    assert result.reason == Reason.RecognizedSpeech
    assert result.duration == 1000 * TICKS_PER_MS


def test_initial_silence_timeout_without_end_of_audio(emulator: AzureSpeechEmulator) -> None:
    emulator.set_faults(stt_initial_silence_ms=500)
    result, _ = recognize(emulator, silence_ulaw(2000), close=False)
    assert result.reason == Reason.NoMatch
    assert emulator.recognitions[-1].audio_ms == 500


def test_endpoint_with_subscription_key_and_conversation_mode() -> None:
    with AzureSpeechEmulator(subscription_key=KEY, transcripts=["Conversation mode."]) as emu:
        result, _ = recognize(emu, utterance(), key=KEY, mode="conversation")
        assert result.reason == Reason.RecognizedSpeech and result.text == "Conversation mode."
        handshake = emu.handshakes[-1]
        assert handshake.path == "/speech/recognition/conversation/cognitiveservices/v1"
        assert handshake.subscription_key == KEY and "language=en-us" in handshake.query.lower()
        assert emu.recognitions[-1].mode == "conversation"
        wrong, _ = recognize(emu, utterance(), key="wrong")
        assert wrong.reason == Reason.Canceled
        assert wrong.cancellation_details.code == speechsdk.CancellationErrorCode.AuthenticationFailure


def test_16khz_pcm_input(emulator: AzureSpeechEmulator) -> None:
    config = speechsdk.SpeechConfig(host=emulator.url)
    push = speechsdk.audio.PushAudioInputStream()  # default: 16 kHz, 16-bit, mono PCM
    recognizer = speechsdk.SpeechRecognizer(
        speech_config=config, audio_config=speechsdk.audio.AudioConfig(stream=push)
    )
    future = recognizer.recognize_once_async()
    pcm = bytes(400 * 32) + speechlike_pcm16(1000, sample_rate=16000).astype("<i2").tobytes()
    push_audio(push, pcm, frame=3200)
    result = get(future)
    assert result.reason == Reason.RecognizedSpeech
    assert result.offset == 400 * TICKS_PER_MS
    assert emulator.recognitions[-1].audio_format["sample_rate"] == 16000


def test_two_recognitions_on_one_recognizer(emulator: AzureSpeechEmulator) -> None:
    emulator.set_transcripts(["First.", "Second."])
    recognizer, push = mulaw_recognizer(emulator)
    first = recognizer.recognize_once_async()
    push_audio(push, utterance(tail_ms=800), close=False)
    assert get(first).text == "First."
    second = recognizer.recognize_once_async()
    push_audio(push, utterance(seed=7))
    assert get(second).text == "Second."
    assert len({r.request_id for r in emulator.recognitions}) == 2


def test_close_fault_cancels_recognition(emulator: AzureSpeechEmulator) -> None:
    # The SDK reconnects once after losing a recognition connection, so the fault has to persist.
    emulator.set_faults(close_next=-1, close_code=1011, close_reason="Recognizer crashed.")
    result, _ = recognize(emulator, utterance())
    assert result.reason == Reason.Canceled
    details = result.cancellation_details
    assert "Recognizer crashed." in details.error_details
    assert emulator.recognitions[0].status == "closed:1011"
    emulator.set_faults(close_next=0)
    assert recognize(emulator, utterance())[0].reason == Reason.RecognizedSpeech


def test_stall_never_answers_until_the_server_goes_away() -> None:
    emu = AzureSpeechEmulator().start()
    try:
        emu.set_faults(stall_next=1)
        recognizer, push = mulaw_recognizer(emu)
        future = recognizer.recognize_once_async()
        push_audio(push, utterance())
        done = threading.Event()
        box: list[speechsdk.SpeechRecognitionResult] = []

        def wait() -> None:
            box.append(future.get())
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        assert not done.wait(1.0)  # the emulator said nothing at all
        assert emu.recognitions[0].status == "stalled"
    finally:
        emu.stop()
    assert done.wait(20.0)
    assert box[0].reason == Reason.Canceled


async def test_a_speech_config_whose_audio_source_is_not_an_object_keeps_the_default_format() -> None:
    """``{"context": {"audio": {"source": []}}}`` raised AttributeError: the client got 1011 "Emulator
    internal error" instead of the default input format every other malformed config falls back to."""
    import asyncio

    import websockets

    from emulators.azure_speech.usp import text_frame

    with AzureSpeechEmulator() as emu:
        async with websockets.connect(emu.stt_endpoint()) as ws:
            await ws.send(text_frame("speech.config", "R1", '{"context": {"audio": {"source": []}}}'))
            with pytest.raises(TimeoutError):  # nothing to answer yet, and the socket stays open
                await asyncio.wait_for(ws.recv(), 0.5)
