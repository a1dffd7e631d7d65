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


class PhraseCache:
    def __init__(
        self,
        synthesizer: Synthesizer,
        blob_store: BlobStore,
        *,
        refresh_margin: dt.timedelta = dt.timedelta(minutes=5),
    ) -> None:
        self._synthesizer = synthesizer
        self._blob_store = blob_store
        self._refresh_margin = refresh_margin
        self._entries: dict[PhraseKey, StoredAudio] = {}
        self._locks: dict[PhraseKey, asyncio.Lock] = {}

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
        """The phrase's audio URL; synthesises and uploads it on first use (one caller per phrase).

        ``on_stage("tts")`` / ``on_stage("upload")`` say what is running, so a caller whose deadline
        cancels the work knows which stage was late."""
        hit = self.cached(text, voice=voice, language=language)
        if hit is not None:
            return hit
        key: PhraseKey = (text, voice, language, self._synthesizer.audio_format)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            stored = self._entries.get(key)
            if stored is not None:
                return PhraseAudio(url=self._fresh(stored).url, cached=True)
            started = time.perf_counter()
            if on_stage is not None:
                on_stage("tts")
            try:
                audio = await self._synthesizer.synthesize(text, voice=voice, language=language)
            except Exception as exc:
                raise PhraseFailed("tts", exc) from exc
            synthesized = time.perf_counter()
            if on_stage is not None:
                on_stage("upload")
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
