"""Text-to-speech with the Azure Speech SDK, straight to telephony audio.

``Riff8Khz8BitMonoMULaw`` is what ``<Play>`` plays without transcoding (the SDK adds the RIFF header
itself). The SDK's own first-chunk timeout and retry are set low so a stalled service fails in a couple
of seconds instead of the SDK default 40 s plus one retry.

Each synthesis blocks a thread on the SDK's ``get()`` for the whole request, so the synthesizer has its own
thread pool, sized for how many replies a worker synthesizes at once. On the event loop's default executor
(``min(32, cores + 4)`` threads: 6 on a 2-core box) the seventh concurrent turn waited for a free thread:
when a Voice Live outage moved a dozen calls to legacy at once, their replies queued behind each other.
A synthesis the turn gives up on (its deadline) is stopped, so its thread comes back at once: audio that
trickles in just under the SDK's frame timeout (3 s) was otherwise waited for to the end, a minute or more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from azure.cognitiveservices import speech as speechsdk

from legacy_pipeline.speech_config import SpeechError, describe_cancellation
from legacy_pipeline.ssml import build_ssml

AUDIO_FORMAT = "riff-8khz-8bit-mono-mulaw"

logger = logging.getLogger(__name__)


class Synthesizer(Protocol):
    audio_format: str

    async def synthesize(self, text: str, *, voice: str, language: str) -> bytes:
        """WAV bytes (8 kHz μ-law) saying ``text``; raises :class:`SpeechError` on failure."""
        ...

    async def aclose(self) -> None: ...


class _Synthesis:
    """One request's SDK synthesizer while it speaks, so the event loop can stop it when the turn gives up."""

    __slots__ = ("_abandoned", "_lock", "_synthesizer")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._synthesizer: speechsdk.SpeechSynthesizer | None = None
        self._abandoned = False

    def begin(self, synthesizer: speechsdk.SpeechSynthesizer) -> bool:
        """Called on the SDK thread; ``False`` when the turn gave up before the synthesis began."""
        with self._lock:
            if self._abandoned:
                return False
            self._synthesizer = synthesizer
            return True

    def end(self) -> None:
        with self._lock:
            self._synthesizer = None

    def abandon(self) -> speechsdk.SpeechSynthesizer | None:
        """The synthesizer still speaking, if any; none begins after this."""
        with self._lock:
            self._abandoned = True
            return self._synthesizer


def _stop(synthesizer: speechsdk.SpeechSynthesizer) -> None:
    # The speaking thread's get() then returns Canceled (CancelledByUser) and the synthesizer is dropped.
    synthesizer.stop_speaking_async().get()


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

    def _speak(self, ssml: str, synthesis: _Synthesis) -> bytes:
        try:
            synthesizer = self._idle.get_nowait()
        except queue.Empty:
            synthesizer = self._new_synthesizer()
        try:
            if not synthesis.begin(synthesizer):
                raise SpeechError("the turn gave up before the synthesis began")
            try:
                result = synthesizer.speak_ssml_async(ssml).get()
            finally:
                synthesis.end()
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
        synthesis = _Synthesis()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._threads, self._speak, ssml, synthesis)
        except asyncio.CancelledError:
            speaking = synthesis.abandon()
            if speaking is not None:
                # Not on the synthesizer's own pool: every one of its threads may be held by a stalled request.
                loop.run_in_executor(None, _stop, speaking).add_done_callback(_log_stop_failure)
            raise

    async def aclose(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        while True:
            try:
                self._idle.get_nowait()
            except queue.Empty:
                return


def _log_stop_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and (exc := future.exception()) is not None:
        logger.warning("could not stop an abandoned synthesis: %s", exc)
