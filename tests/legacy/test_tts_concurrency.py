"""Replies are synthesized side by side: the synthesizer's threads are not the event loop's small default pool."""

from __future__ import annotations

import asyncio
import threading

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
