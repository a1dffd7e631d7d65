"""Fixed phrases (greeting, re-prompt, goodbye, resume line) synthesised and uploaded once, then reused.

Keyed by text, voice, language and audio format. The in-memory entry holds the blob name and a SAS URL;
when the URL is close to expiring a new one is signed locally (no request). The blob lives under the
``phrases/`` prefix, which the clean-up skips, and its name is derived from the key, so every replica
and every restart writes the same blob instead of piling up copies.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from legacy_pipeline.blob_store import BlobStore, StoredAudio
from legacy_pipeline.tts import Synthesizer


@dataclass(frozen=True)
class PhraseAudio:
    url: str
    cached: bool
    tts_ms: float = 0.0
    upload_ms: float = 0.0
    chars: int = 0


class PhraseFailed(Exception):
    """Synthesising or uploading a phrase failed; ``stage`` says which (``tts`` or ``upload``)."""

    def __init__(self, stage: str, cause: Exception) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.stage = stage
        self.cause = cause


PhraseKey = tuple[str, str, str, str]  # text, voice, language, audio format


def phrase_blob_name(key: PhraseKey) -> str:
    return hashlib.sha256("\x1f".join(key).encode()).hexdigest()[:40]


class _Flight:
    """One synthesis-and-upload of a phrase, shared by every caller waiting for that phrase.

    Callers come and go (each under its own deadline); the stage listeners let each one's timer say which
    stage was running when it gave up, without the flight holding on to callers that have left."""

    def __init__(self) -> None:
        self.stage: str | None = None
        self.listeners: set[Callable[[str], None]] = set()
        self.task: asyncio.Task[PhraseAudio] | None = None

    def enter(self, stage: str) -> None:
        self.stage = stage
        for listener in list(self.listeners):
            listener(stage)


class PhraseCache:
    def __init__(
        self,
        synthesizer: Synthesizer,
        blob_store: BlobStore,
        *,
        refresh_margin: dt.timedelta = dt.timedelta(minutes=5),
        failure_ttl: dt.timedelta = dt.timedelta(seconds=5),
    ) -> None:
        """``failure_ttl``: how long a failed phrase fails at once (callers fall back to ``<Say>``) before
        one caller tries it again, so an outage costs one synthesis attempt per window, not one per call."""
        self._synthesizer = synthesizer
        self._blob_store = blob_store
        self._refresh_margin = refresh_margin
        self._failure_ttl_s = failure_ttl.total_seconds()
        self._entries: dict[PhraseKey, StoredAudio] = {}
        self._flights: dict[PhraseKey, _Flight] = {}
        self._failures: dict[PhraseKey, tuple[float, PhraseFailed]] = {}

    def _fresh(self, stored: StoredAudio) -> StoredAudio:
        if stored.expires_at - dt.datetime.now(dt.UTC) > self._refresh_margin:
            return stored
        return self._blob_store.read_url(stored.name)

    def cached(self, text: str, *, voice: str, language: str) -> PhraseAudio | None:
        """The phrase's URL if it is already stored (no await: the greeting's hot path), else None."""
        key: PhraseKey = (text, voice, language, self._synthesizer.audio_format)
        stored = self._entries.get(key)
        if stored is None:
            return None
        fresh = self._fresh(stored)
        if fresh is not stored:
            self._entries[key] = fresh
        return PhraseAudio(url=fresh.url, cached=True)

    async def get(
        self, text: str, *, voice: str, language: str, on_stage: Callable[[str], None] | None = None
    ) -> PhraseAudio:
        """The phrase's audio URL; synthesises and uploads it on first use.

        Single flight per phrase: concurrent callers share one synthesis, so when TTS stalls they all fail
        together after one first-chunk timeout instead of each waiting out its own in turn. A failure is
        remembered for ``failure_ttl`` (callers fail at once). A caller that is cancelled leaves the shared
        work running for the others. Only the caller that started the work gets ``cached=False`` (and the
        timings and characters to bill); the others get ``cached=True``.

        ``on_stage("tts")`` / ``on_stage("upload")`` say what is running, so a caller whose deadline
        cancels the work knows which stage was late."""
        hit = self.cached(text, voice=voice, language=language)
        if hit is not None:
            return hit
        key: PhraseKey = (text, voice, language, self._synthesizer.audio_format)
        failure = self._failures.get(key)
        if failure is not None:
            until, failed = failure
            if time.monotonic() < until:
                raise PhraseFailed(failed.stage, failed.cause) from failed.cause
            del self._failures[key]
        flight = self._flights.get(key)
        started_here = flight is None
        if flight is None:
            flight = self._flights[key] = self._take_off(key)
        assert flight.task is not None
        if on_stage is not None:
            if flight.stage is not None:
                on_stage(flight.stage)
            flight.listeners.add(on_stage)
        try:
            # shield: this caller's deadline cancels its own wait, never the synthesis the others share.
            result = await asyncio.shield(flight.task)
        except PhraseFailed as exc:
            raise PhraseFailed(exc.stage, exc.cause) from exc.cause
        finally:
            if on_stage is not None:
                flight.listeners.discard(on_stage)
        if started_here:
            return result
        return PhraseAudio(url=result.url, cached=True)

    def _take_off(self, key: PhraseKey) -> _Flight:
        flight = _Flight()
        flight.task = asyncio.create_task(self._produce(key, flight), name="phrase-cache-fill")
        flight.task.add_done_callback(lambda task: self._landed(key, flight, task))
        return flight

    def _landed(self, key: PhraseKey, flight: _Flight, task: asyncio.Task[PhraseAudio]) -> None:
        """The flight is over: forget it, and remember a failure for ``failure_ttl``."""
        if self._flights.get(key) is flight:
            del self._flights[key]
        if task.cancelled():
            return
        exc = task.exception()  # retrieved even when every waiter has left
        if isinstance(exc, PhraseFailed) and self._failure_ttl_s > 0:
            self._failures[key] = (time.monotonic() + self._failure_ttl_s, exc)

    async def _produce(self, key: PhraseKey, flight: _Flight) -> PhraseAudio:
        text, voice, language, _ = key
        started = time.perf_counter()
        flight.enter("tts")
        try:
            audio = await self._synthesizer.synthesize(text, voice=voice, language=language)
        except Exception as exc:
            raise PhraseFailed("tts", exc) from exc
        synthesized = time.perf_counter()
        flight.enter("upload")
        try:
            stored = await self._blob_store.upload_phrase_audio(phrase_blob_name(key), audio)
        except Exception as exc:
            raise PhraseFailed("upload", exc) from exc
        uploaded = time.perf_counter()
        self._entries[key] = stored
        return PhraseAudio(
            url=stored.url,
            cached=False,
            tts_ms=(synthesized - started) * 1000.0,
            upload_ms=(uploaded - synthesized) * 1000.0,
            chars=len(text),
        )

    def __len__(self) -> int:
        return len(self._entries)
