"""One accepted USP WebSocket: receive parsed messages, send frames, pause, close with a code and reason.

A reader task drains the socket into a queue so that a disconnect (the client leaving, or the server
shutting down) is noticed even while a behaviour is pausing for a latency knob: :meth:`pause` returns
early and the next send fails with ``WebSocketDisconnect``, which ends the session quietly.
"""

from __future__ import annotations

import asyncio
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


_Item = UspMessage | CloseConnection | None


class UspConnection:
    def __init__(self, websocket: WebSocket, connection_id: str) -> None:
        self.websocket = websocket
        self.connection_id = connection_id
        self.query = websocket.url.query
        self.gone = asyncio.Event()
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None

    def start_reading(self) -> None:
        self._reader = asyncio.create_task(self._read(), name=f"usp-reader-{self.connection_id}")

    async def _read(self) -> None:
        try:
            while True:
                try:
                    message = await self.websocket.receive()
                except (WebSocketDisconnect, RuntimeError, OSError):
                    break
                if message["type"] == "websocket.disconnect":
                    break
                try:
                    if message.get("text") is not None:
                        self._queue.put_nowait(parse_text(message["text"]))
                    elif message.get("bytes") is not None:
                        self._queue.put_nowait(parse_binary(message["bytes"]))
                except UspFrameError as exc:
                    log.warning("connection %s: bad USP frame: %s", self.connection_id, exc)
                    self._queue.put_nowait(CloseConnection(1007, f"Malformed USP frame: {exc}"))
                    return
        finally:
            self.gone.set()
            self._queue.put_nowait(None)

    async def receive(self) -> UspMessage | None:
        """The next USP message, or ``None`` once the client has gone. A bad frame raises 1007."""
        item = await self._queue.get()
        if isinstance(item, CloseConnection):
            raise item
        return item

    async def pause(self, seconds: float) -> None:
        """Sleep for a latency knob, but stop early if the connection goes away."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.gone.wait(), seconds)

    async def send_text(self, frame: str) -> None:
        await self.websocket.send_text(frame)

    async def send_bytes(self, frame: bytes) -> None:
        await self.websocket.send_bytes(frame)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.websocket.application_state != WebSocketState.DISCONNECTED:
            with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
                await self.websocket.close(code=code, reason=reason)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
