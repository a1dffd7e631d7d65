"""Connecting to Azure AI Voice Live: URL, authentication, and a swappable connector.

The connector is to this client what a transport is to httpx: :class:`WebsocketsConnector` is the real one
(``websockets``), and tests or benchmarks plug in their own :class:`VoiceLiveConnector`. Errors are sorted
into the kinds the circuit breaker tells apart: :class:`VoiceLiveUnreachable` (no connection at all) and
:class:`VoiceLiveHandshakeError` (connected, but the upgrade was refused).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from realtime_pipeline.voicelive_events import (
    ErrorEvent,
    SessionUpdated,
    VoiceLiveEventError,
    parse_event,
    session_update,
)

log = logging.getLogger(__name__)

ENTRA_SCOPE = "https://ai.azure.com/.default"
REALTIME_PATH = "/voice-live/realtime"


class VoiceLiveError(Exception):
    """Base of everything that can go wrong reaching Voice Live."""


class VoiceLiveUnreachable(VoiceLiveError):
    """No connection: refused, DNS, TCP/TLS or opening timeout."""


class VoiceLiveHandshakeError(VoiceLiveError):
    """The server answered the upgrade with something other than 101 (bad auth, 5xx, ...)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class VoiceLiveClosed(VoiceLiveError):
    """The socket closed (or was lost) while in use."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"closed: code={code} reason={reason!r}")
        self.code = code
        self.reason = reason


class SessionNotReady(VoiceLiveError):
    """``session.updated`` did not arrive in time, or the session was rejected with an ``error``."""


def realtime_url(endpoint: str, *, api_version: str, model: str) -> str:
    """``https://<res>.services.ai.azure.com`` (or ``…cognitiveservices.azure.com``, or an emulator's
    ``http://127.0.0.1:port``) → ``wss://…/voice-live/realtime?api-version=…&model=…``."""
    parts = urlsplit(endpoint.strip())
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"not a Voice Live endpoint: {endpoint!r}")
    path = parts.path.rstrip("/")
    if not path.endswith(REALTIME_PATH):
        path += REALTIME_PATH
    query: dict[str, str] = {"api-version": api_version}
    if model:
        query["model"] = model
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        query.setdefault(key, value)
    return urlunsplit((scheme, parts.netloc, path, urlencode(query), ""))


# Authentication ------------------------------------------------------------------------------------------


class VoiceLiveAuth(Protocol):
    async def headers(self) -> dict[str, str]:
        """Headers for the upgrade request."""
        ...

    async def close(self) -> None: ...


class ApiKeyAuth:
    def __init__(self, api_key: str) -> None:
        self._headers = {"api-key": api_key}

    async def headers(self) -> dict[str, str]:
        return dict(self._headers)

    async def close(self) -> None:
        return None


class AccessTokenLike(Protocol):
    @property
    def token(self) -> str: ...

    @property
    def expires_on(self) -> int: ...


