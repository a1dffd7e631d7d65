"""The emulator's ASGI app and its TCP-level hook.

``GET /voice-live/realtime`` checks the query and credentials *before* accepting the upgrade (a refusal is
an HTTP response through the ASGI WebSocket denial-response extension) and then hands the socket to a
``RealtimeConnection``. ``POST /_emulator/faults`` and ``GET /_emulator/state`` are the control surface.

``fault_aware_protocol`` builds a uvicorn HTTP protocol class that remembers each connection's transport
by peer address, so a realtime upgrade can be reset before any response (``drop_connections``) and a
session can be cut without a close frame (``close_abruptly``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import socket
import struct
import weakref
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from uvicorn.protocols.http.h11_impl import H11Protocol

from emulators.voicelive.config import VoiceLiveEmulatorConfig
from emulators.voicelive.connection import RealtimeConnection, new_id
from emulators.voicelive.faults import Faults
from emulators.voicelive.records import EmulatorState, SessionRecord

logger = logging.getLogger("emulators.voicelive")

# uvicorn's sans-I/O WebSocket protocol logs "ASGI callable returned without completing handshake." even after
# a proper denial response. The app runs in uvicorn's task, so a context variable set by the app is still
# visible when uvicorn logs; the filter below drops exactly that false positive and nothing else.
_DENIAL_SENT: contextvars.ContextVar[bool] = contextvars.ContextVar("voicelive_denial_sent", default=False)
_HANDSHAKE_NOISE = "ASGI callable returned without completing handshake."


class _DenialNoiseFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (_DENIAL_SENT.get() and record.getMessage() == _HANDSHAKE_NOISE)


def install_denial_log_filter() -> None:
    """Idempotently attach the filter to uvicorn's error logger."""
    uvicorn_logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DenialNoiseFilter) for f in uvicorn_logger.filters):
        uvicorn_logger.addFilter(_DenialNoiseFilter())


REALTIME_PATH = "/voice-live/realtime"
ACCESS_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key "
    "for an active subscription and use a correct regional API endpoint for your resource."
)
STATUS_MESSAGES = {
    400: "Bad request.",
    401: ACCESS_DENIED,
    403: "The client does not have permission to perform this action.",
    404: "Resource not found.",
    429: "Requests to this API have exceeded the rate limit. Please retry later.",
    500: "The server had an error while processing your request.",
    502: "Bad gateway.",
    503: "The service is temporarily unavailable. Please retry later.",
}


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def error_body(status: int, message: str | None = None, code: str | None = None) -> dict[str, Any]:
    """Azure AI services' HTTP error shape: ``{"error": {"code", "message"}}``."""
    return {
        "error": {"code": code or str(status), "message": message or STATUS_MESSAGES.get(status, "Error.")}
    }


class TransportRegistry:
    """Peer address → live transport, filled by the fault-aware protocol, used for abrupt closes."""

    def __init__(self) -> None:
        self._transports: weakref.WeakValueDictionary[tuple[str, int], asyncio.Transport] = (
            weakref.WeakValueDictionary()
        )

    def add(self, transport: asyncio.Transport) -> None:
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self._transports[(str(peer[0]), int(peer[1]))] = transport

    def abort(self, client: tuple[str, int] | None) -> bool:
        """Reset the TCP connection of ``client`` (no close frame); False if it is unknown."""
        transport = self._transports.pop(client, None) if client else None
        if transport is None or transport.is_closing():
            return False
        reset_abort(transport)
        return True


def reset_abort(transport: asyncio.BaseTransport) -> None:
    """Close with RST (SO_LINGER 0) rather than FIN, like a crashed peer or a dropping load balancer."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    if isinstance(transport, asyncio.Transport):
        transport.abort()
    else:
        transport.close()


def fault_aware_protocol(
    faults: Faults, state: EmulatorState, registry: TransportRegistry
) -> type[H11Protocol]:
    """A uvicorn h11 protocol class bound to this emulator's faults and transport registry."""

    class FaultAwareH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            registry.add(transport)
            super().connection_made(transport)

        def connection_lost(self, exc: Exception | None) -> None:
            if not hasattr(self, "transport"):
                return
            super().connection_lost(exc)

    return FaultAwareH11Protocol


