"""A scripted Twilio Media Streams client: what Twilio does on the bridge's socket, and what it heard.

Signs the upgrade like Twilio, sends ``connected``/``start``/``media`` (20 ms μ-law frames)/``stop``, and plays
what the bridge sends: media is queued and "played" at ``play_speed`` × real time, a mark is echoed when the
audio queued before it has played, and ``clear`` drops the queued audio and echoes every pending mark (as
Twilio documents). Every echo is recorded with the item's played position so tests can check truncates.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import websockets
from websockets.asyncio.client import ClientConnection

from emulators.twilio.media_stream import (
    FRAME_BYTES,
    connected_message,
    mark_message,
    media_message,
    start_message,
    stop_message,
)


@dataclass
class Echo:
    name: str
    item_id: str
    played_ms: float  # how much of that item the client had played when it echoed
    cleared: bool  # echoed because of a clear, not because its audio played


async def wait_until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    """Poll ``predicate`` until true; TimeoutError after ``within`` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        if predicate():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.01)


class TwilioMediaClient:
    def __init__(
        self,
        url: str,
        *,
        signature: str | None,
        call_sid: str,
        stream_sid: str = "MZ00000000000000000000000000000001",
        account_sid: str = "AC00000000000000000000000000000000",
        token: str | None = None,
        play_speed: float = 4.0,
        compression: str | None = None,
    ) -> None:
        self.url = url
        self.compression = compression
        self.signature = signature
        self.call_sid = call_sid
        self.stream_sid = stream_sid
        self.account_sid = account_sid
        self.token = token
        self.play_speed = play_speed
        self.ws: ClientConnection | None = None
        self.received: list[dict[str, Any]] = []
        self.audio = bytearray()  # every media payload received, in order
        self.echoes: list[Echo] = []
        self.clears = 0
        self.played_by_item: dict[str, float] = {}
        self._queue: deque[tuple[str, Any]] = deque()
        self._pending_bytes = 0
        self._wake = asyncio.Event()
        self._seq = 0
        self._chunk = 0
        self._media_ms = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self.closed = asyncio.Event()

    # Connection ------------------------------------------------------------------------------------------

    async def open(self) -> TwilioMediaClient:
        headers = {"X-Twilio-Signature": self.signature} if self.signature else {}
        self.ws = await websockets.connect(
            self.url,
            additional_headers=headers,
            compression=self.compression,
            proxy=None,
            max_size=None,
        )
        self._echo_sends: list[asyncio.Task[None]] = []
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._play())]
        return self

    async def __aenter__(self) -> TwilioMediaClient:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def send(self, message: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send(orjson.dumps(message).decode())

    async def send_raw(self, text: str | bytes) -> None:
        assert self.ws is not None
        await self.ws.send(text)

    def _sequenced(self, message: dict[str, Any]) -> dict[str, Any]:
        self._seq += 1
        message["sequenceNumber"] = str(self._seq)
        return message

    async def start(self, *, connected: bool = True, parameters: dict[str, str] | None = None) -> None:
        if connected:
            await self.send(connected_message())
        params = dict(parameters or {})
        if self.token is not None:
            params.setdefault("token", self.token)
        start = start_message(
            account_sid=self.account_sid,
            stream_sid=self.stream_sid,
            call_sid=self.call_sid,
            parameters=params,
        )
        await self.send(self._sequenced(start))

    def media_event(self, frame: bytes, stream_sid: str | None = None) -> dict[str, Any]:
        self._chunk += 1
        event = media_message(
            stream_sid=stream_sid or self.stream_sid,
            chunk=self._chunk,
            timestamp_ms=self._media_ms,
            audio=frame,
        )
        self._media_ms += 20
        return self._sequenced(event)

    async def send_audio(self, ulaw: bytes, *, pace: float = 0.0) -> None:
        """Send ``ulaw`` as 20 ms frames; ``pace`` seconds between frames (0 = as fast as possible).

        Mark echoes already decided are put on the wire first, as on a real call: what the caller heard
        before speaking reaches the bridge before the speech does."""
        await self.flush_echoes()
        for offset in range(0, len(ulaw), FRAME_BYTES):
            await self.send(self.media_event(ulaw[offset : offset + FRAME_BYTES]))
            if pace:
                await asyncio.sleep(pace)

    async def stop(self) -> None:
        """Hang up. Echoes of marks already played go first, as Twilio sends its events in order."""
        await self.flush_echoes()
        stop = stop_message(account_sid=self.account_sid, stream_sid=self.stream_sid, call_sid=self.call_sid)
        await self.send(self._sequenced(stop))

    async def wait_closed(self, within: float = 10.0) -> int | None:
        await asyncio.wait_for(self.closed.wait(), within)
        return self.close_code

    async def wait_for(self, predicate: Callable[[], bool], within: float = 10.0) -> None:
        await wait_until(predicate, within)

    # What the bridge sends -----------------------------------------------------------------------------

    @property
    def marks_echoed(self) -> list[Echo]:
        return [echo for echo in self.echoes if not echo.cleared]

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [message for message in self.received if message.get("event") == kind]

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for frame in self.ws:
                message = orjson.loads(frame)
                self.received.append(message)
                kind = message.get("event")
                if kind == "media":
                    data = base64.b64decode(message["media"]["payload"])
                    self.audio.extend(data)
                    self._queue.append(("media", data))
                elif kind == "mark":
                    self._queue.append(("mark", message["mark"]["name"]))
                elif kind == "clear":
                    self._on_clear()
                self._wake.set()
        except websockets.ConnectionClosed:
            pass
        finally:
            if self.ws.close_code is not None:
                self.close_code = self.ws.close_code
                self.close_reason = self.ws.close_reason or ""
            self.closed.set()

    def _on_clear(self) -> None:
        self.clears += 1
        self._pending_bytes = 0
        pending_marks = [value for kind, value in self._queue if kind == "mark"]
        self._queue.clear()
        for name in pending_marks:
            self._echo(name, cleared=True)

    def _echo(self, name: str, *, cleared: bool) -> None:
        item_id = name.rsplit(":", 1)[0]
        if not cleared:
            self.played_by_item[item_id] = self.played_by_item.get(item_id, 0.0) + self._pending_bytes / 8
            self._pending_bytes = 0
        self.echoes.append(Echo(name, item_id, self.played_by_item.get(item_id, 0.0), cleared))
        if self.ws is not None:
            task = asyncio.create_task(self.send(mark_message(self.stream_sid, name)))
            self._tasks.append(task)
            self._echo_sends.append(task)

    async def flush_echoes(self) -> None:
        """Wait until every mark echo decided so far has been sent."""
        sends, self._echo_sends = self._echo_sends, []
        for task in sends:
            with contextlib.suppress(Exception):
                await task

    async def _play(self) -> None:
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            kind, value = self._queue.popleft()
            if kind == "media":
                clears = self.clears
                await asyncio.sleep(len(value) / 8000 / self.play_speed)
                if clears == self.clears:  # a clear while "playing" discards the chunk
                    self._pending_bytes += len(value)
            else:
                with contextlib.suppress(Exception):
                    self._echo(value, cleared=False)
