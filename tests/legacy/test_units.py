"""Small pure pieces: SSML escaping, text bounds, WAV parsing, TwiML building, recording downloads."""

from __future__ import annotations

import asyncio
import io
import json
import struct
import wave
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI

from legacy_pipeline.history import well_formed
from legacy_pipeline.llm import OpenAIChatModel
from legacy_pipeline.recordings import MAX_RECORDING_BYTES, RecordingRefused, TwilioRecordingFetcher
from legacy_pipeline.ssml import build_ssml
from legacy_pipeline.stt import WAVE_FORMAT_MULAW, WAVE_FORMAT_PCM, parse_wav
from legacy_pipeline.turns import bound_text
from legacy_pipeline.twiml import TwimlBuilder
from router.agent_profile import AgentProfile
from router.settings import DEFAULT_PROFILE

NS = "{http://www.w3.org/2001/10/synthesis}"


def test_ssml_escapes_markup_and_quotes() -> None:
    text = "a < b & c > d \"q\" 'r' </voice><voice name='x'>"
    ssml = build_ssml(text, voice="en-US-Ava'Neural", language='en-US" x="y')
    root = ET.fromstring(ssml)
    voices = list(root.iter(f"{NS}voice"))
    assert len(voices) == 1 and voices[0].get("name") == "en-US-Ava'Neural"
    assert voices[0].text == text
    assert root.get("{http://www.w3.org/XML/1998/namespace}lang") == 'en-US" x="y'


def test_ssml_drops_characters_xml_cannot_carry() -> None:
    root = ET.fromstring(build_ssml("bell\x07 and\x00 nul\x1b", voice="v", language="en-US"))
    assert next(root.iter(f"{NS}voice")).text == "bell and nul"


def test_ssml_drops_lone_surrogates_and_noncharacters() -> None:
    """A lone surrogate (JSON's "\\ud83d" from a model cut mid-emoji) could not even be encoded to send, and
    U+FFFE/U+FFFF make a document no XML parser accepts: the turn ended in the apology."""
    ssml = build_ssml("ok \ud83d then \ufffe\uffffdone \U0001f600", voice="v", language="en-US")
    root = ET.fromstring(ssml.encode("utf-8"))
    assert next(root.iter(f"{NS}voice")).text == "ok then done \U0001f600"


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("short", 10, "short"),
        ("one two three four", 12, "one two"),
        ("x" * 50, 10, "x" * 10),
        ("  spaced \n\t out  ", 100, "spaced out"),
    ],
)
def test_bound_text(text: str, limit: int, expected: str) -> None:
    assert bound_text(text, limit) == expected


def test_parse_wav_pcm_and_mulaw() -> None:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x01\x00" * 80)
    pcm = parse_wav(buffer.getvalue())
    assert (pcm.format_tag, pcm.sample_rate, pcm.bits_per_sample, len(pcm.data)) == (
        WAVE_FORMAT_PCM,
        8000,
        16,
        160,
    )
    data = b"\xff" * 100
    fmt = struct.pack("<HHIIHH", WAVE_FORMAT_MULAW, 1, 8000, 8000, 1, 8) + b"\0\0"
    mulaw = b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE"
    mulaw += b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    parsed = parse_wav(mulaw)
    assert (parsed.format_tag, parsed.data) == (WAVE_FORMAT_MULAW, data)
    with pytest.raises(ValueError):
        parse_wav(b"not a wav file at all")


def test_twiml_escapes_the_sas_query() -> None:
    profile = AgentProfile.load(DEFAULT_PROFILE)
    builder = TwimlBuilder(public_base_url="https://voice.example.com/", profile=profile)
    url = "https://acct.blob.core.windows.net/tts/turns/x.wav?se=2026&sp=r&sv=2026-10-06&sr=b&sig=a%2Bb%3D"
    document = builder.play_and_listen(url)
    assert "?se=2026&amp;sp=r&amp;sv=2026-10-06&amp;sr=b&amp;sig=a%2Bb%3D" in document
    root = ET.fromstring(document)
    gather = root.find("Gather")
    assert gather is not None and gather.get("action") == "https://voice.example.com/legacy/turn"
    # The reply plays inside the Gather, so the caller can interrupt it (Twilio's bargeIn).
    play = gather.find("Play")
    assert play is not None and play.text == url
    assert root.find("Play") is None


