"""The whole service, as ``python -m router serve`` builds it (``router.app.create_app``), on uvicorn on a free
port, in front of the Voice Live and Twilio REST emulators, with SQLite state: what a real Twilio call meets.

The public origin is ``https://voice.example.com`` (so the TwiML says ``wss://``, and every signature is
computed over the public URL, as Twilio computes it); ``local()`` stands in for the TLS-terminating proxy,
sending a public URL to the local server unchanged but for its origin. Legacy's cloud services (OpenAI,
Speech, Blob) are left unconfigured: the legacy pipeline then answers with ``<Say>`` instead of ``<Play>``,
which is all these tests need of it (it has its own end-to-end tests).
"""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from emulators.runner import ServerThread, free_port
from emulators.twilio.rest import TwilioRestEmulator
from emulators.voicelive import VoiceLiveEmulator
from router.app import Components, create_app
from router.server_options import uvicorn_options
from router.settings import Settings
from router.twilio_signature import sign
from tests.realtime.harness import ACCOUNT_SID, AUTH_TOKEN, PUBLIC_BASE_URL
from tests.realtime.twilio_client import TwilioMediaClient

T = TypeVar("T")

ADMIN_TOKEN = "admin-token-for-tests"
CALLER = "+14155550100"
CALLED = "+14155550199"


class SkewableClock:
    """The system clock, with a wall time a test can move forward (to expire a stream token for real)."""

    def __init__(self) -> None:
        self.skew = 0.0

    def time(self) -> float:
        return time.time() + self.skew

    def monotonic(self) -> float:
        return time.monotonic()


@dataclass
class Routed:
    """The router's answer to ``POST /twilio/voice``."""

    call_sid: str
    pipeline: str  # X-Voice-Router-Pipeline
    reason: str  # X-Voice-Router-Reason
    twiml: str

    def _connect(self) -> ET.Element:
        connect = ET.fromstring(self.twiml).find("Connect")
        assert connect is not None, self.twiml
        return connect

    @property
    def connect_action(self) -> str:
        return self._connect().attrib["action"]

    @property
    def stream_url(self) -> str:
        stream = self._connect().find("Stream")
        assert stream is not None, self.twiml
        return stream.attrib["url"]

    @property
    def token(self) -> str:
        parameters = {p.attrib["name"]: p.attrib["value"] for p in self._connect().iter("Parameter")}
        return parameters["token"]


