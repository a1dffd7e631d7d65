"""One accepted USP WebSocket: receive parsed messages, send frames, close with a code and reason."""

from __future__ import annotations

import contextlib
import logging

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from emulators.azure_speech.usp import UspFrameError, UspMessage, parse_binary, parse_text

log = logging.getLogger("emulators.azure_speech")


class CloseConnection(Exception):
    """Raised by a behaviour to end the connection with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


class UspConnection:
    def __init__(self, websocket: WebSocket, connection_id: str) -> None:
        self.websocket = websocket
        self.connection_id = connection_id
        self.query = websocket.url.query

    async def receive(self) -> UspMessage | None:
        """The next USP message, or ``None`` once the client has gone. Bad frames close with 1007."""
        try:
            message = await self.websocket.receive()
        except (WebSocketDisconnect, RuntimeError):
            return None
        if message["type"] == "websocket.disconnect":
            return None
        try:
            if message.get("text") is not None:
                return parse_text(message["text"])
            if message.get("bytes") is not None:
                return parse_binary(message["bytes"])
        except UspFrameError as exc:
            log.warning("connection %s: bad USP frame: %s", self.connection_id, exc)
            raise CloseConnection(1007, f"Malformed USP frame: {exc}") from exc
        return UspMessage({}, "")

    @property
    def open(self) -> bool:
        return (
            self.websocket.client_state == WebSocketState.CONNECTED
            and self.websocket.application_state == WebSocketState.CONNECTED
        )

    async def send_text(self, frame: str) -> None:
        await self.websocket.send_text(frame)

    async def send_bytes(self, frame: bytes) -> None:
        await self.websocket.send_bytes(frame)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.websocket.application_state != WebSocketState.DISCONNECTED:
            with contextlib.suppress(RuntimeError, OSError):
                await self.websocket.close(code=code, reason=reason)
