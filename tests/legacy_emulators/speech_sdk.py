"""Helpers to drive the real Speech SDK against the emulator without ever hanging a test."""

from __future__ import annotations

import io
import threading
import wave
from typing import Any

import pytest
from azure.cognitiveservices import speech as speechsdk

from emulators.azure_speech import AzureSpeechEmulator

TIMEOUT_S = 20.0


def get(future: Any, timeout: float = TIMEOUT_S) -> Any:
    """``future.get()`` of the SDK in a daemon thread: a broken emulator fails the test, never hangs it."""
    box: list[Any] = []
    thread = threading.Thread(target=lambda: box.append(future.get()), daemon=True)
    thread.start()
    thread.join(timeout)
    if not box:
        pytest.fail(f"Speech SDK call did not finish within {timeout}s")
    return box[0]


def speak(synth: speechsdk.SpeechSynthesizer, text: str, *, ssml: bool = False) -> Any:
    """Synthesize and wait. Keeps ``synth`` referenced until the result is in: dropping a synthesizer while
    its future is pending makes the SDK miss the service's answer now and then (seen ~1 in 40)."""
    future = synth.speak_ssml_async(text) if ssml else synth.speak_text_async(text)
    return get(future)


def synthesizer(
    emulator: AzureSpeechEmulator,
    *,
    key: str | None = None,
    output: Any = speechsdk.SpeechSynthesisOutputFormat.Riff8Khz8BitMonoMULaw,
    voice: str = "en-US-JennyNeural",
    fail_fast: bool = True,
) -> speechsdk.SpeechSynthesizer:
    if key is None:
        config = speechsdk.SpeechConfig(host=emulator.url)
    else:
        config = speechsdk.SpeechConfig(endpoint=emulator.tts_endpoint, subscription=key)
    config.set_speech_synthesis_output_format(output)
    config.speech_synthesis_voice_name = voice
    if fail_fast:
        config.set_property_by_name("SpeechSynthesis_FirstChunkTimeoutMs", "1000")
        config.set_property_by_name("SpeechSynthesis_MaxRetryTimes", "0")
    return speechsdk.SpeechSynthesizer(speech_config=config, audio_config=None)


def mulaw_recognizer(
    emulator: AzureSpeechEmulator, *, key: str | None = None, mode: str = "conversation"
) -> tuple[speechsdk.SpeechRecognizer, speechsdk.audio.PushAudioInputStream]:
    """A recognizer fed from an 8 kHz μ-law push stream, the Twilio-style input."""
    if key is None:
        config = speechsdk.SpeechConfig(host=emulator.url)
    else:
        config = speechsdk.SpeechConfig(endpoint=emulator.stt_endpoint(mode), subscription=key)
    stream_format = speechsdk.audio.AudioStreamFormat(
        samples_per_second=8000,
        bits_per_sample=16,
        channels=1,
        wave_stream_format=speechsdk.audio.AudioStreamWaveFormat.MULAW,
    )
    push = speechsdk.audio.PushAudioInputStream(stream_format=stream_format)
    recognizer = speechsdk.SpeechRecognizer(
        speech_config=config, audio_config=speechsdk.audio.AudioConfig(stream=push)
    )
    return recognizer, push


def push_audio(
    push: speechsdk.audio.PushAudioInputStream, audio: bytes, *, frame: int = 160, close: bool = True
) -> None:
    for start in range(0, len(audio), frame):
        push.write(audio[start : start + frame])
    if close:
        push.close()


def pcm16_wav(samples: bytes, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples)
    return buffer.getvalue()
