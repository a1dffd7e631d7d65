"""Fixed phrases are synthesised single-flight: when TTS stalls, concurrent callers share one attempt and all
fall back to <Say> together, and the failure is remembered briefly so the next callers do not each retry."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from legacy_pipeline.blob_store import StoredAudio
from legacy_pipeline.phrase_cache import PhraseCache, PhraseFailed
from legacy_pipeline.speech_config import SpeechError
from tests.legacy.conftest import HarnessFactory

TEXT, VOICE, LANGUAGE = "Hello there.", "en-US-AvaNeural", "en-US"
LONG = dt.timedelta(minutes=10)  # the negative cache outlives the test


class GatedSynthesizer:
    """Each synthesis waits for ``release`` and then fails or answers, as ``fail`` says."""

    audio_format = "riff-8khz-8bit-mono-mulaw"

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.fail = True

    async def synthesize(self, text: str, *, voice: str, language: str) -> bytes:
        self.calls += 1
        await self.release.wait()
        if self.fail:
            raise SpeechError("first chunk timeout")
        return b"RIFF audio"

    async def aclose(self) -> None:
        return None


class MemoryBlobs:
    def __init__(self) -> None:
        self.uploads: list[str] = []

    def _stored(self, name: str) -> StoredAudio:
        return StoredAudio(name, f"https://blobs/{name}?sas", dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))

    async def upload_turn_audio(self, data: bytes) -> StoredAudio:
        raise AssertionError("phrases are uploaded with upload_phrase_audio")

    async def upload_phrase_audio(self, name: str, data: bytes) -> StoredAudio:
        self.uploads.append(name)
        return self._stored(name)

    def read_url(self, name: str) -> StoredAudio:
        return self._stored(name)

    async def delete_older_than(self, cutoff: dt.datetime) -> int:
        return 0

    async def aclose(self) -> None:
        return None


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_concurrent_waiters_share_one_failed_synthesis_and_the_failure_is_remembered() -> None:
    tts, blobs = GatedSynthesizer(), MemoryBlobs()
    cache = PhraseCache(tts, blobs, failure_ttl=LONG)
    waiters = [asyncio.create_task(cache.get(TEXT, voice=VOICE, language=LANGUAGE)) for _ in range(4)]
    await _settle()
    assert tts.calls == 1
    tts.release.set()
    results = await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), 5.0)
    assert all(isinstance(r, PhraseFailed) and r.stage == "tts" for r in results)
    # Inside the window the next caller fails at once, without a new synthesis.
    with pytest.raises(PhraseFailed):
        await asyncio.wait_for(cache.get(TEXT, voice=VOICE, language=LANGUAGE), 5.0)
    assert tts.calls == 1


async def test_after_the_failure_window_one_caller_tries_again_for_everyone() -> None:
    tts, blobs = GatedSynthesizer(), MemoryBlobs()
    tts.release.set()
    cache = PhraseCache(tts, blobs, failure_ttl=dt.timedelta(milliseconds=50))
    with pytest.raises(PhraseFailed):
        await cache.get(TEXT, voice=VOICE, language=LANGUAGE)
    await asyncio.sleep(0.2)  # past the window
    tts.fail = False
    tts.release.clear()
    waiters = [asyncio.create_task(cache.get(TEXT, voice=VOICE, language=LANGUAGE)) for _ in range(3)]
    await _settle()
    tts.release.set()
    results = await asyncio.wait_for(asyncio.gather(*waiters), 5.0)
    assert tts.calls == 2 and len(blobs.uploads) == 1
    assert len({r.url for r in results}) == 1
    # Only the caller that started the work reports it (timings, characters to bill).
    assert sorted(r.cached for r in results) == [False, True, True]
    assert cache.cached(TEXT, voice=VOICE, language=LANGUAGE) is not None


async def test_a_cancelled_waiter_does_not_cancel_the_shared_synthesis() -> None:
    tts, blobs = GatedSynthesizer(), MemoryBlobs()
    tts.fail = False
    cache = PhraseCache(tts, blobs, failure_ttl=LONG)
    stages: list[str] = []
    first = asyncio.create_task(cache.get(TEXT, voice=VOICE, language=LANGUAGE, on_stage=stages.append))
    second = asyncio.create_task(cache.get(TEXT, voice=VOICE, language=LANGUAGE))
    await _settle()
    first.cancel()  # the caller that started the synthesis hits its deadline
    await _settle()
    assert first.cancelled() and not second.done()
    tts.release.set()
    phrase = await asyncio.wait_for(second, 5.0)
    assert tts.calls == 1 and blobs.uploads and phrase.url.startswith("https://blobs/")
    assert stages == ["tts"]  # the cancelled caller's timer is not touched after it left


async def test_concurrent_greetings_during_a_tts_stall_share_one_synthesis(legacy: HarnessFactory) -> None:
    h = await legacy()  # TTS first-chunk timeout 1.5 s, turn deadline 5 s
    h.speech.set_faults(stall_next=-1)
    calls = ["CA" + f"{i:x}" * 32 for i in range(1, 5)]
    greetings = await asyncio.gather(*(h.twilio.incoming_call(c) for c in calls))
    assert all(g.says == [h.profile.greeting] and not g.plays for g in greetings)
    # Before: each caller ran its own synthesis after the previous one timed out (4 attempts, 1.5 s each).
    assert len(h.speech.syntheses) == 1
    # The next caller, inside the failure window, falls back at once without another attempt.
    late = await h.twilio.incoming_call("CA" + "5" * 32)
    assert late.says == [h.profile.greeting]
    assert len(h.speech.syntheses) == 1