def test_record_mode_plays_the_prompt_before_recording() -> None:
    profile = AgentProfile.load(DEFAULT_PROFILE)
    builder = TwimlBuilder(public_base_url="https://voice.example.com/", profile=profile, stt_mode="azure")
    root = ET.fromstring(builder.play_and_listen("https://blob.example/x.wav"))
    assert [element.tag for element in root] == ["Play", "Record", "Redirect"]


def test_twiml_goodbye_hangs_up() -> None:
    profile = AgentProfile.load(DEFAULT_PROFILE)
    root = ET.fromstring(
        TwimlBuilder(public_base_url="https://v.example", profile=profile).goodbye(text="Bye & <now>")
    )
    assert [child.tag for child in root] == ["Say", "Hangup"]
    assert root[0].text == "Bye & <now>"


def test_a_speech_timeout_twilio_would_refuse_fails_the_profile_at_load() -> None:
    from pydantic import ValidationError

    from router.agent_profile import LegacyOptions

    for bad in ("3s", "0", "-1", "", "1.5", "\u00b2"):
        with pytest.raises(ValidationError, match="speech_timeout"):
            LegacyOptions(speech_timeout=bad)
    assert LegacyOptions(speech_timeout="auto").speech_timeout == "auto"
    assert LegacyOptions(speech_timeout=" 2 ").speech_timeout == "2"


# Recording downloads ------------------------------------------------------------------------------


def _fetcher(handler: Callable[[httpx.Request], httpx.Response]) -> TwilioRecordingFetcher:
    return TwilioRecordingFetcher(
        account_sid="AC1",
        auth_token="token",
        api_origin="https://api.twilio.com",
        client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
    )


RECORDING = "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1"


