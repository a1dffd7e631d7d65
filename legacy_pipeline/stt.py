"""Speech-to-text of a Twilio recording with the Azure Speech SDK (the ``azure`` STT mode).

Twilio's recordings are WAV; the format chunk says whether the samples are 16-bit PCM or μ-law, and the
SDK's push stream is told exactly that, so no transcoding happens here.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from azure.cognitiveservices import speech as speechsdk

from legacy_pipeline.blocking import NoFreeThread, ThreadSlots, run_blocking
from legacy_pipeline.speech_config import SpeechError, describe_cancellation

log = logging.getLogger("legacy_pipeline.stt")

SLOT_WAIT_S = 0.5  # a burst just over the thread bound waits this long for a slot; an outage fails soon after
WAVE_FORMAT_PCM = 1
WAVE_FORMAT_MULAW = 7

# Internal SDK properties (not in PropertyId; read by name in the SDK's audio stream session, and ignored by
# an SDK that does not know them). The single-shot operation timeout (default 60 s) is set to our own STT
# timeout: a result after it is discarded anyway. The stop timeout (default 10 s) bounds the wait for the
# session to stop after the result, after a stop, and when the recognizer is released; the service ends a
# turn within milliseconds of its result, so 3 s only shortens waits on a service that has gone silent.
ONE_SHOT_TIMEOUT_PROPERTY = "SPEECH-OneShotRecognition-OperationTimeoutMs"
STOP_TIMEOUT_PROPERTY = "SPEECH-StopRecognitionTimeoutInSeconds"
STOP_TIMEOUT_S = 3


class Recognizer(Protocol):
    async def transcribe(self, wav: bytes, *, language: str) -> str:
        """The caller's words ("" when nothing was recognised); raises :class:`SpeechError` on failure."""
        ...


@dataclass(frozen=True)
class WavAudio:
    format_tag: int
    sample_rate: int
    bits_per_sample: int
    channels: int
    data: bytes


def parse_wav(wav: bytes) -> WavAudio:
    """Read the ``fmt `` and ``data`` chunks of a RIFF/WAVE file (PCM or μ-law)."""
    if len(wav) < 12 or wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    offset = 12
    fmt: tuple[int, int, int, int] | None = None
    while offset + 8 <= len(wav):
        chunk_id = wav[offset : offset + 4]
        (size,) = struct.unpack_from("<I", wav, offset + 4)
        body = offset + 8
        if chunk_id == b"fmt " and size >= 16:
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", wav, body)
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise ValueError("WAVE data chunk before its fmt chunk")
            end = len(wav) if size in (0, 0xFFFFFFFF) else min(len(wav), body + size)
            tag, channels, rate, bits = fmt
            if tag not in (WAVE_FORMAT_PCM, WAVE_FORMAT_MULAW):
                raise ValueError(f"unsupported WAVE format tag {tag}")
            return WavAudio(tag, rate, bits, channels, wav[body:end])
        offset = body + size + (size & 1)
    raise ValueError("WAVE file has no data chunk")


class _SdkRecognizer(Protocol):
    """What :class:`Recognition` uses of ``speechsdk.SpeechRecognizer`` (tests stand in for it)."""

    def stop_continuous_recognition_async(self) -> speechsdk.ResultFuture: ...


class Recognition:
    """One recognition's SDK recognizer, so the turn that gave up on it can ask the SDK to end it early.

    By default ``recognize_once_async().get()`` waits 60 s for a silent service, then 10 s more for the
    session to stop, and releasing the recognizer takes 10 s more (shortened by the properties above, which
    are internal to the SDK). ``stop_continuous_recognition_async()`` is the public way to end a single-shot
    recognition early (SDK 1.53, against the emulator: the thread ends ~30 s after the stop, without those
    properties), but its own future blocks until the session stops, so :meth:`abandon` only submits it;
    the recognition's thread collects it in :meth:`end` (which releases the SDK's handle; left uncollected,
    the handle would keep the session alive). The recognizer is only ever released by that thread or the
    stopping one, never on the event loop.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._recognizer: _SdkRecognizer | None = None
        self._stop: speechsdk.ResultFuture | None = None
        self._abandoned = False

    @property
    def abandoned(self) -> bool:
        """The turn gave up on it: start no further utterance."""
        with self._lock:
            return self._abandoned

    def begin(self, recognizer: _SdkRecognizer) -> bool:
        """The recognition thread's recognizer; False when the turn already gave up (then do not start)."""
        with self._lock:
            if self._abandoned:
                return False
            self._recognizer = recognizer
            return True

    def end(self) -> None:
        """The recognition returned: wait for a submitted stop (done by now, or soon) and let both go."""
        with self._lock:
            self._recognizer = None
            stop, self._stop = self._stop, None
        if stop is not None:
            try:
                stop.get()
            except Exception:
                log.warning("stopping an abandoned recognition failed", exc_info=True)

    def abandon(self) -> None:
        """Ask the SDK to end the recognition now; called off the loop once the turn stopped waiting."""
        with self._lock:
            self._abandoned = True
            if self._recognizer is not None and self._stop is None:
                self._stop = self._recognizer.stop_continuous_recognition_async()