class AsyncTokenCredentialLike(Protocol):
    """The slice of ``azure.core.credentials_async.AsyncTokenCredential`` we use."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any: ...

    async def close(self) -> None: ...


class EntraIdAuth:
    """Microsoft Entra ID bearer tokens, cached and refreshed ``refresh_margin_seconds`` before expiry.

    One token serves every call of the process; concurrent call starts share one refresh (a lock), so a
    burst of calls never stampedes the identity endpoint.
    """

    def __init__(
        self,
        credential: AsyncTokenCredentialLike | Callable[[], AsyncTokenCredentialLike],
        *,
        scope: str = ENTRA_SCOPE,
        refresh_margin_seconds: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # A factory defers building the credential chain to the first call that needs a token.
        self._credential: AsyncTokenCredentialLike | None = None
        self._factory: Callable[[], AsyncTokenCredentialLike] | None = None
        if callable(credential) and not hasattr(credential, "get_token"):
            self._factory = credential
        else:
            self._credential = credential  # type: ignore[assignment]
        self._scope = scope
        self._margin = refresh_margin_seconds
        self._clock = clock
        self._token: str | None = None
        self._expires_on = 0.0
        self._lock = asyncio.Lock()

    def _fresh(self) -> bool:
        return self._token is not None and self._clock() < self._expires_on - self._margin

    async def token(self) -> str:
        if self._fresh():
            assert self._token is not None
            return self._token
        async with self._lock:
            if not self._fresh():
                if self._credential is None:
                    assert self._factory is not None
                    self._credential = self._factory()
                access = await self._credential.get_token(self._scope)
                self._token = str(access.token)
                self._expires_on = float(access.expires_on)
            assert self._token is not None
            return self._token

    async def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.token()}"}

    async def close(self) -> None:
        if self._credential is not None:
            await self._credential.close()


def default_entra_auth() -> EntraIdAuth:
    """``DefaultAzureCredential`` (async): managed identity, workload identity, az login, ..."""

    def build() -> AsyncTokenCredentialLike:
        from azure.identity.aio import DefaultAzureCredential

        credential: AsyncTokenCredentialLike = DefaultAzureCredential()
        return credential

    return EntraIdAuth(build)


# Connections ---------------------------------------------------------------------------------------------


class VoiceLiveConnection(Protocol):
    async def send(self, message: str) -> None:
        """Send one text frame; raises :class:`VoiceLiveClosed` if the socket is gone."""
        ...

    async def recv(self) -> str | bytes:
        """The next frame; raises :class:`VoiceLiveClosed` when the socket closes."""
        ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...

    def abort(self) -> None:
        """Drop the connection at once, with no close handshake (a stuck peer would not answer one): a pending
        ``recv`` raises :class:`VoiceLiveClosed`."""
        ...


class VoiceLiveConnector(Protocol):
    async def connect(
        self, url: str, headers: Mapping[str, str], *, open_timeout: float
    ) -> VoiceLiveConnection:
        """Open the socket; raises :class:`VoiceLiveUnreachable` or :class:`VoiceLiveHandshakeError`."""
        ...


ABNORMAL_CLOSURE = 1006  # RFC 6455 §7.1.5: the code of a connection that ended without a close frame


def _closed(exc: ConnectionClosed) -> VoiceLiveClosed:
    """The close Voice Live sent, or 1006 when the connection dropped without one (a reset, a dead peer)."""
    if exc.rcvd is None:
        return VoiceLiveClosed(ABNORMAL_CLOSURE, "no close frame")
    return VoiceLiveClosed(exc.rcvd.code, exc.rcvd.reason)


class WebsocketsConnection:
    __slots__ = ("_ws",)

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    async def send(self, message: str) -> None:
        try:
            await self._ws.send(message)
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def recv(self) -> str | bytes:
        try:
            return await self._ws.recv()
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._ws.close(code, reason)

    def abort(self) -> None:
        self._ws.transport.abort()


class WebsocketsConnector:
    """The real connector. No compression (audio does not compress and it costs CPU per frame)."""

    def __init__(self, *, max_size: int = 4 * 1024 * 1024, ping_interval: float | None = 20.0) -> None:
        self._max_size = max_size
        self._ping_interval = ping_interval

    async def connect(
        self, url: str, headers: Mapping[str, str], *, open_timeout: float
    ) -> VoiceLiveConnection:
        try:
            ws = await websockets.connect(
                url,
                additional_headers=dict(headers),
                open_timeout=open_timeout,
                compression=None,
                max_size=self._max_size,
                ping_interval=self._ping_interval,
                proxy=None,
                close_timeout=2.0,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise VoiceLiveHandshakeError(f"upgrade refused with HTTP {status}", status) from None
        except InvalidHandshake as exc:
            raise VoiceLiveHandshakeError(f"bad handshake: {exc}") from None
        except (OSError, TimeoutError) as exc:
            raise VoiceLiveUnreachable(f"{type(exc).__name__}: {exc}") from None
        return WebsocketsConnection(ws)


# Client and session handshake ----------------------------------------------------------------------------


@dataclass
class ReadySession:
    """A connection whose ``session.update`` was confirmed by ``session.updated``."""

    connection: VoiceLiveConnection
    connect_ms: float
    ready_ms: float  # connect start → session.updated
    session: dict[str, Any]


class VoiceLiveClient:
    def __init__(
        self,
        *,
        endpoint: str,
        api_version: str,
        model: str,
        auth: VoiceLiveAuth,
        connector: VoiceLiveConnector | None = None,
        open_timeout: float = 5.0,
        ready_timeout: float = 5.0,
    ) -> None:
        # No endpoint configured: every call fails fast as "unreachable" (and moves to legacy).
        self.url = realtime_url(endpoint, api_version=api_version, model=model) if endpoint else ""
        self._auth = auth
        self._connector: VoiceLiveConnector = connector or WebsocketsConnector()
        self._open_timeout = open_timeout
        self._ready_timeout = ready_timeout

    async def connect(self, *, open_timeout: float | None = None) -> VoiceLiveConnection:
        if not self.url:
            raise VoiceLiveUnreachable("AZURE_VOICELIVE_ENDPOINT is not set")
        timeout = open_timeout or self._open_timeout
        try:
            # Bounded: a hanging credential chain must fail the call over to legacy, not hold it in silence.
            async with asyncio.timeout(timeout):
                headers = await self._auth.headers()
        except Exception as exc:  # credential chain failures (or its timeout): realtime cannot be used
            raise VoiceLiveHandshakeError(f"could not get credentials: {type(exc).__name__}") from None
        return await self._connector.connect(self.url, headers, open_timeout=timeout)

    async def open_session(
        self,
        session: dict[str, Any],
        *,
        open_timeout: float | None = None,
        ready_timeout: float | None = None,
    ) -> ReadySession:
        """Connect, send ``session.update`` and wait for ``session.updated``; only then is it usable."""
        started = time.monotonic()
        connection = await self.connect(open_timeout=open_timeout)
        connected = time.monotonic()
        try:
            await connection.send(session_update(session))
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancellation (the caller hung up)
            # that arrives as session.updated does, and the connection would outlive the call.
            async with asyncio.timeout(ready_timeout or self._ready_timeout):
                confirmed = await _await_session_updated(connection)
        except BaseException as exc:
            await _close_quietly(connection)
            if isinstance(exc, TimeoutError):
                raise SessionNotReady("session.updated did not arrive in time") from None
            raise
        done = time.monotonic()
        return ReadySession(
            connection=connection,
            connect_ms=(connected - started) * 1000.0,
            ready_ms=(done - started) * 1000.0,
            session=confirmed,
        )

    async def aclose(self) -> None:
        await self._auth.close()


async def _await_session_updated(connection: VoiceLiveConnection) -> dict[str, Any]:
    while True:
        frame = await connection.recv()
        try:
            event = parse_event(frame)
        except VoiceLiveEventError:
            log.debug("voicelive: unparseable frame during session set-up")
            continue
        if isinstance(event, SessionUpdated):
            return event.session
        if isinstance(event, ErrorEvent):
            raise SessionNotReady(f"session.update rejected: {event.type}/{event.code}: {event.message}")


async def _close_quietly(connection: VoiceLiveConnection) -> None:
    try:
        async with asyncio.timeout(2.0):
            await connection.close()
    except Exception:
        log.debug("voicelive: close failed", exc_info=True)