def build_app(
    *, config: VoiceLiveEmulatorConfig, faults: Faults, state: EmulatorState, registry: TransportRegistry
) -> Starlette:
    async def realtime(websocket: WebSocket) -> None:
        client = websocket.scope.get("client")
        peer = (str(client[0]), int(client[1])) if client else None
        if faults.drop_connections:
            # Reset the TCP connection before any handshake response, like a crashed front end. Only the
            # realtime path: the control endpoint on the same port must keep working so the fault can be
            # switched off again.
            state.note_dropped()
            registry.abort(peer)
            return
        refusal = _check_handshake(websocket, config, faults)
        if isinstance(refusal, tuple):
            status, body = refusal
            state.note_rejected(status, body["error"]["message"])
            await websocket.send_denial_response(json_response(body, status))
            _DENIAL_SENT.set(True)
            return
        query = websocket.query_params
        record = SessionRecord(
            session_id=new_id("sess"),
            model=query.get("model") or query.get("agent-name") or config.default_model,
            api_version=query["api-version"],
            client_sdk=query.get("x-ms-client-sdk"),
            auth=refusal,
        )
        await websocket.accept()
        state.add_session(record)
        connection = RealtimeConnection(
            websocket,
            config=config,
            faults=faults,
            record=record,
            abort_transport=lambda: registry.abort(peer),
        )
        try:
            await connection.serve()
        except Exception:
            logger.exception("voicelive emulator: session %s failed", record.session_id)
            raise

    async def post_faults(request: Request) -> Response:
        try:
            changes = orjson.loads(await request.body() or b"{}")
        except orjson.JSONDecodeError:
            return json_response(error_body(400, "Body must be a JSON object.", "InvalidJson"), 400)
        if not isinstance(changes, dict):
            return json_response(error_body(400, "Body must be a JSON object.", "InvalidJson"), 400)
        try:
            if changes.pop("reset", False):
                faults.reset()
            faults.update(**changes)
        except (TypeError, ValueError) as problem:
            return json_response(error_body(400, str(problem), "InvalidFault"), 400)
        return json_response(faults.to_dict())

    async def get_faults(request: Request) -> Response:
        return json_response(faults.to_dict())

    async def get_state(request: Request) -> Response:
        return json_response(state.to_dict() | {"faults": faults.to_dict()})

    return Starlette(
        routes=[
            WebSocketRoute(REALTIME_PATH, realtime),
            Route("/_emulator/faults", post_faults, methods=["POST"]),
            Route("/_emulator/faults", get_faults, methods=["GET"]),
            Route("/_emulator/state", get_state, methods=["GET"]),
        ]
    )


def _check_handshake(
    websocket: WebSocket, config: VoiceLiveEmulatorConfig, faults: Faults
) -> tuple[int, dict[str, Any]] | str:
    """The refusal (status, body) for this upgrade request, or the auth method that let it in."""
    status = faults.reject_handshake_status
    if status is not None:
        return status, error_body(status)
    query = websocket.query_params
    if not query.get("api-version"):
        return 400, error_body(
            400,
            "The api-version query parameter (?api-version=) is required for all requests.",
            "MissingApiVersionParameter",
        )
    if not (query.get("model") or query.get("agent-name") or query.get("agent_id") or query.get("agent-id")):
        return 400, error_body(
            400, "The model query parameter (?model=) is required.", "MissingModelParameter"
        )
    auth = _authenticate(websocket, config)
    if auth is None:
        return 401, error_body(401)
    return auth


def _authenticate(websocket: WebSocket, config: VoiceLiveEmulatorConfig) -> str | None:
    key = websocket.headers.get("api-key") or websocket.query_params.get("api-key")
    authorization = websocket.headers.get("authorization", "")
    if not config.require_auth:
        return "none"
    if key is not None:
        return "api-key" if key in config.api_keys else None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and token and (config.accept_any_bearer or token in config.bearer_tokens):
        return "bearer"
    return None
