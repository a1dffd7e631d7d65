"""A minimal stand-in for voice-router, just enough to exercise the Twilio call simulator over real sockets.

It checks every Twilio signature with the real validator (403 / close 1008 otherwise), answers legacy or
realtime TwiML, and on the media stream runs a tiny bot: greets, detects the caller's speech end by energy,
replies with audio + a mark, sends ``clear`` when the caller talks over it, and can move the call to legacy
through the Twilio REST API mid-call (what the realtime pipeline does).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from twilio.rest import Client

from emulators.speechlike import speechlike_ulaw, ulaw_decode
from emulators.twilio.audio import ulaw_wav
from router.twilio_signature import TwilioSignatureValidator


@dataclass
class StreamLog:
    events: list[dict[str, Any]] = field(default_factory=list)
    marks_sent: list[str] = field(default_factory=list)
    marks_echoed: list[str] = field(default_factory=list)
    utterances: int = 0
    clears: int = 0


class FakeRouter:
    def __init__(self, *, token: str, public: str, account_sid: str) -> None:
        self.validator = TwilioSignatureValidator(token, public)
        self.public = public
        self.token = token
        self.account_sid = account_sid
        self.mode = "legacy"
        self.rest_url = ""
        self.legacy_first_twiml: str | None = None
        self.turn_twiml: str | None = None
        self.reply_ms = 400
        self.reply_delay_ms = 0  # real time from the end of an utterance to the reply (the bot's latency)
        self.greeting_ms = 300
        self.move_after_utterances: int | None = None
        self.form_posts: list[tuple[str, dict[str, str]]] = []
        self.streams: list[StreamLog] = []
        self.rejected: list[str] = []
        self.rest_status_at_callback: list[str] = []  # the Call resource's status when its callback came
        self.app = Starlette(
            routes=[
                Route("/twilio/voice", self.voice, methods=["POST"]),
                Route("/twilio/status", self.status, methods=["POST"]),
                Route("/legacy/turn", self.turn, methods=["POST", "GET"]),
                Route("/legacy/start", self.turn, methods=["POST"]),
                Route("/rec", self.turn, methods=["POST"]),
                Route("/audio/{name}", self.audio, methods=["GET"]),
                WebSocketRoute("/twilio/media", self.media),
            ]
        )

    async def _checked(self, request: Request) -> dict[str, str] | None:
        form = {k: str(v) for k, v in (await request.form()).items()}
        query = request.url.query
        params = form if request.method == "POST" else {}
        if not self.validator.validate_http(
            request.url.path, query, params, request.headers.get("x-twilio-signature")
        ):
            self.rejected.append(request.url.path)
            return None
        data = form if request.method == "POST" else dict(request.query_params)
        self.form_posts.append((request.url.path, data))
        return data

    def _gather(self, prompt: str) -> str:
        return (
            '<Response><Gather input="speech" action="/legacy/turn" speechTimeout="auto" timeout="3">'
            f"<Play>{prompt}</Play></Gather><Say>Goodbye</Say><Hangup/></Response>"
        )

    async def voice(self, request: Request) -> Response:
        if await self._checked(request) is None:
            return Response("bad signature", 403)
        if self.mode == "realtime":
            twiml = (
                f'<Response><Connect><Stream url="{self.validator.ws_url("/twilio/media")}">'
                '<Parameter name="token" value="tok-1"/></Stream></Connect></Response>'
            )
        else:
            twiml = self.legacy_first_twiml or self._gather(f"{self.public}/audio/greeting.wav")
        headers = {"X-Voice-Router-Pipeline": self.mode, "X-Voice-Router-Reason": "test"}
        return Response(twiml, media_type="text/xml", headers=headers)

    async def turn(self, request: Request) -> Response:
        if await self._checked(request) is None:
            return Response("bad signature", 403)
        await asyncio.sleep(0.02)
        return Response(self.turn_twiml or self._gather("/audio/reply.wav"), media_type="text/xml")

    async def status(self, request: Request) -> Response:
        form = await self._checked(request)
        if form is None:
            return Response("bad signature", 403)
        if self.rest_url and "CallStatus" in form and "StreamEvent" not in form:
            url = f"{self.rest_url}/2010-04-01/Accounts/{self.account_sid}/Calls/{form['CallSid']}.json"
            async with httpx.AsyncClient(auth=(self.account_sid, self.token)) as http:
                self.rest_status_at_callback.append((await http.get(url)).json()["status"])
        return Response(status_code=204)

    async def audio(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name.endswith(".mp3"):
            return Response(b"ID3\x03fake", media_type="audio/mpeg")
        length = self.greeting_ms if name.startswith("greeting") else self.reply_ms
        return Response(ulaw_wav(speechlike_ulaw(length, seed=7)), media_type="audio/x-wav")

    # Media stream bot ----------------------------------------------------------------------------------------
    async def media(self, ws: WebSocket) -> None:
        if not self.validator.validate_ws(ws.url.path, ws.url.query, ws.headers.get("x-twilio-signature")):
            self.rejected.append("/twilio/media")
            await ws.close(code=1008)
            return
        await ws.accept()
        log = StreamLog()
        self.streams.append(log)
        stream_sid = ""
        in_speech = False
        silent_frames = 0
        pending_marks: list[str] = []
        counter = 0

        async def send_audio(ms: int, label: str) -> None:
            nonlocal counter
            audio = speechlike_ulaw(ms, seed=3)
            for offset in range(0, len(audio), 800):  # 100 ms deltas, faster than real time
                payload = base64.b64encode(audio[offset : offset + 800]).decode()
                await ws.send_text(
                    orjson.dumps(
                        {"event": "media", "streamSid": stream_sid, "media": {"payload": payload}}
                    ).decode()
                )
            counter += 1
            name = f"{label}-{counter}"
            pending_marks.append(name)
            log.marks_sent.append(name)
            await ws.send_text(
                orjson.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}}).decode()
            )

        try:
            while True:
                message = orjson.loads(await ws.receive_text())
                log.events.append(message)
                event = message["event"]
                if event == "start":
                    stream_sid = message["streamSid"]
                    await send_audio(self.greeting_ms, "greeting")
                elif event == "mark":
                    name = message["mark"]["name"]
                    log.marks_echoed.append(name)
                    if name in pending_marks:
                        pending_marks.remove(name)
                elif event == "media":
                    pcm = ulaw_decode(base64.b64decode(message["media"]["payload"]))
                    loud = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) > 300
                    if loud:
                        if not in_speech and pending_marks:
                            log.clears += 1
                            await ws.send_text(
                                orjson.dumps({"event": "clear", "streamSid": stream_sid}).decode()
                            )
                        in_speech = True
                        silent_frames = 0
                    elif in_speech:
                        silent_frames += 1
                        if silent_frames >= 10:  # 200 ms of silence: end of utterance
                            in_speech = False
                            log.utterances += 1
                            if self.move_after_utterances == log.utterances:
                                await asyncio.to_thread(self._move_to_legacy, message)
                            else:
                                await asyncio.sleep(self.reply_delay_ms / 1000.0)
                                await send_audio(self.reply_ms, "reply")
                elif event == "stop":
                    break
        except WebSocketDisconnect:
            pass
        with contextlib.suppress(RuntimeError):
            await ws.close()

    def _move_to_legacy(self, message: dict[str, Any]) -> None:
        call_sid = self.streams[-1].events[1]["start"]["callSid"]
        client = Client(self.account_sid, self.token)
        client.api.base_url = self.rest_url
        client.calls(call_sid).update(url=f"{self.public}/legacy/start", method="POST")
