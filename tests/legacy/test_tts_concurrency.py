"""Replies are synthesized side by side: the synthesizer's threads are not the event loop's small default pool."""

from __future__ import annotations

import asyncio
import threading
from functools import partial
from types import SimpleNamespace

import pytest
from azure.cognitiveservices import speech as speechsdk

from emulators.azure_speech import AzureSpeechEmulator
from legacy_pipeline.speech_config import SpeechError, build_speech_config
from legacy_pipeline.tts import AzureSpeechSynthesizer


async def test_many_syntheses_are_in_flight_at_once() -> None:
    # More than the default executor ever has (min(32, cores + 4)): every call must be waiting in the SDK at
    # the same time for the barrier to open; with too few threads it breaks after its timeout instead.
    many = 40
    barrier = threading.Barrier(many, timeout=20)

    def speak(ssml: str, synthesis: object) -> bytes:
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


async def test_a_synthesis_the_turn_gave_up_on_is_stopped_and_its_thread_freed() -> None:
    """Audio that trickles in under the SDK's 3 s frame timeout (a chunk every 2.5 s here) is waited for to
    the end: about 80 s for this sentence. The turn's deadline answers the caller long before, but the
    synthesis went on holding one of the synthesizer's threads; a degraded service filled the pool with them
    and every later reply queued behind. Abandoned syntheses are now stopped. With a single thread, the next
    synthesis is only served if the first one's thread came back."""
    with AzureSpeechEmulator() as emulator:
        emulator.set_faults(tts_chunk_delay_s=2.5)
        synthesizer = AzureSpeechSynthesizer(
            partial(build_speech_config, key="", host=emulator.url), max_concurrent=1
        )
        try:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    await synthesizer.synthesize(
                        "A reply long enough to trickle for a minute.",
                        voice="en-US-JennyNeural",
                        language="en-US",
                    )
            emulator.set_faults(tts_chunk_delay_s=0.0)
            async with asyncio.timeout(10):
                audio = await synthesizer.synthesize("Next.", voice="en-US-JennyNeural", language="en-US")
        finally:
            await synthesizer.aclose()
    assert audio.startswith(b"RIFF")
    assert [s.outcome for s in emulator.syntheses][1:] == ["completed"]
