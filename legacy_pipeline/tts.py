"""Text-to-speech with the Azure Speech SDK, straight to telephony audio.

``Riff8Khz8BitMonoMULaw`` is what ``<Play>`` plays without transcoding (the SDK adds the RIFF header
itself). The SDK's own first-chunk timeout and retry are set low so a stalled service fails in a couple
of seconds instead of the SDK default 40 s plus one retry.

Each synthesis blocks a thread on the SDK's ``get()`` for the whole request, so the synthesizer has its own
thread pool, sized for how many replies a worker synthesizes at once. On the event loop's default executor
(``min(32, cores + 4)`` threads: 6 on a 2-core box) the seventh concurrent turn waited for a free thread:
when a Voice Live outage moved a dozen calls to legacy at once, their replies queued behind each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from azure.cognitiveservices import speech as speechsdk

from legacy_pipeline.speech_config import SpeechError, describe_cancellation
from legacy_pipeline.ssml import build_ssml

AUDIO_FORMAT = "riff-8khz-8bit-mono-mulaw"


class Synthesizer(Protocol):
    audio_format: str

    async def synthesize(self, text: str, *, voice: str, language: str) -> bytes:
        """WAV bytes (8 kHz μ-law) saying ``text``; raises :class:`SpeechError` on failure."""
        ...

    async def aclose(self) -> None: ...


class AzureSpeechSynthesizer:
    """Keeps a few SDK synthesizers (each holds its service connection) and lends one per request."""

    audio_format = AUDIO_FORMAT

    def __init__(
        self,
        config_factory: Callable[[], speechsdk.SpeechConfig],
        *,
        first_chunk_timeout_ms: int = 3000,
        max_idle: int = 8,
        max_concurrent: int = 64,
    ) -> None:
        self._config_factory = config_factory
        self._first_chunk_timeout_ms = first_chunk_timeout_ms
        self._idle: queue.LifoQueue[speechsdk.SpeechSynthesizer] = queue.LifoQueue(maxsize=max_idle)
        # Threads start on demand, up to ``max_concurrent``; an idle worker holds none beyond those used.
        self._threads = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="tts")

    def _new_synthesizer(self) -> speechsdk.SpeechSynthesizer:
        config = self._config_factory()
        config.set_speech_synthesis_output_format(speechsdk.SpeechSynthesisOutputFormat.Riff8Khz8BitMonoMULaw)
        config.set_property_by_name("SpeechSynthesis_FirstChunkTimeoutMs", str(self._first_chunk_timeout_ms))
        config.set_property_by_name("SpeechSynthesis_MaxRetryTimes", "0")
        return speechsdk.SpeechSynthesizer(speech_config=config, audio_config=None)

    def _speak(self, ssml: str) -> bytes:
        try:
            synthesizer = self._idle.get_nowait()
        except queue.Empty:
            synthesizer = self._new_synthesizer()
        try:
            result = synthesizer.speak_ssml_async(ssml).get()
            if result.reason != speechsdk.ResultReason.SynthesizingAudioCompleted:
                raise SpeechError(describe_cancellation(result))
        except BaseException:
            # A failed synthesizer may hold a broken connection: let it go rather than lend it again, and
            # here: the exception keeps this frame, so it was released wherever the error was dropped, on
            # the event loop (~20 ms with a stalled connection still open, once per failed turn).
            del synthesizer
            raise
        with contextlib.suppress(queue.Full):
            self._idle.put_nowait(synthesizer)
        audio: bytes = result.audio_data
        return audio

    async def synthesize(self, text: str, *, voice: str, language: str) -> bytes:
        ssml = build_ssml(text, voice=voice, language=language)
        return await asyncio.get_running_loop().run_in_executor(self._threads, self._speak, ssml)

    async def aclose(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        while True:
            try:
                self._idle.get_nowait()
            except queue.Empty:
                return