async def test_recording_redirects_are_followed_only_within_twilio() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.path.endswith("/Recordings/RE1.wav"):
            return httpx.Response(302, headers={"Location": "/media/RE1.wav"})
        if request.url.path == "/media/RE1.wav":
            assert request.headers["authorization"].startswith("Basic ")
            return httpx.Response(200, content=b"RIFF....")
        return httpx.Response(404)

    assert await _fetcher(handler).fetch(RECORDING) == b"RIFF...."
    assert seen == [RECORDING + ".wav", "https://api.twilio.com/media/RE1.wav"]

    def elsewhere(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(302, headers={"Location": "https://collector.example.net/steal"})

    seen.clear()
    with pytest.raises(RecordingRefused, match=r"not on https://api\.twilio\.com"):
        await _fetcher(elsewhere).fetch(RECORDING)
    assert seen == [RECORDING + ".wav"]  # the other host was never asked


async def test_recording_larger_than_the_cap_is_refused_while_streaming() -> None:
    chunk = b"\0" * 65536

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(MAX_RECORDING_BYTES // len(chunk) + 2):
            yield chunk

    def undeclared(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=endless())

    with pytest.raises(RecordingRefused, match="larger than"):
        await _fetcher(undeclared).fetch(RECORDING)

    def declared(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Length": str(MAX_RECORDING_BYTES + 1)}, content=b"")

    with pytest.raises(RecordingRefused, match="larger than"):
        await _fetcher(declared).fetch(RECORDING)


async def test_a_recording_not_processed_yet_is_asked_for_again() -> None:
    """Twilio post-processes a recording: right after <Record>'s action its URL can still answer 404."""
    tries: list[str] = []

    def ready_on_the_third_try(request: httpx.Request) -> httpx.Response:
        tries.append(str(request.url))
        return httpx.Response(200, content=b"RIFF....") if len(tries) == 3 else httpx.Response(404)

    assert await _fetcher(ready_on_the_third_try).fetch(RECORDING) == b"RIFF...."
    assert tries == [RECORDING + ".wav"] * 3

    def gone(request: httpx.Request) -> httpx.Response:
        tries.append(str(request.url))
        return httpx.Response(404)

    tries.clear()
    with pytest.raises(httpx.HTTPStatusError):
        await _fetcher(gone).fetch(RECORDING)
    assert len(tries) == 4  # then it is given up on

    def refused(request: httpx.Request) -> httpx.Response:
        tries.append(str(request.url))
        return httpx.Response(401)

    tries.clear()
    with pytest.raises(httpx.HTTPStatusError):
        await _fetcher(refused).fetch(RECORDING)
    assert len(tries) == 1  # not a "not ready yet"


async def test_recording_url_on_another_origin_is_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request may be sent")

    for url in ("http://api.twilio.com/x", "https://api.twilio.com.evil.net/x", "file:///etc/passwd"):
        with pytest.raises(RecordingRefused):
            await _fetcher(handler).fetch(url)


def _call(call_id: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": "check", "arguments": "{}"}}


def test_well_formed_history_keeps_whole_tool_exchanges_and_drops_broken_ones() -> None:
    user: dict[str, Any] = {"role": "user", "content": "Is Tuesday free?"}
    reply: dict[str, Any] = {"role": "assistant", "content": "Yes."}
    two_calls: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [_call("a"), _call("b")]}
    answer_a: dict[str, Any] = {"role": "tool", "tool_call_id": "a", "content": "{}"}
    answer_b: dict[str, Any] = {"role": "tool", "tool_call_id": "b", "content": "{}"}
    whole = [user, two_calls, answer_b, answer_a, reply]
    assert well_formed(whole) == whole  # answers in any order, as long as each call has one
    # The cap cut the call off: its answers alone would be refused.
    assert well_formed([answer_a, answer_b, reply]) == [reply]
    # One answer missing, a stray id, an answer that is not text, a malformed call: the exchange is left out.
    assert well_formed([user, two_calls, answer_a, reply]) == [user, reply]
    stray: dict[str, Any] = {"role": "tool", "tool_call_id": "c", "content": "{}"}
    assert well_formed([user, two_calls, answer_a, stray, reply]) == [user, reply]
    assert well_formed([two_calls, answer_a, {**answer_b, "content": {"x": 1}}, reply]) == [reply]
    broken: dict[str, Any] = {"role": "assistant", "content": "Checking.", "tool_calls": [{"id": "a"}]}
    assert well_formed([user, broken, answer_a, reply]) == [user, reply]
    # Anything else the store might hold that is not a chat message is skipped.
    junk: list[Any] = [user, "junk", {"role": "system", "content": "x"}, {"role": "user"}, reply]
    assert well_formed(junk) == [user, reply]


def _sse(chunk: dict[str, Any]) -> str:
    return f"data: {json.dumps(chunk)}\n\n"


async def test_an_azure_content_filter_chunk_without_a_delta_does_not_lose_the_reply() -> None:
    """Azure OpenAI's asynchronous content filter streams annotation chunks whose choice has no ``delta``
    (the SDK gives None), after the words: the reply is the words, not an AttributeError and the apology."""
    base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}
    annotation = {
        "id": "",
        "object": "",
        "created": 0,
        "model": "",
        "choices": [
            {
                "index": 0,
                "finish_reason": None,
                "content_filter_offsets": {"check_offset": 9, "start_offset": 9, "end_offset": 18},
                "content_filter_results": {"hate": {"filtered": False, "severity": "safe"}},
            }
        ],
    }
    body = "".join(
        [
            _sse({**base, "choices": [], "prompt_filter_results": []}),
            _sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Yes, "}}]}),
            _sse(annotation),
            _sse({**base, "choices": [{"index": 0, "delta": {"content": "Tuesday works."}}]}),
            _sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
            _sse(annotation),
            "data: [DONE]\n\n",
        ]
    )

    payload = body.encode()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One HTTP exchange on a real socket (the SDK's own transport, whatever its HTTP library)."""
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.lower().split(b"\r\n")
                if line.startswith(b"content-length:")
            ),
            0,
        )
        await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n"
            + f"content-length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = AsyncOpenAI(api_key="sk-test", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
    model = OpenAIChatModel(client, model="gpt-4o-mini")
    try:
        reply = await model.reply([{"role": "user", "content": "Tuesday?"}], temperature=0.5, max_tokens=50)
    finally:
        await model.aclose()
        server.close()
    assert reply.text == "Yes, Tuesday works."
    assert reply.tool_calls == []
    assert reply.first_token_ms is not None
