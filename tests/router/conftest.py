"""Fixtures for the router's own tests: the real app on a real socket, with stub pipelines.

The pipelines have their own end-to-end tests; here they are stand-ins so that what is tested is the
routing, the operator surface and the failure behaviour of the router itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import BaseRoute

from emulators.runner import ServerThread
from router.app import NoRealtime, create_app
from router.settings import Settings
from router.store.base import StateStore, StoreUnavailable
from router.store.factory import open_store
from router.twilio_signature import sign

AUTH_TOKEN = "test-auth-token"
ADMIN_TOKEN = "test-admin-token"
PUBLIC_BASE_URL = "https://router.example.com"


class StubLegacy:
    """Answers the first turn with a recognisable Gather; records which calls it served."""

    def __init__(self) -> None:
        self.first_turns: list[str] = []
        self.fail = False

    async def first_turn(self, call_sid: str, *, moved: bool = False) -> str:
        if self.fail:
            raise RuntimeError("legacy exploded")
        self.first_turns.append(call_sid)
        return '<?xml version="1.0" encoding="UTF-8"?><Response><Gather input="speech" action="/legacy/turn"/></Response>'

    async def flush(self) -> None:
        return None

    def routes(self) -> list[BaseRoute]:
        return []

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class SwitchableStore:
    """Delegates to a real store; while ``down`` every call raises StoreUnavailable, like a dead Redis."""

    def __init__(self, inner: StateStore) -> None:
        self._inner = inner
        self.down = False
        self.down_after: str | None = None  # a method name: the store goes down once that call has succeeded
        self.calls: list[str] = []  # every method called, in order
        self.batch_delay = 0.0  # seconds each put_calls (the write-behind batches) takes

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if name in {"open", "close"} or not callable(target):
            return target

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if self.down:
                raise StoreUnavailable(f"{name}: store is down (test switch)")
            if name == "put_calls" and self.batch_delay:
                await asyncio.sleep(self.batch_delay)
            result = await target(*args, **kwargs)
            if name == self.down_after:
                self.down = True
            return result

        return call


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "public_base_url": PUBLIC_BASE_URL,
        "twilio_account_sid": "AC" + "0" * 32,
        "twilio_auth_token": AUTH_TOKEN,
        "admin_token": ADMIN_TOKEN,
        "state_url": f"sqlite:///{tmp_path / 'state.db'}",
        "config_cache_seconds": 0.2,
    }
    values.update(overrides)
    return Settings(**values)


class RunningRouter:
    def __init__(self, server: ServerThread, app: Any, store: SwitchableStore, legacy: StubLegacy) -> None:
        self.server = server
        self.app = app
        self.store = store
        self.legacy = legacy
        self.url = server.http_url
        self.client = httpx.Client(base_url=self.url, timeout=10.0)

    @property
    def components(self) -> Any:
        return self.app.state.components

    def twilio_post(
        self,
        path: str,
        params: dict[str, str],
        *,
        signature: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """POST a form as Twilio would: signed over PUBLIC_BASE_URL + path."""
        sig = signature if signature is not None else sign(AUTH_TOKEN, PUBLIC_BASE_URL + path, params)
        all_headers = {"X-Twilio-Signature": sig, **(headers or {})}
        if signature == "":
            all_headers.pop("X-Twilio-Signature")
        return self.client.post(path, data=params, headers=all_headers)

    def admin(
        self, method: str, path: str, *, token: str | None = ADMIN_TOKEN, **kwargs: Any
    ) -> httpx.Response:
        headers: dict[str, str] = {}
        if token is not None:
            headers["Authorization"] = (
                token.removeprefix("raw:") if token.startswith("raw:") else f"Bearer {token}"
            )
        return self.client.request(method, path, headers=headers, **kwargs)

    def incoming_call(
        self, call_sid: str, caller: str = "+14155550100", *, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return self.twilio_post(
            "/twilio/voice",
            {
                "CallSid": call_sid,
                "AccountSid": "AC" + "0" * 32,
                "From": caller,
                "To": "+14155550199",
                "CallStatus": "ringing",
                "Direction": "inbound",
                "ApiVersion": "2010-04-01",
            },
            headers=headers,
        )


@pytest.fixture
def router_factory(tmp_path: Path) -> Iterator[Callable[..., RunningRouter]]:
    running: list[RunningRouter] = []

    def factory(
        *,
        state_url: str | None = None,
        realtime: NoRealtime | None = None,
        store_down: bool = False,
        **overrides: Any,
    ) -> RunningRouter:
        """``store_down``: the state store is unreachable from start-up on."""
        settings = make_settings(tmp_path, **({"state_url": state_url} if state_url else {}), **overrides)
        store = SwitchableStore(open_store(settings.state_url))
        store.down = store_down
        legacy = StubLegacy()
        app = create_app(settings, store=store, legacy=legacy, realtime=realtime or NoRealtime())
        server = ServerThread(app).start()
        router = RunningRouter(server, app, store, legacy)
        running.append(router)
        return router

    yield factory
    for router in running:
        router.client.close()
        router.server.stop()


@pytest.fixture
def router(router_factory: Callable[..., RunningRouter]) -> RunningRouter:
    return router_factory()


@pytest.fixture
async def async_client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0) as client:
        yield client
