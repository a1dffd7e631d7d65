"""The swappable clients of the legacy pipeline, built from settings in one place.

Tests and benchmarks build a :class:`LegacyServices` of their own (or point the settings at emulators);
production calls :func:`build_services`. A service without configuration is replaced by a stand-in that
fails every call with a clear message, so the app still starts and the turn loop answers with its apology
(and records why) instead of crashing.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from legacy_pipeline.blob_store import AzureBlobAudioStore, BlobStore, StoredAudio
from legacy_pipeline.llm import ChatMessage, ChatModel, ChatReply, openai_chat_model
from legacy_pipeline.recordings import RecordingFetcher, TwilioRecordingFetcher
from legacy_pipeline.speech_config import build_speech_config
from legacy_pipeline.stt import AzureSpeechRecognizer, Recognizer
from legacy_pipeline.tts import AUDIO_FORMAT, AzureSpeechSynthesizer, Synthesizer
from router.settings import Settings

log = logging.getLogger("legacy_pipeline.services")


class NotConfigured(RuntimeError):
    """A legacy service is used but its settings are missing."""


@dataclass
class LegacyServices:
    llm: ChatModel
    synthesizer: Synthesizer
    blob_store: BlobStore
    recognizer: Recognizer
    recordings: RecordingFetcher

    async def aclose(self) -> None:
        for closer in (
            self.llm.aclose,
            self.synthesizer.aclose,
            self.blob_store.aclose,
            self.recordings.aclose,
        ):
            try:
                await closer()
            except Exception:
                log.warning("closing a legacy service failed", exc_info=True)


class _Unconfigured:
    """Stands in for any one service; every call raises :class:`NotConfigured` naming the settings."""

    audio_format = AUDIO_FORMAT

    def __init__(self, what: str) -> None:
        self._what = what

    def _fail(self) -> NotConfigured:
        return NotConfigured(f"{self._what} is not configured")

    async def reply(
        self,
        messages: Sequence[ChatMessage],
        *,
        temperature: float,
        max_tokens: int,
        tools: Sequence[dict[str, Any]] = (),
        tool_choice: str = "auto",
    ) -> ChatReply:
        raise self._fail()

    async def synthesize(self, text: str, *, voice: str, language: str) -> bytes:
        raise self._fail()

    async def transcribe(self, wav: bytes, *, language: str) -> str:
        raise self._fail()

    async def fetch(self, recording_url: str) -> bytes:
        raise self._fail()

    async def upload_turn_audio(self, data: bytes) -> StoredAudio:
        raise self._fail()

    async def upload_phrase_audio(self, name: str, data: bytes) -> StoredAudio:
        raise self._fail()

    def read_url(self, name: str) -> StoredAudio:
        raise self._fail()

    async def delete_older_than(self, cutoff: dt.datetime) -> int:
        return 0

    async def aclose(self) -> None:
        return None


def build_services(settings: Settings) -> LegacyServices:
    deadline = settings.legacy_turn_deadline_seconds
    llm: Any
    if (
        settings.azure_openai_endpoint
        or settings.openai_api_key.get_secret_value()
        or settings.openai_base_url
    ):
        llm = openai_chat_model(
            azure_endpoint=settings.azure_openai_endpoint,
            azure_api_key=settings.azure_openai_api_key.get_secret_value(),
            azure_deployment=settings.azure_openai_deployment,
            azure_api_version=settings.azure_openai_api_version,
            openai_api_key=settings.openai_api_key.get_secret_value(),
            openai_base_url=settings.openai_base_url,
            openai_model=settings.openai_model,
            timeout_s=deadline,
        )
    else:
        llm = _Unconfigured("the LLM (AZURE_OPENAI_ENDPOINT or OPENAI_API_KEY / OPENAI_BASE_URL)")

    synthesizer: Any
    recognizer: Any
    if settings.azure_speech_host or settings.azure_speech_region:
        config_factory = partial(
            build_speech_config,
            key=settings.azure_speech_key.get_secret_value(),
            region=settings.azure_speech_region,
            host=settings.azure_speech_host,
        )
        synthesizer = AzureSpeechSynthesizer(
            config_factory,
            first_chunk_timeout_ms=settings.legacy_tts_first_chunk_timeout_ms,
            max_concurrent=settings.legacy_tts_max_concurrent,
        )
        recognizer = AzureSpeechRecognizer(
            config_factory,
            timeout_s=settings.legacy_stt_timeout_seconds,
            max_concurrent=settings.legacy_stt_max_concurrent,
        )
    else:
        synthesizer = recognizer = _Unconfigured("Azure Speech (AZURE_SPEECH_REGION or AZURE_SPEECH_HOST)")

    blob_store: Any
    connection_string = settings.azure_storage_connection_string.get_secret_value()
    if connection_string:
        blob_store = AzureBlobAudioStore(
            connection_string,
            settings.azure_storage_container,
            sas_ttl=dt.timedelta(minutes=settings.legacy_blob_sas_minutes),
        )
    else:
        blob_store = _Unconfigured("Blob storage (AZURE_STORAGE_CONNECTION_STRING)")

    recordings: Any
    if settings.twilio_account_sid and settings.twilio_auth_token.get_secret_value():
        recordings = TwilioRecordingFetcher(
            account_sid=settings.twilio_account_sid,
            auth_token=settings.twilio_auth_token.get_secret_value(),
            api_origin=settings.twilio_api_base_url,
            timeout_s=deadline,
        )
    else:
        recordings = _Unconfigured("the Twilio recording download (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN)")

    return LegacyServices(
        llm=llm, synthesizer=synthesizer, blob_store=blob_store, recognizer=recognizer, recordings=recordings
    )
