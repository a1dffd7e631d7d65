"""Replies are synthesized side by side: the synthesizer's threads are not the event loop's small default pool."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

from azure.cognitiveservices import speech as speechsdk

from legacy_pipeline.speech_config import SpeechError
from legacy_pipeline.tts import AzureSpeechSynthesizer


async def test_many_syntheses_are_in_flight_at_once() -> None:
    # More than the default executor ever has (min(32, cores + 4)): every call must be waiting in the SDK at
    # the same time for the barrier to open; with too few threads it breaks after its timeout instead.
    many = 40
    barrier = threading.Barrier(many, timeout=20)

    def speak(ssml: str) -> bytes:
        barrier.wait()
        return b"RIFF" + ssml[:4].encode()

    def no_sdk() -> None:
        raise AssertionError("the SDK is not used here")

    synthesizer = AzureSpeechSynthesizer(no_sdk, max_concurrent=48)
    synthesizer._speak = speak  # type: ignore[method-assign]
    try:
        replies = await asyncio.gather(
            *(
                synthesizer.synthesize(f"Reply {i}.", voice="en-US-JennyNeural", language="en-US")
                for i in range(many)
            )
        )
    finally:
        await synthesizer.aclose()
    assert replies == [b"RIFF<spe"] * many
    assert barrier.n_waiting == 0 and not barrier.broken


class _CanceledSdkSynthesizer:
    """Stands in for ``speechsdk.SpeechSynthesizer`` against a failing service; records who releases it
    (releasing a real one whose stalled connection is still open blocks its thread for ~20 ms)."""

    def __init__(self, released_on: list[str]) -> None:
        self._released_on = released_on

    def speak_ssml_async(self, ssml: str) -> SimpleNamespace:
        canceled = SimpleNamespace(reason=speechsdk.ResultReason.Canceled, cancellation_details=None)
        return SimpleNamespace(get=lambda: canceled)

    def __del__(self) -> None:
        self._released_on.append(threading.current_thread().name)


async def test_a_failed_synthesizer_is_released_on_its_thread_not_the_loop() -> None:
    """The error's traceback kept the frame holding the SDK synthesizer, so it was released where the turn
    dropped the error: on the event loop, once per failed turn."""
    released_on: list[str] = []
    synthesizer = AzureSpeechSynthesizer(lambda: None)
    synthesizer._new_synthesizer = lambda: _CanceledSdkSynthesizer(released_on)  # type: ignore[method-assign]
    try:
        try:
            await synthesizer.synthesize("Hello.", voice="en-US-JennyNeural", language="en-US")
        except SpeechError:
            pass
        else:
            raise AssertionError("a canceled synthesis must raise")
        for _ in range(100):
            if released_on:
                break
            await asyncio.sleep(0.02)
    finally:
        await synthesizer.aclose()
    assert len(released_on) == 1 and released_on[0].startswith("tts"), released_on
