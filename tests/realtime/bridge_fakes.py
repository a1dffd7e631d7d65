"""Drive one CallBridge in process with scripted Twilio and Voice Live sides, to reach the interleavings
(a hang-up in the very loop turn a session becomes ready, a send that waits for the socket to drain) that
sockets make too rare to test end to end."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from flags.breaker import TrialPermit
from flags.clock import SystemClock
from realtime_pipeline.audio import UlawPassthrough
from realtime_pipeline.bridge import BridgeConfig, CallBridge
from realtime_pipeline.call_log import CallLog
from realtime_pipeline.guards import RateLimitedLog
from realtime_pipeline.outcome import OutcomeReporter
from realtime_pipeline.twilio_media import Start
from realtime_pipeline.voicelive_client import ReadySession, VoiceLiveClosed
from router.observability import Metrics

STREAM_SID = "MZ" + "1" * 32
CALL_SID = "CA" + "2" * 32


class FakeWS:
    """Starlette WebSocket stand-in: receive() from a queue, send_text() recorded."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None

    async def receive(self) -> dict[str, Any]:
        return await self.inbox.get()

    async def send_text(self, text: str) -> None:
        self.sent.append(orjson.loads(text))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)

    def push(self, message: dict[str, Any]) -> None:
        self.inbox.put_nowait({"type": "websocket.receive", "text": orjson.dumps(message).decode()})

    def media(self, payload: bytes) -> None:
        self.push(
            {
                "event": "media",
                "streamSid": STREAM_SID,
                "media": {"payload": base64.b64encode(payload).decode()},
            }
        )

    def mark(self, name: str) -> None:
        self.push({"event": "mark", "streamSid": STREAM_SID, "mark": {"name": name}})

    def hang_up(self) -> None:
        self.inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.sent if m.get("event") == kind]


class FakeConnection:
    """A Voice Live socket: the test pushes server events, the bridge's sends are recorded."""

    def __init__(self, name: str, send_hook: Callable[[str], Awaitable[None]] | None = None) -> None:
        self.name = name
        self.events: asyncio.Queue[str | None] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.closed = False
        self.aborted = False
        self._send_hook = send_hook

    async def send(self, message: str) -> None:
        if self.closed:
            raise VoiceLiveClosed(1006, "closed")
        self.sent.append(orjson.loads(message))
        if self._send_hook is not None:
            await self._send_hook(message)

    async def recv(self) -> str:
        if self.closed:
            raise VoiceLiveClosed(1000, "closed")
        frame = await self.events.get()
        if frame is None:
            raise VoiceLiveClosed(1006, "lost")
        return frame

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = True
        self.events.put_nowait(None)

    def push(self, event: dict[str, Any]) -> None:
        self.events.put_nowait(orjson.dumps(event).decode())

    def lose(self) -> None:
        """The socket drops (no close by us)."""
        self.events.put_nowait(None)

    def abort(self) -> None:
        self.aborted = True
        self.lose()

    def types(self) -> list[str]:
        return [e["type"] for e in self.sent]


class FakeClient:
    """open_session() hands out FakeConnections; ``gate`` (if set) holds the next open until released."""

    def __init__(self, send_hook: Callable[[str], Awaitable[None]] | None = None) -> None:
        self.opened: list[FakeConnection] = []
        self.gate: asyncio.Event | None = None
        self.fail_next: Exception | None = None
        self._send_hook = send_hook

    async def open_session(self, session: dict[str, Any], **_: Any) -> ReadySession:
        if self.gate is not None:
            gate, self.gate = self.gate, None
            await gate.wait()
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        connection = FakeConnection(f"vl{len(self.opened)}", self._send_hook)
        self.opened.append(connection)
        return ReadySession(connection=connection, connect_ms=1.0, ready_ms=2.0, session=session)

    async def aclose(self) -> None:
        return None


class FakeMover:
    def __init__(self) -> None:
        self.moves: list[tuple[str, str]] = []
        self.hang_ups: list[tuple[str, str]] = []
        self.greets: list[bool] = []  # each move's greet (the caller heard nothing of the agent)
        self.accept_hang_up = True

    async def move_to_legacy(self, call_sid: str, reason: str, *, greet: bool = False) -> bool:
        self.moves.append((call_sid, reason))
        self.greets.append(greet)
        return True

    async def hang_up(self, call_sid: str, reason: str) -> bool:
        self.hang_ups.append((call_sid, reason))
        return self.accept_hang_up

    async def aclose(self) -> None:
        return None


class FakeBreaker:
    def __init__(self) -> None:
        self.recorded: list[tuple[str, Any]] = []
        self.released: list[Any] = []

    async def record(self, outcome: Any, *, trial: Any = None) -> None:
        self.recorded.append((str(outcome.value), trial))

    async def release_trial(self, permit: Any) -> None:
        self.released.append(permit)


class FakeStore:
    def __init__(self) -> None:
        self.merged: dict[str, Any] = {}
        self.events: list[dict[str, Any]] = []
        self.turns: list[dict[str, Any]] = []
        self.history: list[dict[str, Any]] = []  # what was handed over to legacy, in order

    async def merge_call(self, call_sid: str, fields: dict[str, Any]) -> None:
        self.merged.update(fields)

    async def append_call_event(self, call_sid: str, event: dict[str, Any]) -> None:
        self.events.append(event)

    async def append_turn(self, data: dict[str, Any]) -> None:
        self.turns.append(data)

    async def append_history(self, call_sid: str, messages: list[dict[str, Any]], cap: int) -> None:
        self.history.extend(messages)


def make_bridge(
    *,
    config: BridgeConfig | None = None,
    client: FakeClient | None = None,
    audio: Any = None,
    trial: TrialPermit | None = None,
    tools: Any = None,
    session: dict[str, Any] | None = None,
) -> tuple[CallBridge, FakeWS, FakeClient, FakeMover, FakeBreaker, FakeStore]:
    ws = FakeWS()
    client = client or FakeClient()
    mover = FakeMover()
    breaker = FakeBreaker()
    store = FakeStore()
    metrics = Metrics()
    call_log = CallLog(store, metrics, CALL_SID)  # type: ignore[arg-type]
    outcome = OutcomeReporter(breaker, metrics, call_log, trial=trial)  # type: ignore[arg-type]
    start = Start(STREAM_SID, CALL_SID, "AC1", {}, "audio/x-mulaw", 8000)
    bridge = CallBridge(
        websocket=ws,  # type: ignore[arg-type]
        start=start,
        client=client,  # type: ignore[arg-type]
        session=session or {"input_audio_format": "g711_ulaw"},
        audio=audio or UlawPassthrough(),
        mover=mover,
        outcome=outcome,
        call_log=call_log,
        metrics=metrics,
        clock=SystemClock(),
        config=config or BridgeConfig(),
        ratelog=RateLimitedLog(logging.getLogger("audit"), SystemClock().monotonic),
        tools=tools,
    )
    return bridge, ws, client, mover, breaker, store


def audio_delta(item_id: str, ms: int, response_id: str = "r1") -> dict[str, Any]:
    return {
        "type": "response.audio.delta",
        "response_id": response_id,
        "item_id": item_id,
        "delta": base64.b64encode(b"\xff" * (8 * ms)).decode(),
    }


async def until(predicate: Callable[[], bool], within: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.005)