class FullApp:
    def __init__(
        self,
        *,
        tmp_path: Path,
        voicelive: VoiceLiveEmulator,
        rest: TwilioRestEmulator,
        **settings_overrides: Any,
    ) -> None:
        self.voicelive = voicelive
        self.rest = rest
        port = free_port()
        self.local_origin = f"http://127.0.0.1:{port}"
        values: dict[str, Any] = {
            "public_base_url": PUBLIC_BASE_URL,
            "twilio_account_sid": ACCOUNT_SID,
            "twilio_auth_token": AUTH_TOKEN,
            "twilio_api_base_url": rest.url,
            "admin_token": ADMIN_TOKEN,
            "state_url": f"sqlite:///{tmp_path / 'state.db'}",
            "rollout_percent": 100.0,
            "azure_voicelive_endpoint": voicelive.url,
            "azure_voicelive_api_key": voicelive.api_key,
            "realtime_session_ready_timeout_seconds": 2.0,
            "realtime_reconnect_timeout_seconds": 2.0,
            "realtime_move_grace_seconds": 2.0,
            "legacy_warm_phrases_on_start": False,  # no Speech service configured: nothing to warm
            **settings_overrides,
        }
        self.settings = Settings(**values)
        self.clock = SkewableClock()
        self.app = create_app(self.settings, clock=self.clock)
        self.server = ServerThread(self.app, port=port, **uvicorn_options(self.settings))
        self.http = httpx.AsyncClient(timeout=10.0)

    def start(self) -> FullApp:
        self.server.start()
        return self

    async def aclose(self) -> None:
        await self.http.aclose()
        self.server.stop()

    @property
    def components(self) -> Components:
        components: Components = self.app.state.components
        return components

    # The proxy in front of the service -------------------------------------------------------------------

    def local(self, public_url: str) -> str:
        """Where a public URL (``https://`` or ``wss://``) reaches this server: only the origin changes."""
        for scheme, local_scheme in (("https://", "http://"), ("wss://", "ws://")):
            origin = PUBLIC_BASE_URL.replace("https://", scheme)
            if public_url.startswith(origin + "/"):
                return self.local_origin.replace("http://", local_scheme) + public_url[len(origin) :]
        raise AssertionError(f"{public_url!r} is not on the public origin {PUBLIC_BASE_URL}")

    # Twilio's side ---------------------------------------------------------------------------------------

    async def twilio_post(self, public_url: str, params: dict[str, str]) -> httpx.Response:
        """POST a form as Twilio does: to the URL it was given, signed over that URL and the form."""
        signature = sign(AUTH_TOKEN, public_url, params)
        return await self.http.post(
            self.local(public_url), data=params, headers={"X-Twilio-Signature": signature}
        )

    def call_params(self, call_sid: str, status: str) -> dict[str, str]:
        return {
            "CallSid": call_sid,
            "AccountSid": ACCOUNT_SID,
            "From": CALLER,
            "To": CALLED,
            "CallStatus": status,
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
        }

    async def incoming_call(self, call_sid: str) -> Routed:
        response = await self.twilio_post(
            f"{PUBLIC_BASE_URL}/twilio/voice", self.call_params(call_sid, "ringing")
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/xml")
        return Routed(
            call_sid=call_sid,
            pipeline=response.headers["X-Voice-Router-Pipeline"],
            reason=response.headers["X-Voice-Router-Reason"],
            twiml=response.text,
        )

    async def status_callback(self, call_sid: str, status: str, duration_s: int) -> httpx.Response:
        params = self.call_params(call_sid, status) | {"CallDuration": str(duration_s)}
        return await self.twilio_post(f"{PUBLIC_BASE_URL}/twilio/status", params)

    def media_client(
        self, routed: Routed, *, token: str | None = None, compression: str | None = None
    ) -> TwilioMediaClient:
        """Twilio executing ``<Connect><Stream>``: connects to the stream URL of the TwiML, signs the upgrade
        over that URL, and sends the TwiML's ``token`` parameter back in ``start`` (``token`` replaces it,
        to play an impostor; ``compression="deflate"`` offers permessage-deflate)."""
        return TwilioMediaClient(
            self.local(routed.stream_url),
            signature=sign(AUTH_TOKEN, routed.stream_url),
            call_sid=routed.call_sid,
            token=token or routed.token,
            account_sid=ACCOUNT_SID,
            play_speed=4.0,
            compression=compression,
        )

    # Operators' side and the server's state --------------------------------------------------------------

    async def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.http.request(
            method,
            self.local_origin + path,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            **kwargs,
        )
        assert response.status_code == 200, response.text
        return response.json()

    async def call_record(self, call_sid: str) -> dict[str, Any]:
        """The call's record as operators see it (``GET /admin/calls``)."""
        calls = await self.admin("GET", "/admin/calls", params={"limit": "100"})
        found = [call for call in calls if call["call_sid"] == call_sid]
        assert len(found) == 1, calls
        record: dict[str, Any] = found[0]
        return record

    async def on_server(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the server's loop (its store connection lives there)."""
        assert self.server.loop is not None
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.server.loop))

    async def turns(self, call_sid: str) -> list[dict[str, Any]]:
        return await self.on_server(self.components.store.list_turns(call_sid=call_sid))

    async def eventually(
        self, read: Callable[[], Coroutine[Any, Any, T]], check: Callable[[T], bool], within: float = 5.0
    ) -> T:
        """Poll ``read()`` until ``check`` passes (the bridge writes its records off the media path)."""
        deadline = time.monotonic() + within
        while True:
            value = await read()
            if check(value):
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"still {value!r} after {within}s")
            await asyncio.sleep(0.02)

    def metric(self, name: str, **labels: str) -> float:
        return self.components.metrics.registry.get_sample_value(name, labels) or 0.0
