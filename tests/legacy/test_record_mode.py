"""The ``azure`` STT mode: <Record>, download with Twilio's Basic auth, Azure Speech SDK transcription."""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from emulators.runner import ServerThread
from emulators.speechlike import silence_ulaw, speechlike_pcm16, ulaw_decode
from legacy_pipeline.recordings import TwilioRecordingFetcher
from legacy_pipeline.stt import AzureSpeechRecognizer, Recognition, WavAudio
from tests.legacy.conftest import AUTH_TOKEN, HarnessFactory
from tests.legacy.twilio_script import ACCOUNT_SID, Twiml

CALL = "CA" + "c" * 32


def pcm_wav(pcm: bytes) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(pcm)
    return buffer.getvalue()


@dataclass
class RecordingServer:
    """Twilio's recordings endpoint: serves ``{RecordingUrl}.wav`` to HTTP Basic ``AccountSid:AuthToken``."""

    server: ServerThread
    authorizations: list[str | None] = field(default_factory=list)
    wavs: dict[str, bytes] = field(default_factory=dict)
    """Recordings other than the default one, by RecordingSid."""

    def url(self, recording_sid: str) -> str:
        return f"{self.server.http_url}/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/{recording_sid}"


@pytest.fixture(scope="module")
def recordings() -> Iterator[RecordingServer]:
    speech = speechlike_pcm16(1500, seed=3).tobytes()
    silence = ulaw_decode(silence_ulaw(400)).tobytes()
    wav = pcm_wav(silence + speech + silence)
    expected = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    seen: list[str | None] = []
    wavs: dict[str, bytes] = {}

    async def recording(request: Request) -> Response:
        seen.append(request.headers.get("authorization"))
        if request.headers.get("authorization") != expected:
            return Response(status_code=401, headers={"WWW-Authenticate": 'Basic realm="Twilio API"'})
        return Response(wavs.get(request.path_params["sid"], wav), media_type="audio/x-wav")

    app = Starlette(routes=[Route("/2010-04-01/Accounts/{account}/Recordings/{sid}.wav", recording)])
    with ServerThread(app) as server:
        yield RecordingServer(server, seen, wavs)


async def test_record_mode_transcribes_with_azure(
    legacy: HarnessFactory, recordings: RecordingServer
) -> None:
    h = await legacy(legacy_stt_mode="azure", twilio_api_base_url=recordings.server.http_url)
    h.speech.set_transcripts(["I need to move my appointment."])
    greeting = await h.twilio.incoming_call(CALL)
    assert greeting.gather is None and greeting.record is not None
    assert greeting.record["action"] == f"{h.url}/legacy/recording"
    assert greeting.record["playBeep"] == "false"

    params = h.twilio.params(
        CALL,
        RecordingUrl=recordings.url("RE" + "1" * 32),
        RecordingSid="RE" + "1" * 32,
        RecordingDuration="2",
    )
    reply = Twiml.parse(await h.twilio.post(greeting.action, params))
    assert len(reply.plays) == 1 and reply.record is not None, reply.text
    assert recordings.authorizations[-1] is not None and recordings.authorizations[-1].startswith("Basic ")
    # What follows the first utterance is listened to as well (speech after a pause): here only silence.
    recognition, *rest = h.speech.recognitions
    assert recognition.language == "en-US" and recognition.status == "Success"
    assert [r.status for r in rest] in ([], ["InitialSilenceTimeout"])
    assert h.openai.requests[-1].body["messages"][-1]["content"] == "I need to move my appointment."
    (turn,) = [t for t in await h.list_turns(CALL) if t["turn"] == 1]
    assert turn["user_text"] == "I need to move my appointment."
    assert {"recording", "stt", "llm_total", "tts", "upload", "endpointing"} <= set(turn["stages"])
    assert turn["usage"]["stt_audio_ms"] == 2300  # what speech-to-text bills: 0.4 + 1.5 + 0.4 s recorded


async def test_record_mode_transcribes_every_utterance_of_the_recording(
    legacy: HarnessFactory, recordings: RecordingServer
) -> None:
    """<Record> ends after 2 s of silence, but one recognize_once ends at the caller's first pause: the model
    was given the first sentence only, and answered half of what the caller said."""
    h = await legacy(legacy_stt_mode="azure", twilio_api_base_url=recordings.server.http_url)
    h.speech.set_transcripts(["I'd like to book a cleaning.", "On Tuesday morning, please."])
    pause = ulaw_decode(silence_ulaw(1000)).tobytes()  # a breath: longer than an utterance's end, not 2 s
    sid = "RE" + "7" * 32
    recordings.wavs[sid] = pcm_wav(
        speechlike_pcm16(1200, seed=1).tobytes() + pause + speechlike_pcm16(1200, seed=2).tobytes()
    )
    greeting = await h.twilio.incoming_call(CALL)
    params = h.twilio.params(CALL, RecordingUrl=recordings.url(sid), RecordingSid=sid, RecordingDuration="3")
    reply = Twiml.parse(await h.twilio.post(greeting.action, params))
    assert len(reply.plays) == 1 and not reply.says, reply.text
    said = "I'd like to book a cleaning. On Tuesday morning, please."
    assert h.openai.requests[-1].body["messages"][-1]["content"] == said
    (turn,) = [t for t in await h.list_turns(CALL) if t["turn"] == 1]
    assert turn["user_text"] == said and turn["error"] is None


