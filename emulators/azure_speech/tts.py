"""Text-to-speech behaviour on ``/cognitiveservices/websocket/v1``.

Per ``ssml`` request (after its ``synthesis.context``): ``turn.start``, ``response`` (stream id), binary
``audio`` frames of raw audio in the requested format whose length follows the spoken text, an
``audio.metadata`` SessionEnd (sets the SDK's ``audio_duration``) and ``turn.end``. A request the real
service would refuse (malformed SSML, unknown voice, a format it cannot produce) closes the socket with
1007 and a reason, which the SDK reports as ``Canceled``/``BadRequest`` with the reason in its details.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Callable, Collection
from typing import Any

import orjson
from starlette.websockets import WebSocketDisconnect

from emulators.azure_speech.audio import OutputFormat, parse_output_format, synthesize
from emulators.azure_speech.connection import CloseConnection, UspConnection
from emulators.azure_speech.knobs import Fault, SpeechKnobStore
from emulators.azure_speech.records import SpeechLog, SynthesisRecord
from emulators.azure_speech.ssml import SsmlError, parse_ssml
from emulators.azure_speech.usp import UspMessage, audio_frame, text_frame

log = logging.getLogger("emulators.azure_speech")

DEFAULT_OUTPUT_FORMAT = "raw-16khz-16bit-mono-pcm"
_NEURAL_VOICE = re.compile(r"^[a-z]{2,3}-[A-Z]{2,4}-[A-Za-z0-9:]+Neural$")
TICKS_PER_MS = 10_000


def voice_check(allowed: Collection[str] | None) -> Callable[[str], bool]:
    """``None``: any ``xx-XX-…Neural`` name; otherwise exactly the names given."""
    if allowed is None:
        return lambda name: bool(_NEURAL_VOICE.match(name))
    names = set(allowed)
    return lambda name: name in names


class TtsSession:
    """Serves one TTS connection until the client leaves or a fault closes it."""

    def __init__(
        self,
        connection: UspConnection,
        *,
        knobs: SpeechKnobStore,
        log: SpeechLog,
        voice_allowed: Callable[[str], bool],
    ) -> None:
        self.connection = connection
        self.knobs = knobs
        self.log = log
        self.voice_allowed = voice_allowed
        self._contexts: dict[str, dict[str, Any]] = {}

    async def run(self) -> None:
        while (message := await self.connection.receive()) is not None:
            if isinstance(message.body, bytes):
                continue
            if message.path == "synthesis.context":
                self._remember_context(message)
            elif message.path == "ssml":
                await self._synthesize(message)
            # speech.config, telemetry and unknown paths are ignored, as the service does

    def _remember_context(self, message: UspMessage) -> None:
        try:
            context = orjson.loads(message.body)
        except orjson.JSONDecodeError as exc:
            raise CloseConnection(1007, "synthesis.context is not valid JSON") from exc
        if isinstance(context, dict):
            self._contexts[message.request_id] = context
            if len(self._contexts) > 64:  # a client that never sends ssml must not grow this forever
                self._contexts.pop(next(iter(self._contexts)))

    def _output_format(self, request_id: str) -> tuple[str, dict[str, Any]]:
        context = self._contexts.pop(request_id, {})
        synthesis = context.get("synthesis") or {}
        audio = synthesis.get("audio") or {} if isinstance(synthesis, dict) else None
        if not isinstance(audio, dict):
            raise CloseConnection(1007, "synthesis.context: synthesis and its audio must be objects")
        name = audio.get("outputFormat") or DEFAULT_OUTPUT_FORMAT
        metadata = audio.get("metadataOptions") or {}
        return str(name), metadata if isinstance(metadata, dict) else {}

    async def _synthesize(self, message: UspMessage) -> None:
        request_id = message.request_id
        format_name, metadata = self._output_format(request_id)
        assert isinstance(message.body, str)
        record = SynthesisRecord(
            request_id=request_id,
            connection_id=self.connection.connection_id,
            output_format=format_name,
            ssml=message.body,
        )
        self.log.add_synthesis(record)
        if not request_id:
            record.outcome = "rejected:1007"
            raise CloseConnection(1007, "ssml message without X-RequestId")
        try:
            parsed = parse_ssml(message.body)
        except SsmlError as exc:
            record.outcome = "rejected:1007"
            raise CloseConnection(1007, str(exc)) from exc
        record.voice, record.text = parsed.voices[0], parsed.text
        for voice in parsed.voices:
            if not self.voice_allowed(voice):
                record.outcome = "rejected:1007"
                raise CloseConnection(1007, f"Unsupported voice {voice}.")
        fmt = parse_output_format(format_name)
        if fmt is None:
            record.outcome = "rejected:1007"
            raise CloseConnection(1007, f"Unsupported output format {format_name}.")

        fault = self.knobs.take_fault()
        if fault.kind == "stall":
            record.outcome = "stalled"
            return
        if fault.kind == "close" and fault.close_after_chunks <= 0:
            record.outcome = f"closed:{fault.close_code}"
            raise CloseConnection(fault.close_code, fault.close_reason)

        knobs = self.knobs.snapshot()
        duration_ms = round(len(parsed.text) * knobs.tts_ms_per_char) + parsed.pause_ms
        audio = await asyncio.to_thread(synthesize, fmt, duration_ms, parsed.text)
        record.duration_ms = duration_ms
        try:
            await self._send_turn(request_id, fmt, audio, duration_ms, metadata, record, fault)
        except WebSocketDisconnect:
            record.outcome = "disconnected"
            raise

    async def _send_turn(
        self,
        request_id: str,
        fmt: OutputFormat,
        audio: bytes,
        duration_ms: int,
        metadata: dict[str, Any],
        record: SynthesisRecord,
        fault: Fault,
    ) -> None:
        knobs = self.knobs.snapshot()
        send = self.connection.send_text
        service_tag = uuid.uuid4().hex
        stream_id = uuid.uuid4().hex.upper()
        await send(text_frame("turn.start", request_id, _json({"context": {"serviceTag": service_tag}})))
        await send(
            text_frame(
                "response",
                request_id,
                _json(
                    {
                        "context": {"serviceTag": service_tag},
                        "audio": {"type": "inline", "streamId": stream_id},
                    }
                ),
            )
        )
        await self.connection.pause(knobs.tts_first_chunk_delay_s)
        step = max(1, int(fmt.bytes_per_ms * knobs.tts_chunk_ms))
        if fmt.encoding == "pcm":
            step -= step % 2
        for index, start in enumerate(range(0, len(audio), step)):
            if fault.kind == "close" and index >= fault.close_after_chunks:
                record.outcome = f"closed:{fault.close_code}"
                raise CloseConnection(fault.close_code, fault.close_reason)
            if index:
                await self.connection.pause(knobs.tts_chunk_delay_s)
            await self.connection.send_bytes(audio_frame(request_id, stream_id, audio[start : start + step]))
            record.audio_bytes += len(audio[start : start + step])
        if fault.kind == "close":  # fewer chunks than close_after_chunks: closed after the last one
            record.outcome = f"closed:{fault.close_code}"
            raise CloseConnection(fault.close_code, fault.close_reason)
        if metadata.get("sessionEndEnabled", True):
            session_end = {
                "Metadata": [{"Type": "SessionEnd", "Data": {"Offset": duration_ms * TICKS_PER_MS}}]
            }
            await send(text_frame("audio.metadata", request_id, _json(session_end)))
        await send(text_frame("turn.end", request_id, "{}"))
        record.outcome = "completed"


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()
