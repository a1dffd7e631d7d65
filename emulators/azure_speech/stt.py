"""Speech-to-text behaviour on ``/speech/recognition/{interactive|conversation|dictation}/cognitiveservices/v1``.

Audio arrives as binary ``audio`` frames (the first one of a turn starts with a WAV header giving the
format; an empty one marks end of audio). The emulator runs an energy VAD over 10 ms frames and answers
like the service: ``turn.start`` on the first audio, ``speech.startDetected`` when speech begins,
``speech.hypothesis`` while it goes on, and once the utterance ends (trailing silence, end of audio or
the audio cap) ``speech.endDetected``, ``speech.phrase`` and ``turn.end``. Audio with no speech ends with
``RecognitionStatus: InitialSilenceTimeout`` (the SDK's ``NoMatch``). Offsets are 100 ns ticks of the
audio actually received. The recognised text comes from a script, since no real recognition happens.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import numpy as np
import orjson
from starlette.websockets import WebSocketDisconnect

from emulators.azure_speech.audio import InputFormat, decode_to_pcm16, split_riff
from emulators.azure_speech.connection import CloseConnection, UspConnection
from emulators.azure_speech.knobs import SpeechKnobs, SpeechKnobStore
from emulators.azure_speech.records import RecognitionRecord, SpeechLog
from emulators.azure_speech.usp import UspMessage, text_frame

RECOGNITION_MODES = ("interactive", "conversation", "dictation")
DEFAULT_TRANSCRIPT = "I'd like to book an appointment for next Tuesday."
TICKS_PER_MS = 10_000
_LEXICAL_DROP = re.compile(r"[^\w\s']")


class TranscriptSource:
    """The recognised texts, used in turn (cycling)."""

    def __init__(self, script: Sequence[str] | None = None) -> None:
        self._lock = threading.Lock()
        self._script = list(script or [DEFAULT_TRANSCRIPT])
        self._next = 0

    @property
    def script(self) -> list[str]:
        with self._lock:
            return list(self._script)

    def set_script(self, script: Sequence[str]) -> None:
        with self._lock:
            self._script = list(script) or [DEFAULT_TRANSCRIPT]
            self._next = 0

    def next(self) -> str:
        with self._lock:
            text = self._script[self._next % len(self._script)]
            self._next += 1
            return text


def lexical(text: str) -> str:
    return " ".join(_LEXICAL_DROP.sub("", text).lower().split())


@dataclass
class _Turn:
    """VAD state of one recognition (one ``X-RequestId``)."""

    request_id: str
    record: RecognitionRecord
    fmt: InputFormat
    samples_per_frame: int
    pending: np.ndarray[Any, Any] = field(default_factory=lambda: np.zeros(0, dtype=np.int16))
    audio_ms: int = 0
    speech_start_ms: int | None = None
    speech_end_ms: int = 0
    transcript: str = ""
    hypotheses: int = 0
    stalled: bool = False


class SttSession:
    """Serves one STT connection: consecutive ``recognize_once`` turns, each under its own request id."""

    def __init__(
        self,
        connection: UspConnection,
        *,
        mode: str,
        knobs: SpeechKnobStore,
        log: SpeechLog,
        transcripts: TranscriptSource,
    ) -> None:
        self.connection = connection
        self.mode = mode
        self.knobs = knobs
        self.log = log
        self.transcripts = transcripts
        query = parse_qs(connection.query)
        self.language = query.get("language", ["en-US"])[0]
        self.detailed = query.get("format", ["simple"])[0].lower() == "detailed"
        self._source_format = InputFormat()
        self._turn: _Turn | None = None
        self._finished: set[str] = set()

    async def run(self) -> None:
        while (message := await self.connection.receive()) is not None:
            if isinstance(message.body, bytes):
                if message.path == "audio":
                    await self._audio(message)
            elif message.path == "speech.config":
                self._read_source_format(message.body)
            elif message.path == "speech.context":
                self._read_language(message.body)

    def _read_source_format(self, body: str) -> None:
        try:
            source = orjson.loads(body)["context"]["audio"]["source"]
            self._source_format = InputFormat(
                channels=int(source.get("channelcount", 1)),
                sample_rate=int(source.get("samplerate", 16000)),
                bits_per_sample=int(source.get("bitspersample", 16)),
            )
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
            pass  # keep the default: 16 kHz 16-bit mono PCM

    def _read_language(self, body: str) -> None:
        try:
            language = orjson.loads(body)["phraseDetection"]["language"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        if isinstance(language, str) and language:
            self.language = language

    async def _audio(self, message: UspMessage) -> None:
        request_id = message.request_id
        payload = message.body
        assert isinstance(payload, bytes)
        if request_id in self._finished:
            return  # audio the SDK still streams after the phrase
        turn = self._turn
        if turn is None or turn.request_id != request_id:
            turn = self._turn = await self._start_turn(request_id, payload)
            if turn is None:
                return
            riff = split_riff(payload)
            if riff is not None:
                payload = riff[1]
                if not payload:
                    return  # the header-only first frame; an empty frame *later* means end of audio
        if turn.stalled:
            return
        if not payload:
            await self._finish(turn, end_of_audio=True)
            return
        knobs = self.knobs.snapshot()
        if await self._feed(turn, payload, knobs):
            await self._finish(turn, end_of_audio=False)

    async def _start_turn(self, request_id: str, first_payload: bytes) -> _Turn | None:
        riff = split_riff(first_payload)
        fmt = riff[0] if riff is not None else self._source_format
        record = RecognitionRecord(
            request_id=request_id,
            connection_id=self.connection.connection_id,
            mode=self.mode,
            language=self.language,
            audio_format=fmt.to_dict(),
        )
        self.log.add_recognition(record)
        fault = self.knobs.take_fault()
        if fault.kind == "close":
            record.status = f"closed:{fault.close_code}"
            raise CloseConnection(fault.close_code, fault.close_reason)
        turn = _Turn(request_id, record, fmt, samples_per_frame=max(1, fmt.sample_rate // 100))
        if fault.kind == "stall":
            record.status = "stalled"
            turn.stalled = True
            return turn
        await self._send("turn.start", request_id, {"context": {"serviceTag": uuid.uuid4().hex}})
        return turn

    async def _feed(self, turn: _Turn, payload: bytes, knobs: SpeechKnobs) -> bool:
        """Run the VAD over new audio; ``True`` once the utterance is over."""
        samples = decode_to_pcm16(turn.fmt, payload)
        pending = np.concatenate((turn.pending, samples)) if turn.pending.size else samples
        frames = pending.size // turn.samples_per_frame
        turn.pending = pending[frames * turn.samples_per_frame :]
        if frames == 0:
            return False
        block = pending[: frames * turn.samples_per_frame].astype(np.float64).reshape(frames, -1)
        rms = np.sqrt(np.mean(block * block, axis=1))
        threshold = 32768.0 * 10 ** (knobs.stt_threshold_dbfs / 20)
        for loud in rms > threshold:
            turn.audio_ms += 10
            if loud:
                if turn.speech_start_ms is None:
                    turn.speech_start_ms = turn.audio_ms - 10
                    turn.transcript = self.transcripts.next()
                    await self._send(
                        "speech.startDetected", turn.request_id, {"Offset": _ticks(turn.speech_start_ms)}
                    )
                turn.speech_end_ms = turn.audio_ms
                spoken = turn.speech_end_ms - turn.speech_start_ms
                if spoken >= (turn.hypotheses + 1) * knobs.stt_hypothesis_every_ms:
                    await self._hypothesis(turn)
            if (
                turn.speech_start_ms is not None
                and turn.audio_ms - turn.speech_end_ms >= knobs.stt_end_silence_ms
            ):
                return True
            if turn.speech_start_ms is None and turn.audio_ms >= knobs.stt_initial_silence_ms:
                return True
            if turn.audio_ms >= knobs.stt_max_audio_ms:
                return True
        return False

    async def _hypothesis(self, turn: _Turn) -> None:
        words = lexical(turn.transcript).split()
        count = min(len(words), 2 * (turn.hypotheses + 1))
        turn.hypotheses += 1
        assert turn.speech_start_ms is not None
        await self._send(
            "speech.hypothesis",
            turn.request_id,
            {
                "Text": " ".join(words[:count]),
                "Offset": _ticks(turn.speech_start_ms),
                "Duration": _ticks(turn.speech_end_ms - turn.speech_start_ms),
            },
        )

    async def _finish(self, turn: _Turn, *, end_of_audio: bool) -> None:
        try:
            await self._answer(turn)
        except WebSocketDisconnect:
            turn.record.status = "disconnected"
            raise

    async def _answer(self, turn: _Turn) -> None:
        self._finished.add(turn.request_id)
        self._turn = None
        knobs = self.knobs.snapshot()
        record = turn.record
        record.audio_ms = turn.audio_ms
        await self.connection.pause(knobs.stt_latency_s)
        rid = turn.request_id
        if turn.speech_start_ms is None:
            record.status = "InitialSilenceTimeout"
            await self._send("speech.endDetected", rid, {"Offset": _ticks(turn.audio_ms)})
            await self._send(
                "speech.phrase",
                rid,
                {
                    "RecognitionStatus": "InitialSilenceTimeout",
                    "Offset": 0,
                    "Duration": _ticks(turn.audio_ms),
                },
            )
        else:
            if turn.hypotheses == 0:
                await self._hypothesis(turn)
            start, end = turn.speech_start_ms, turn.speech_end_ms
            record.speech_start_ms, record.speech_end_ms = start, end
            record.status, record.text = "Success", turn.transcript
            await self._send("speech.endDetected", rid, {"Offset": _ticks(end)})
            phrase: dict[str, Any] = {
                "RecognitionStatus": "Success",
                "DisplayText": turn.transcript,
                "Offset": _ticks(start),
                "Duration": _ticks(end - start),
                "Channel": 0,
            }
            if self.detailed:
                text = lexical(turn.transcript)
                phrase["NBest"] = [
                    {
                        "Confidence": 0.93,
                        "Lexical": text,
                        "ITN": text,
                        "MaskedITN": text,
                        "Display": turn.transcript,
                    }
                ]
            await self._send("speech.phrase", rid, phrase)
        await self._send("turn.end", rid, {})

    async def _send(self, path: str, request_id: str, body: dict[str, Any]) -> None:
        await self.connection.send_text(text_frame(path, request_id, orjson.dumps(body).decode()))


def _ticks(ms: int) -> int:
    return ms * TICKS_PER_MS