async def test_record_mode_empty_recording_reprompts(
    legacy: HarnessFactory, recordings: RecordingServer
) -> None:
    h = await legacy(legacy_stt_mode="azure", twilio_api_base_url=recordings.server.http_url)
    greeting = await h.twilio.incoming_call(CALL)
    empty = Twiml.parse(
        await h.twilio.post(greeting.action, h.twilio.params(CALL))
    )  # the <Redirect> fallback
    assert empty.record is not None and len(empty.plays) == 1
    assert h.speech.syntheses[-1].text == h.profile.legacy.reprompt
    assert h.speech.recognitions == [] and h.openai.requests == []


async def test_record_mode_stt_failure_apologises(
    legacy: HarnessFactory, recordings: RecordingServer
) -> None:
    h = await legacy(legacy_stt_mode="azure", twilio_api_base_url=recordings.server.http_url)
    greeting = await h.twilio.incoming_call(CALL)
    # The SDK reconnects and retries a recognition once the socket drops, so the outage must persist.
    h.speech.set_faults(close_next=-1, close_code=1011, close_reason="Internal service error.")
    params = h.twilio.params(CALL, RecordingUrl=recordings.url("RE" + "2" * 32), RecordingDuration="2")
    reply = Twiml.parse(await h.twilio.post(greeting.action, params))
    assert reply.says == [h.profile.legacy.apology] and reply.record is not None
    (turn,) = [t for t in await h.list_turns(CALL) if t["turn"] == 1]
    assert turn["error_stage"] == "stt" and "recording" in turn["stages"]
    assert h.openai.requests == []


async def test_record_mode_download_refused_apologises(
    legacy: HarnessFactory, recordings: RecordingServer
) -> None:
    h = await legacy(legacy_stt_mode="azure", twilio_api_base_url=recordings.server.http_url)
    greeting = await h.twilio.incoming_call(CALL)
    # Wrong credentials for the download (the webhook itself is still signed correctly).
    h.pipeline.services.recordings = TwilioRecordingFetcher(
        account_sid=ACCOUNT_SID, auth_token="wrong", api_origin=recordings.server.http_url
    )
    params = h.twilio.params(CALL, RecordingUrl=recordings.url("RE" + "3" * 32), RecordingDuration="2")
    reply = Twiml.parse(await h.twilio.post(greeting.action, params))
    assert reply.says == [h.profile.legacy.apology]
    (turn,) = [t for t in await h.list_turns(CALL) if t["turn"] == 1]
    assert turn["error_stage"] == "recording" and "401" in turn["error"]


async def test_record_mode_never_sends_our_credentials_to_another_host(
    legacy: HarnessFactory, recordings: RecordingServer
) -> None:
    # The callback is correctly signed, but its RecordingUrl is not on Twilio's API origin.
    h = await legacy(legacy_stt_mode="azure", twilio_api_base_url="https://api.twilio.com")
    greeting = await h.twilio.incoming_call(CALL)
    before = len(recordings.authorizations)
    params = h.twilio.params(CALL, RecordingUrl=recordings.url("RE" + "4" * 32), RecordingDuration="2")
    reply = Twiml.parse(await h.twilio.post(greeting.action, params))
    assert reply.says == [h.profile.legacy.apology] and reply.record is not None
    assert len(recordings.authorizations) == before  # no request reached the other host
    (turn,) = [t for t in await h.list_turns(CALL) if t["turn"] == 1]
    assert turn["error_stage"] == "recording" and "not on https://api.twilio.com" in turn["error"]


async def test_record_mode_full_stt_bound_apologises_at_once(
    legacy: HarnessFactory, recordings: RecordingServer
) -> None:
    # One recognition per worker; it never ends until released, as against a silent Speech service.
    h = await legacy(
        legacy_stt_mode="azure",
        twilio_api_base_url=recordings.server.http_url,
        legacy_stt_max_concurrent=1,
        legacy_stt_timeout_seconds=0.2,
    )
    stt = h.pipeline.services.recognizer
    assert isinstance(stt, AzureSpeechRecognizer)
    release = threading.Event()

    def silent_service(audio: WavAudio, language: str, recognition: Recognition) -> str:
        release.wait(60)
        return ""

    stt._recognize = silent_service  # type: ignore[method-assign]
    try:
        greeting = await h.twilio.incoming_call(CALL)
        first = Twiml.parse(
            await h.twilio.post(
                greeting.action, h.twilio.params(CALL, RecordingUrl=recordings.url("RE" + "5" * 32))
            )
        )
        assert first.says == [h.profile.legacy.apology]
        # The timed-out recognition's thread is still blocked in the (stand-in) SDK.
        assert any(t.name == "azure-stt" for t in threading.enumerate())
        second = Twiml.parse(
            await h.twilio.post(
                first.action, h.twilio.params(CALL, RecordingUrl=recordings.url("RE" + "6" * 32))
            )
        )
        assert second.says == [h.profile.legacy.apology] and second.record is not None
        # The abandoned thread shows on the worker's metrics until it ends.
        assert h.sample("voice_router_stt_threads") == 1
    finally:
        release.set()
    for _ in range(100):
        if h.sample("voice_router_stt_threads") == 0:
            break
        await asyncio.sleep(0.05)
    assert h.sample("voice_router_stt_threads") == 0
    turns = {t["turn"]: t for t in await h.list_turns(CALL)}
    assert turns[1]["error_stage"] == "stt" and turns[1]["error"].startswith("TimeoutError")
    assert turns[2]["error_stage"] == "stt" and "LEGACY_STT_MAX_CONCURRENT" in turns[2]["error"]
    assert h.sample("voice_router_turn_failures_total", pipeline="legacy", stage="stt") == 2
    assert h.openai.requests == [] and h.speech.recognitions == []
