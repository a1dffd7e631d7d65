"""End-to-end harness: ``RealtimePipeline`` served by uvicorn on a real socket, Voice Live and Twilio's REST
API emulated, state in SQLite, a real ``CircuitBreaker`` on that store."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
from starlette.applications import Starlette

from emulators.runner import ServerThread
from emulators.twilio.rest import TwilioRestEmulator
from emulators.voicelive import VoiceLiveEmulator
from flags.breaker import BreakerConfig, CircuitBreaker, TrialPermit
from flags.clock import SystemClock
from realtime_pipeline.bridge import BridgeConfig
from realtime_pipeline.pipeline import RealtimePipeline
from realtime_pipeline.voicelive_client import VoiceLiveConnector
from router.agent_profile import AgentProfile
from router.observability import Metrics
from router.records import CallRecord, Pipeline
from router.settings import Settings
from router.store.base import StateStore
from router.store.factory import open_store
from router.stream_token import StreamTokens
from router.tool_calls import ToolRunner
from router.twilio_signature import TwilioSignatureValidator, sign
from tests.realtime.twilio_client import TwilioMediaClient

T = TypeVar("T")

AUTH_TOKEN = "twilio-test-token"
ACCOUNT_SID = "AC" + "0" * 32
PUBLIC_BASE_URL = "https://voice.example.com"
STREAM_SECRET = b"stream-secret-for-tests"


def new_call_sid() -> str:
    return "CA" + secrets.token_hex(16)


class Harness:
    def __init__(
        self,
        *,
        tmp_path: Path,
        voicelive: VoiceLiveEmulator,
        rest: TwilioRestEmulator,
        voicelive_endpoint: str | None = None,
        settings_overrides: dict[str, Any] | None = None,
        profile_overrides: dict[str, Any] | None = None,
        bridge_overrides: dict[str, Any] | None = None,
        connector: VoiceLiveConnector | None = None,
    ) -> None:
        self.voicelive = voicelive
        self.rest = rest
        values: dict[str, Any] = {
            "public_base_url": PUBLIC_BASE_URL,
            "twilio_account_sid": ACCOUNT_SID,
            "twilio_auth_token": AUTH_TOKEN,
            "twilio_api_base_url": rest.url,
            "azure_voicelive_endpoint": voicelive_endpoint or voicelive.url,
            "azure_voicelive_api_key": voicelive.api_key,
            "realtime_session_ready_timeout_seconds": 2.0,
            "realtime_reconnect_timeout_seconds": 2.0,
            "realtime_move_grace_seconds": 2.0,
            **(settings_overrides or {}),
        }
        self.settings = Settings(**values)
        profile_values: dict[str, Any] = {
            "instructions": "You are a test agent.",
            "greeting": "",
            **(profile_overrides or {}),
        }
        self.profile = AgentProfile.model_validate(profile_values)
        self.state_url = f"sqlite:///{tmp_path / 'state.db'}"
        self.store: StateStore = open_store(self.state_url)
        self.clock = SystemClock()
        self.breaker = CircuitBreaker(BreakerConfig(), self.store, clock=self.clock)
        self.metrics = Metrics()
        self.tokens = StreamTokens(STREAM_SECRET, 120)
        # Closed by the lifespan, on the server's loop that used it.
        self.tools = ToolRunner(self.profile.tools, httpx.AsyncClient(), metrics=self.metrics)
        self.pipeline = RealtimePipeline(
            settings=self.settings,
            profile=self.profile,
            store=self.store,
            breaker=self.breaker,
            metrics=self.metrics,
            signatures=TwilioSignatureValidator(AUTH_TOKEN, PUBLIC_BASE_URL),
            tokens=self.tokens,
            clock=self.clock,
            connector=connector,
            tools=self.tools,
        )
        if bridge_overrides:
            self.pipeline.bridge_config = dataclasses.replace(self.pipeline.bridge_config, **bridge_overrides)
        self.server = ServerThread(Starlette(routes=self.pipeline.routes(), lifespan=self._lifespan))

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.store.open()
        try:
            yield
        finally:
            await self.pipeline.aclose()
            await self.tools.aclose()
            await self.store.close()

    def start(self) -> Harness:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    # Running things on the server's loop (the store and breaker live there) ----------------------------

    async def on_server(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self.server.loop is not None
        future = asyncio.run_coroutine_threadsafe(coro, self.server.loop)
        return await asyncio.wrap_future(future)

    async def register_call(self, call_sid: str, *, trial: TrialPermit | None = None) -> None:
        """The record the router writes when it routes ``call_sid`` to realtime (with its trial permit)."""
        record = CallRecord(
            call_sid=call_sid,
            pipeline=Pipeline.REALTIME,
            reason="rollout_in",
            bucket=1,
            percent=100.0,
            caller_hash="h",
            started_at=self.clock.time(),
            breaker_trial=trial is not None,
            breaker_trial_round=None if trial is None else trial.round,
        )
        await self.on_server(self.store.put_call(record.to_dict()))

    async def call(self, call_sid: str) -> dict[str, Any]:
        record = await self.on_server(self.store.get_call(call_sid))
        assert record is not None
        return record

    async def turns(self, call_sid: str) -> list[dict[str, Any]]:
        return await self.on_server(self.store.list_turns(call_sid=call_sid))

    async def wait_call_field(self, call_sid: str, field: str, within: float = 10.0) -> Any:
        async def poll() -> Any:
            while True:
                record = await self.call(call_sid)
                if record.get(field) is not None:
                    return record[field]
                await asyncio.sleep(0.02)

        return await asyncio.wait_for(poll(), within)

    async def breaker_window(self) -> tuple[int, int, int]:
        now = int(self.clock.time())
        totals = await self.on_server(self.store.breaker_window(now - 600, now + 5))
        return totals.calls, totals.failures, totals.slow

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return value or 0.0

    # Twilio side -----------------------------------------------------------------------------------------

    @property
    def media_url(self) -> str:
        return f"{self.server.ws_url}/twilio/media"

    def client(
        self,
        call_sid: str,
        *,
        signature: str | None = "auto",
        token: str | None = "auto",
        play_speed: float = 4.0,
        stream_sid: str | None = None,
    ) -> TwilioMediaClient:
        if signature == "auto":
            signature = sign(AUTH_TOKEN, PUBLIC_BASE_URL.replace("https://", "wss://") + "/twilio/media")
        if token == "auto":
            token = self.tokens.issue(call_sid)
        return TwilioMediaClient(
            self.media_url,
            signature=signature,
            call_sid=call_sid,
            token=token,
            play_speed=play_speed,
            stream_sid=stream_sid or "MZ" + secrets.token_hex(16),
            account_sid=ACCOUNT_SID,
        )


__all__ = ["ACCOUNT_SID", "AUTH_TOKEN", "PUBLIC_BASE_URL", "BridgeConfig", "Harness", "new_call_sid"]