class AzureSpeechRecognizer:
    """One SDK recognizer per recording, each blocking a thread of its own for at most ``max_concurrent``.

    A recognition that times out is asked to stop (:class:`Recognition`) but keeps its thread (and its
    slot) until the SDK lets go, so in an outage the slots fill with abandoned recognitions and later turns
    fail at once with :class:`SpeechError` (the caller hears the apology) instead of piling up threads that
    slow every call on the worker.
    """

    def __init__(
        self,
        config_factory: Callable[[], speechsdk.SpeechConfig],
        *,
        timeout_s: float = 6.0,
        max_concurrent: int = 32,
    ) -> None:
        self._config_factory = config_factory
        self._timeout_s = timeout_s
        self._slots = ThreadSlots(max_concurrent)

    @property
    def threads_in_use(self) -> int:
        """Recognition threads still running, including those whose turn already gave up on them."""
        return self._slots.in_use

    def _new_recognizer(self, audio: WavAudio, language: str) -> speechsdk.SpeechRecognizer:
        if audio.format_tag == WAVE_FORMAT_MULAW:
            stream_format = speechsdk.audio.AudioStreamFormat(
                samples_per_second=audio.sample_rate,
                bits_per_sample=16,
                channels=audio.channels,
                wave_stream_format=speechsdk.audio.AudioStreamWaveFormat.MULAW,
            )
        else:
            stream_format = speechsdk.audio.AudioStreamFormat(
                samples_per_second=audio.sample_rate,
                bits_per_sample=audio.bits_per_sample,
                channels=audio.channels,
            )
        stream = speechsdk.audio.PushAudioInputStream(stream_format=stream_format)
        stream.write(audio.data)
        stream.close()
        config = self._config_factory()
        config.speech_recognition_language = language
        config.set_property_by_name(ONE_SHOT_TIMEOUT_PROPERTY, str(max(1, round(self._timeout_s * 1000))))
        config.set_property_by_name(STOP_TIMEOUT_PROPERTY, str(STOP_TIMEOUT_S))
        return speechsdk.SpeechRecognizer(
            speech_config=config, audio_config=speechsdk.audio.AudioConfig(stream=stream)
        )

    def _recognize(self, audio: WavAudio, language: str, recognition: Recognition) -> str:
        recognizer = self._new_recognizer(audio, language)
        if not recognition.begin(recognizer):
            raise SpeechError("recognition abandoned before it started")
        phrases: list[str] = []
        result: speechsdk.SpeechRecognitionResult | None = None
        try:
            # recognize_once ends at the caller's first pause (the service's end of an utterance), while
            # <Record> goes on through any pause shorter than its timeout: each call takes the recording's
            # next utterance, until one finds no speech or the audio has ended.
            while not recognition.abandoned:
                result = recognizer.recognize_once_async().get()
                if result.reason != speechsdk.ResultReason.RecognizedSpeech:
                    break
                phrases.append(result.text)
        finally:
            recognition.end()
        if result is None or result.reason == speechsdk.ResultReason.RecognizedSpeech:
            raise SpeechError("recognition abandoned")  # by a turn that is no longer waiting for it
        if result.reason == speechsdk.ResultReason.NoMatch or _end_of_stream(result):
            return " ".join(phrase for phrase in phrases if phrase)
        raise SpeechError(describe_cancellation(result))

    async def transcribe(self, wav: bytes, *, language: str) -> str:
        audio = parse_wav(wav)
        if not audio.data:
            return ""
        recognition = Recognition()
        try:
            return await run_blocking(
                lambda: self._recognize(audio, language, recognition),
                timeout_s=self._timeout_s,
                name="azure-stt",
                slots=self._slots,
                slot_wait_s=SLOT_WAIT_S,
                on_abandon=recognition.abandon,
            )
        except NoFreeThread as exc:
            raise SpeechError(
                f"speech recognition refused: {self._slots.limit} recognitions still running on this worker"
                " (LEGACY_STT_MAX_CONCURRENT)"
            ) from exc


def _end_of_stream(result: speechsdk.SpeechRecognitionResult) -> bool:
    """The recording's audio ran out: what follows its last utterance, not a failure."""
    details = result.cancellation_details if result.reason == speechsdk.ResultReason.Canceled else None
    return details is not None and details.reason == speechsdk.CancellationReason.EndOfStream
