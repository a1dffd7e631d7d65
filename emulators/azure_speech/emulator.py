"""``AzureSpeechEmulator``: Speech TTS + STT over USP on a free loopback port, in its own thread."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from typing import Any, Self

from emulators.azure_speech.app import SpeechApp
from emulators.azure_speech.knobs import SpeechKnobs, SpeechKnobStore
from emulators.azure_speech.records import HandshakeRecord, RecognitionRecord, SpeechLog, SynthesisRecord
from emulators.azure_speech.stt import TranscriptSource
from emulators.azure_speech.tts import voice_check
from emulators.control import EmulatorServer


class _DenialResponseNoise(logging.Filter):
    """uvicorn's websockets-sansio protocol logs this error after every *successful* handshake denial
    (the ``websocket.http.response`` extension we use for 401/503): the client did get the response."""

    MESSAGE = "ASGI callable returned without completing handshake."

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != self.MESSAGE


def _quiet_denials() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DenialResponseNoise) for f in logger.filters):
        logger.addFilter(_DenialResponseNoise())


class AzureSpeechEmulator(EmulatorServer):
    """The Speech service's USP WebSocket endpoints for the real Speech SDK.

    ``SpeechConfig(host=emulator.url)`` (no key) or
    ``SpeechConfig(endpoint=emulator.tts_endpoint / stt_endpoint(), subscription=key)``.
    The server runs on its own thread and loop, so the SDK's blocking ``.get()`` in the caller is safe.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        subscription_key: str | None = None,
        voices: Collection[str] | None = None,
        transcripts: Sequence[str] | None = None,
        knobs: SpeechKnobs | None = None,
    ) -> None:
        self.knobs = SpeechKnobStore(knobs)
        self.log = SpeechLog()
        self.transcripts = TranscriptSource(transcripts)
        app = SpeechApp(
            knobs=self.knobs,
            log=self.log,
            transcripts=self.transcripts,
            subscription_key=subscription_key,
            voice_allowed=voice_check(voices),
        )
        super().__init__(app.build(), host=host, port=port)

    @property
    def url(self) -> str:
        """``ws://host:port`` — the ``host=`` of ``SpeechConfig``."""
        return self._server.ws_url

    @property
    def http_url(self) -> str:
        """``http://host:port`` — for the control endpoints."""
        return self._server.http_url

    @property
    def tts_endpoint(self) -> str:
        return f"{self.url}/cognitiveservices/websocket/v1"

    def stt_endpoint(self, mode: str = "conversation") -> str:
        return f"{self.url}/speech/recognition/{mode}/cognitiveservices/v1"

    def start(self) -> Self:
        _quiet_denials()
        return super().start()

    def set_faults(self, **changes: Any) -> SpeechKnobs:
        """Change latency/fault knobs while running (names: :class:`SpeechKnobs`)."""
        return self.knobs.update(**changes)

    def set_transcripts(self, transcripts: Sequence[str]) -> None:
        self.transcripts.set_script(transcripts)

    @property
    def handshakes(self) -> list[HandshakeRecord]:
        return self.log.snapshot()[0]

    @property
    def syntheses(self) -> list[SynthesisRecord]:
        return self.log.snapshot()[1]

    @property
    def recognitions(self) -> list[RecognitionRecord]:
        return self.log.snapshot()[2]

    def clear_records(self) -> None:
        self.log.clear()
