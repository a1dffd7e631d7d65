"""The legacy pipeline over real sockets: the router app on uvicorn, the OpenAI and Speech emulators,
Azurite, SQLite state, and a scripted Twilio that signs its webhooks."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import SecretStr

from emulators.azure_speech import AzureSpeechEmulator, SpeechKnobs
from emulators.openai import OpenAIEmulator, OpenAIKnobs
from emulators.runner import ServerThread, free_port
from flags.clock import SystemClock
from legacy_pipeline.pipeline import LegacyPipeline
from legacy_pipeline.services import LegacyServices
from router.agent_profile import AgentProfile
from router.app import NoRealtime, create_app
from router.observability import Metrics
from router.settings import DEFAULT_PROFILE, Settings
from router.store.base import StateStore
from router.store.factory import open_store
from router.tool_calls import ToolRunner
from router.twilio_signature import TwilioSignatureValidator
from tests.legacy.twilio_script import ACCOUNT_SID, ScriptedTwilio

AUTH_TOKEN = "test-auth-token"


@dataclass
class LegacyHarness:
    settings: Settings
    profile: AgentProfile
    server: ServerThread
    twilio: ScriptedTwilio
    store: StateStore  # a second connection to the server's SQLite file, on the test's loop
    pipeline: LegacyPipeline
    metrics: Metrics
    openai: OpenAIEmulator
    speech: AzureSpeechEmulator

    @property
    def url(self) -> str:
        return self.server.http_url

    def sample(self, metric: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(metric, labels)
        return value or 0.0

    async def list_turns(self, call_sid: str) -> list[dict[str, Any]]:
        """The call's turn records, once the server has written those queued behind its answers."""
        assert self.server.loop is not None
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.pipeline.flush(), self.server.loop))
        return await self.store.list_turns(call_sid=call_sid)


HarnessFactory = Callable[..., Awaitable[LegacyHarness]]


@pytest.fixture(scope="session")
def openai_emulator() -> Any:
    with OpenAIEmulator() as emulator:
        yield emulator


@pytest.fixture(scope="session")
def speech_emulator() -> Any:
    with AzureSpeechEmulator() as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def _reset_emulators(request: pytest.FixtureRequest) -> None:
    """Each test starts with both emulators at zero latency, no faults and the default replies."""
    if "openai_emulator" in request.fixturenames or "legacy" in request.fixturenames:
        emulator: OpenAIEmulator = request.getfixturevalue("openai_emulator")
        emulator.knobs.update(**dataclasses.asdict(OpenAIKnobs()))
        emulator.set_script(None)
        emulator.clear_requests()
    if "speech_emulator" in request.fixturenames or "legacy" in request.fixturenames:
        speech: AzureSpeechEmulator = request.getfixturevalue("speech_emulator")
        speech.knobs.update(**dataclasses.asdict(SpeechKnobs()))
        speech.clear_records()


def write_profile(directory: Path, *, top: dict[str, Any] | None = None, **legacy: Any) -> Path:
    """The default profile with ``legacy`` options and top-level fields (``tools``…) replaced."""
    data = yaml.safe_load(DEFAULT_PROFILE.read_text())
    data["legacy"].update(legacy)
    data.update(top or {})
    path = directory / f"agent-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
async def legacy(
    tmp_path: Path,
    openai_emulator: OpenAIEmulator,
    speech_emulator: AzureSpeechEmulator,
    azurite_connection_string: str,
) -> AsyncIterator[HarnessFactory]:
    """``await legacy(**settings)`` → a running service; ``profile_legacy={...}`` overrides profile options,
    ``services=`` replaces the clients built from settings, ``wrap_store=`` wraps the server's store.
    ``state_url=`` gives it a store another harness uses too (a second replica); by default its own file."""
    started: list[tuple[ServerThread, StateStore, httpx.AsyncClient]] = []

    async def start(
        *,
        profile_legacy: dict[str, Any] | None = None,
        profile_top: dict[str, Any] | None = None,
        services: LegacyServices | None = None,
        wrap_store: Callable[[StateStore], StateStore] | None = None,
        **overrides: Any,
    ) -> LegacyHarness:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        state_url = overrides.pop("state_url", None) or f"sqlite:///{tmp_path / f'state-{port}.db'}"
        values: dict[str, Any] = {
            "public_base_url": base,
            "twilio_account_sid": ACCOUNT_SID,
            "twilio_auth_token": SecretStr(AUTH_TOKEN),
            "admin_token": SecretStr("admin-token"),
            "state_url": state_url,
            "rollout_percent": 0.0,
            "openai_base_url": openai_emulator.openai_base_url,
            "openai_api_key": SecretStr("sk-test"),
            "openai_model": "gpt-4o-mini",
            "azure_speech_host": speech_emulator.url,
            "azure_storage_connection_string": SecretStr(azurite_connection_string),
            "azure_storage_container": f"tts-{uuid.uuid4().hex[:12]}",
            # Short so the stalled-TTS test ends fast, yet well above a normal first chunk on a slow box (800 ms
            # was not: a healthy synthesis timed out under CPU contention).
            "legacy_tts_first_chunk_timeout_ms": 1500,
            "legacy_stt_timeout_seconds": 3.0,
            "legacy_turn_deadline_seconds": 5.0,
            "legacy_blob_cleanup_interval_seconds": 0.0,
            # Off so each test sees only the Speech traffic its own calls cause; test_startup_warms_the_phrase_cache
            # covers the start-up warm-up.
            "legacy_warm_phrases_on_start": False,
        }
        if profile_legacy or profile_top:
            values["agent_profile"] = write_profile(tmp_path, top=profile_top, **(profile_legacy or {}))
        values.update(overrides)
        settings = Settings(**values)
        profile = AgentProfile.load(settings.agent_profile)
        metrics = Metrics()
        tools = ToolRunner(profile.tools, httpx.AsyncClient(), metrics=metrics)  # closed by the app
        server_store = open_store(state_url)
        if wrap_store is not None:
            server_store = wrap_store(server_store)
        pipeline = LegacyPipeline(
            settings=settings,
            profile=profile,
            store=server_store,
            metrics=metrics,
            signatures=TwilioSignatureValidator(AUTH_TOKEN, base),
            clock=SystemClock(),
            services=services,
            tools=tools,
        )
        app = create_app(
            settings,
            store=server_store,
            metrics=metrics,
            legacy=pipeline,
            realtime=NoRealtime(),
            tools=tools,
        )
        server = ServerThread(app, port=port).start()
        reader = open_store(state_url)
        await reader.open()
        client = httpx.AsyncClient(timeout=30.0)
        started.append((server, reader, client))
        return LegacyHarness(
            settings=settings,
            profile=profile,
            server=server,
            twilio=ScriptedTwilio(public_base_url=base, auth_token=AUTH_TOKEN, client=client),
            store=reader,
            pipeline=pipeline,
            metrics=metrics,
            openai=openai_emulator,
            speech=speech_emulator,
        )

    yield start
    for server, reader, client in started:
        await client.aclose()
        await reader.close()
        server.stop()
