"""A Voice Live far end cheap enough to stand behind hundreds of benchmark calls on a small box.

The product emulator (``emulators.voicelive``) runs real VAD on every appended frame and costs about 17 ms of
CPU per call-second, so on a 2-core machine it cannot keep 200 calls at real pace and the bridge benchmark
would measure it instead of the bridge. This stub speaks the same wire protocol to the bridge (the
``session.update`` → ``session.updated`` handshake, ``input_audio_buffer.append`` counted, and per turn
``speech_started``, ``speech_stopped``, ``response.created``, 20 ms ``response.audio.delta`` at real pace,
``response.audio.done``, ``response.done``) but replaces VAD with a fixed script: one turn every 5.6 s, which
is the driver's own speech cycle. It runs on raw asyncio transports with one 2 ms timer for all sessions,
reads only the first bytes of each client frame (to tell appends from other events, and the send stamp of an
append's audio), and encodes each response's delta frame once, cut around the place of its send stamp
(``bench.stamps``). Benchmarks only: never used by the service.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
from array import array
from typing import Any

import numpy as np
import orjson

from bench.stamps import STAMP_CHARS, age_us, split_at, stamp_now
from bench.wsframes import frame_at

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SLOT_SECONDS = 0.002
SLOTS_PER_FRAME = 10
CYCLE_FRAMES = 280  # 5.6 s: 1.6 s of caller speech + 4 s of silence, as the driver sends
SPEECH_FRAMES = 80
SPEECH_END_FRAMES = 25  # VAD's silence duration (500 ms) before speech_stopped
FIRST_AUDIO_FRAMES = 8  # ~150 ms from speech_stopped to the first delta
REPLY_FRAMES = 115  # 2.3 s of reply audio in 20 ms deltas
_APPEND = b'{"type":"input_audio_buffer.append"'
_APPEND_OVERHEAD = len(b'{"type":"input_audio_buffer.append","audio":""}')
_AUDIO_AT = len(b'{"type":"input_audio_buffer.append","audio":"')
_DELTA = b'"delta":"'


def _server_frame(payload: bytes) -> bytes:
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return bytes((0x81, 126)) + size.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + size.to_bytes(8, "big") + payload


def _unmask(data: bytes | bytearray, key: bytes) -> bytes:
    size = len(data)
    mask = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(data, "little") ^ int.from_bytes(mask, "little")).to_bytes(size, "little")


def _delta_audio(fmt: str) -> str:
    """20 ms of a 440 Hz tone in the session's output format, base64."""
    if fmt == "pcm16":
        t = np.arange(480) / 24000
        return base64.b64encode((np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()).decode()
    from emulators.speechlike import speechlike_ulaw

    return base64.b64encode(speechlike_ulaw(20, seed=3)).decode()


class StubSession(asyncio.Protocol):
    def __init__(self, farend: VoiceLiveStub) -> None:
        self.farend = farend
        self.transport: Any = None
        self.buffer = bytearray()
        self.upgraded = False
        self.configured = False
        self.closed = False
        self.number = next(farend.numbers)
        self.frame = 0  # position in the turn cycle
        self.turn = 0
        self.delta_frame: tuple[bytes, bytes] | None = None  # cut around the stamp (see bench.stamps)
        self.audio = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.farend.groups[self.number % SLOTS_PER_FRAME].discard(self)

    def send_event(self, event: dict[str, Any]) -> None:
        if not self.closed:
            self.transport.write(_server_frame(orjson.dumps(event)))

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            headers = bytes(buf[:end]).decode("latin-1").split("\r\n")
            ws_key = next(
                h.split(":", 1)[1].strip() for h in headers if h.lower().startswith("sec-websocket-key")
            )
            accept = base64.b64encode(hashlib.sha1(ws_key.encode() + WS_GUID).digest()).decode()
            self.transport.write(
                (
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
                ).encode()
            )
            del buf[: end + 4]
            self.upgraded = True
            self.send_event(
                {"type": "session.created", "event_id": "evt_0", "session": {"id": f"sess_{self.number}"}}
            )
        pos = 0
        while (frame := frame_at(buf, pos, masked=True)) is not None:
            opcode, start, end, key = frame
            if opcode == 1:
                head_bytes = _unmask(buf[start : min(end, start + len(_APPEND))], key)
                if head_bytes == _APPEND:
                    farend = self.farend
                    farend.appends += 1
                    farend.appended_b64_chars += end - start - _APPEND_OVERHEAD
                    if farend.recording and end - start >= _AUDIO_AT + STAMP_CHARS:
                        at = start + _AUDIO_AT
                        key_at = key[_AUDIO_AT % 4 :] + key[: _AUDIO_AT % 4]
                        age = age_us(_unmask(buf[at : at + STAMP_CHARS], key_at))
                        if age >= 0:
                            farend.inbound_us.append(age)
                else:
                    self._on_event(orjson.loads(_unmask(buf[start:end], key)))
            elif opcode == 8:
                if not self.closed:
                    self.transport.write(bytes((0x88, 2)) + (1000).to_bytes(2, "big"))
                    self.transport.close()
                self.closed = True
            elif opcode == 9 and not self.closed:
                self.transport.write(bytes((0x8A, end - start)) + _unmask(buf[start:end], key))
            pos = end
        if pos:
            del buf[:pos]

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "session.update" and not self.configured:
            session = dict(event.get("session") or {})
            self.audio = _delta_audio(str(session.get("output_audio_format", "pcm16")))
            session["id"] = f"sess_{self.number}"
            self.send_event({"type": "session.updated", "event_id": "evt_1", "session": session})
            self.configured = True
            self.frame = self.number * 7 % CYCLE_FRAMES
            self.farend.groups[self.number % SLOTS_PER_FRAME].add(self)
            self.farend.opened += 1
        else:
            self.farend.other_events += 1

    def step(self) -> None:
        """One 20 ms frame of this session's turn script."""
        frame = self.frame % CYCLE_FRAMES
        if self.farend.quiet and (
            frame < 5 or frame > FIRST_AUDIO_FRAMES + SPEECH_FRAMES + SPEECH_END_FRAMES + REPLY_FRAMES
        ):
            return  # the callers stopped talking: finish the reply in progress, start no new turn
        self.frame += 1
        item = f"item_{self.number}_{self.turn}"
        response = f"resp_{self.number}_{self.turn}"
        stopped = SPEECH_FRAMES + SPEECH_END_FRAMES
        first = stopped + FIRST_AUDIO_FRAMES
        if frame == 5:
            self.send_event(
                {"type": "input_audio_buffer.speech_started", "item_id": f"u{item}", "audio_start_ms": 0}
            )
        elif frame == stopped:
            self.send_event(
                {"type": "input_audio_buffer.speech_stopped", "item_id": f"u{item}", "audio_end_ms": 1600}
            )
            self.send_event(
                {"type": "response.created", "response": {"id": response, "status": "in_progress"}}
            )
            self.delta_frame = split_at(
                _server_frame(
                    orjson.dumps(
                        {
                            "type": "response.audio.delta",
                            "response_id": response,
                            "item_id": item,
                            "output_index": 0,
                            "content_index": 0,
                            "delta": self.audio,
                        }
                    )
                ),
                _DELTA,
            )
        elif first <= frame < first + REPLY_FRAMES:
            if not self.closed and self.delta_frame:  # (a session may join the script mid-reply)
                head, tail = self.delta_frame
                self.transport.write(head + self.farend.stamp + tail)
                self.farend.deltas += 1
        elif frame == first + REPLY_FRAMES and self.delta_frame:
            self.delta_frame = None
            self.send_event({"type": "response.audio.done", "response_id": response, "item_id": item})
            self.send_event(
                {"type": "response.done", "response": {"id": response, "status": "completed", "usage": {}}}
            )
            self.turn += 1


class VoiceLiveStub:
    """All sessions of one process; ``run`` serves until cancelled."""

    def __init__(self) -> None:
        self.groups: list[set[StubSession]] = [set() for _ in range(SLOTS_PER_FRAME)]
        self.numbers = itertools.count()
        self.opened = 0
        self.appends = 0
        self.appended_b64_chars = 0  # audio appended, as base64 characters (4 per 3 bytes)
        self.deltas = 0
        self.other_events = 0
        self.quiet = False
        self.recording = False
        self.inbound_us = array("q")  # end-to-end latency of stamped appends (driver → bridge → here)
        self.stamp = stamp_now()  # of the current 2 ms slot

    def totals(self) -> dict[str, int]:
        return {
            "appends": self.appends,
            "appended_b64_chars": self.appended_b64_chars,
            "audio_deltas": self.deltas,
            "sessions": self.opened,
        }

    async def serve(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: StubSession(self), "127.0.0.1", port, backlog=1024)
        t0 = loop.time()
        slot = 0

        def tick() -> None:
            nonlocal slot
            self.stamp = stamp_now()
            for session in list(self.groups[slot % SLOTS_PER_FRAME]):
                session.step()
            slot += 1
            loop.call_at(t0 + slot * SLOT_SECONDS, tick)

        loop.call_at(t0, tick)
        async with server:
            await asyncio.Future()


def run_stub(port: int, conn: Any, cpus: list[int] | None) -> None:
    """Process entry point: serve on ``port``; answer ``"totals"`` requests on the pipe ``conn``."""
    import os
    import threading

    if cpus:
        os.sched_setaffinity(0, cpus)
    stub = VoiceLiveStub()

    def answer() -> None:
        while True:
            request = conn.recv()
            if request == "totals":
                conn.send(stub.totals())
            elif request == "quiet":
                stub.quiet = True
            elif request == "talk":
                stub.quiet = False
            elif request == "record":
                stub.inbound_us = array("q")
                stub.recording = True
                conn.send(b"")
            elif request == "stop_recording":
                stub.recording = False
                conn.send(stub.inbound_us.tobytes())

    threading.Thread(target=answer, daemon=True).start()
    try:
        import uvloop

        uvloop.run(stub.serve(port))
    except ImportError:  # pragma: no cover
        asyncio.run(stub.serve(port))
