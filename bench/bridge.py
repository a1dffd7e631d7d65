"""Bridge benchmark: N concurrent simulated calls through one uvicorn worker, Voice Live in another process,
both directions streaming at real pace.

    python -m bench.bridge [--quick] [--calls 50,200,400] [--modes baseline,g711_ulaw,pcm16] [--seconds 15]
                           [--loop uvloop|asyncio] [--ws websockets|websockets-sansio] [--farend stub|emulator]

Processes: the server under test (``--serve``: ``RealtimePipeline`` in ``g711_ulaw`` or ``pcm16`` mode, or a
minimal passthrough bridge written with the same libraries as the baseline) pinned to one core (one worker =
one core); on the other cores, ``--drivers`` driver processes (the simulated Twilio side: 20 ms μ-law frames
at real pace per call, marks echoed at once) and the Voice Live side: by default the scripted stub
``bench.voicelive_stub`` (same wire protocol, no VAD: the product emulator, ``--farend emulator``, costs about
17 ms CPU per call-second and cannot keep 200 calls at pace on a 2-core box). Reported per run: the bridge's
added latency per frame (frame received → forwarded, both directions, measured inside the server with
``perf_counter_ns``), the end-to-end latency both ways from send stamps carried in the audio (``bench.stamps``;
μ-law and the baseline only), the server's event-loop lag and whether it kept pace (``keeps_pace``), server
CPU per audio frame and per call-second (from its ``/proc`` stat), server memory per call, harness CPU, driver
late ticks, and frames lost end to end, or ``"invalid: harness behind"`` when a driver tick inside the
measured window fired more than 10 ms late. ``max_calls_sustained`` is, per mode, the most calls of a valid
run with no frame lost that kept pace. Results go to ``bench/results/bridge.json``.

Memory per call is the growth of the server's anonymous resident memory (``RssAnon``) from idle to the end of
the measured window, divided by the calls. It used to be the growth of ``VmRSS``, which also counted what is
not per call: file-backed pages of shared libraries that the first call of a mode touches once (numpy's code for
``pcm16``: about 1.6 MB, i.e. 32 KB "per call" at 50 calls), the probe's own buffers as it fills them (now
faulted in at start), and each mode's one-time audio state (μ-law tables, the resampler's filter: now built
before the idle reading). The VmRSS figure is still reported, as ``rss_kb_per_call``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from array import array
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench.stamps import STAMP_CHARS, age_us, split_at, stamp_now
from bench.wsframes import frame_at

RESULTS = Path(__file__).with_name("results") / "bridge.json"
AUTH_TOKEN = "bench-twilio-token"
PUBLIC = "https://bench.invalid"
STREAM_SECRET = b"bench-stream-secret"
PROBE_SLOTS = 2_000_000


# Server side --------------------------------------------------------------------------------------------


class RingProbe:
    """Preallocated per-frame timings (so recording costs no allocation and does not grow memory)."""

    def __init__(self, slots: int = PROBE_SLOTS) -> None:
        self._in = np.zeros(slots, dtype=np.int64)
        self._out = np.zeros(slots, dtype=np.int64)
        # np.zeros maps its pages lazily: written here, not as frames arrive, or the probe's 8 bytes per frame
        # would be counted as the bridge's memory growth during the run.
        self._in.fill(0)
        self._out.fill(0)
        self.n_in = 0
        self.n_out = 0

    def inbound(self, nanoseconds: int) -> None:
        self._in[self.n_in % self._in.size] = nanoseconds
        self.n_in += 1

    def outbound(self, nanoseconds: int) -> None:
        self._out[self.n_out % self._out.size] = nanoseconds
        self.n_out += 1

    def reset(self) -> None:
        self.n_in = self.n_out = 0

    def stats(self) -> dict[str, Any]:
        def pct(values: Any, count: int) -> dict[str, float]:
            data = values[: min(count, values.size)]
            if data.size == 0:
                return {"count": 0}
            return {
                "count": int(count),
                "p50_ms": float(np.percentile(data, 50) / 1e6),
                "p99_ms": float(np.percentile(data, 99) / 1e6),
                "max_ms": float(data.max() / 1e6),
            }

        return {"inbound": pct(self._in, self.n_in), "outbound": pct(self._out, self.n_out)}


class LoopLag:
    """How late the server's event loop runs a timer due every 5 ms. A loop that keeps pace runs it within a
    fraction of a millisecond; a worker with more calls than it can serve shows the backlog here first (the
    probe above times only the work on each frame, not the time it waited to be read)."""

    PERIOD = 0.005

    def __init__(self) -> None:
        self._lags = np.zeros(PROBE_SLOTS // 10, dtype=np.int64)
        self._lags.fill(0)
        self.count = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due = 0.0

    def start(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._due = self._loop.time() + self.PERIOD
            self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        self._lags[self.count % self._lags.size] = int((now - self._due) * 1e6)
        self.count += 1
        self._due = now + self.PERIOD
        self._loop.call_at(self._due, self._tick)

    def reset(self) -> None:
        self.count = 0

    def stats(self) -> dict[str, float]:
        data = self._lags[: min(self.count, self._lags.size)] / 1000.0
        if data.size == 0:
            return {"count": 0}
        return {
            "count": int(data.size),
            "p50_ms": round(float(np.percentile(data, 50)), 3),
            "p99_ms": round(float(np.percentile(data, 99)), 3),
            "max_ms": round(float(data.max()), 3),
        }


def _session_update() -> str:
    from realtime_pipeline.session_config import build_session
    from realtime_pipeline.voicelive_events import session_update
    from router.agent_profile import AgentProfile

    return session_update(build_session(AgentProfile.load(Path("router/default_agent.yaml"))))


def baseline_app(voicelive_url: str, probe: RingProbe) -> Any:
    """The least a bridge can do with the same libraries: forward audio both ways, one mark per chunk."""
    import websockets
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    url = voicelive_url.replace("http://", "ws://") + "/voice-live/realtime?api-version=2025-10-01&model=m"
    update = _session_update()

    async def media(websocket: WebSocket) -> None:
        await websocket.accept()
        stream_sid = ""
        while not stream_sid:
            event = orjson.loads(await websocket.receive_text())
            if event.get("event") == "start":
                stream_sid = event["start"]["streamSid"]
        vl = await websockets.connect(url, compression=None, proxy=None)
        await vl.send(update)
        while orjson.loads(await vl.recv()).get("type") != "session.updated":
            pass
        media_prefix = '{"event":"media","streamSid":"' + stream_sid + '","media":{"payload":"'
        mark_prefix = '{"event":"mark","streamSid":"' + stream_sid + '","mark":{"name":"'
        count = 0

        async def up() -> None:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                t0 = time.perf_counter_ns()
                event = orjson.loads(message["text"])
                if event.get("event") == "media":
                    await vl.send(
                        '{"type":"input_audio_buffer.append","audio":"' + event["media"]["payload"] + '"}'
                    )
                    probe.inbound(time.perf_counter_ns() - t0)
                elif event.get("event") == "stop":
                    return

        async def down() -> None:
            nonlocal count
            async for frame in vl:
                t0 = time.perf_counter_ns()
                event = orjson.loads(frame)
                if event.get("type") == "response.audio.delta":
                    count += 1
                    await websocket.send_text(media_prefix + event["delta"] + '"}}')
                    await websocket.send_text(mark_prefix + str(count) + '"}}')
                    probe.outbound(time.perf_counter_ns() - t0)

        tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        await vl.close()
        with contextlib.suppress(Exception):
            await websocket.close()

    return Starlette(routes=[WebSocketRoute("/twilio/media", media)])


class _NoMove:
    async def move_to_legacy(self, call_sid: str, reason: str, *, greet: bool = False) -> bool:
        return True

    async def hang_up(self, call_sid: str, reason: str) -> bool:
        return True

    async def aclose(self) -> None:
        return None


def pipeline_app(voicelive_url: str, mode: str, probe: RingProbe, state_dir: str, max_calls: int) -> Any:
    from starlette.applications import Starlette

    from flags.breaker import BreakerConfig, CircuitBreaker
    from flags.clock import SystemClock
    from flags.memory_backend import InMemoryBreakerBackend
    from realtime_pipeline.pipeline import RealtimePipeline
    from router.agent_profile import AgentProfile
    from router.observability import Metrics
    from router.settings import Settings
    from router.store.factory import open_store
    from router.stream_token import StreamTokens
    from router.twilio_signature import TwilioSignatureValidator

    settings = Settings.model_validate(
        {
            "public_base_url": PUBLIC,
            "twilio_auth_token": AUTH_TOKEN,
            "azure_voicelive_endpoint": voicelive_url,
            "azure_voicelive_api_key": "bench",
            "realtime_audio_mode": mode,
            "realtime_max_frames_per_second": 1000.0,
            # 0 (the default here): no admission limit, to measure where the worker saturates. With a limit,
            # a stream over it is "moved" at once (_NoMove) and closed after a short grace, as Twilio would.
            "realtime_max_calls": max_calls,
            "realtime_move_grace_seconds": 0.5,
        }
    )
    store = open_store(f"sqlite:///{state_dir}/state.db")
    clock = SystemClock()
    profile = AgentProfile.load(settings.agent_profile).model_copy(update={"greeting": ""})
    pipeline = RealtimePipeline(
        settings=settings,
        profile=profile,
        store=store,
        breaker=CircuitBreaker(BreakerConfig(), InMemoryBreakerBackend(), clock=clock),
        metrics=Metrics(),
        signatures=TwilioSignatureValidator(AUTH_TOKEN, PUBLIC),
        tokens=StreamTokens(STREAM_SECRET, 600),
        clock=clock,
        call_mover=_NoMove(),
        probe=probe,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await store.open()
        yield
        await pipeline.aclose()
        await store.close()

    return Starlette(routes=pipeline.routes(), lifespan=lifespan)


def warm_audio_path(mode: str) -> None:
    """Run the mode's audio path once both ways before the idle memory reading: what it builds once per process
    (μ-law tables, the resampler's shared filter) is not per-call memory."""
    from realtime_pipeline.audio import audio_path, b64encode

    path = audio_path(mode)
    ulaw = b"\xff" * 160  # 20 ms of μ-law silence
    reply = bytes(960) if path.mode == "pcm16" else ulaw  # 20 ms of the Voice Live side's format
    path.inbound(b64encode(ulaw), ulaw)
    path.outbound(b64encode(reply))
    path.flush_outbound()


def serve(args: argparse.Namespace) -> None:
    import uvicorn
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    warm_audio_path(args.mode)
    probe = RingProbe()
    state_dir = tempfile.mkdtemp(prefix="bench-bridge-")
    if args.mode == "baseline":
        app = baseline_app(args.voicelive_url, probe)
    else:
        app = pipeline_app(args.voicelive_url, args.mode, probe, state_dir, args.max_calls)

    lag = LoopLag()

    async def stats(request: Any) -> JSONResponse:
        lag.start()  # (the first request comes at start-up: the monitor runs in uvicorn's loop from then on)
        if request.query_params.get("reset"):
            probe.reset()
            lag.reset()
        return JSONResponse({**probe.stats(), "loop_lag": lag.stats()})

    app.router.routes.append(Route("/_bench/stats", stats))
    if args.server_cpu is not None:
        os.sched_setaffinity(0, {args.server_cpu})  # one worker = one core, the harness stays off it
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        ws_max_size=1 << 20,
        loop=args.loop,
        http="httptools" if args.loop == "uvloop" else "h11",
        ws=args.ws,
    )


# Driver side --------------------------------------------------------------------------------------------
#
# The simulated Twilio side must cost far less than the server it measures, or at 200+ calls on a small box
# it measures itself. So each driver process owns a share of the calls and speaks WebSocket on raw asyncio
# transports: every client frame (masked with a zero key, which RFC 6455 allows) is encoded once before the
# run, one timer per process sends all frames due in its 2 ms slot, and incoming frames are scanned in place
# (mark echoes are written back as-is). A slot that fires more than LATE_SECONDS after it was due is a late
# tick; a run with late ticks measured the harness, not the bridge, and is reported as invalid.

SLOT_SECONDS = 0.002
SLOTS_PER_FRAME = 10  # 10 x 2 ms = one 20 ms frame period; call i sends in slot i % 10
LATE_SECONDS = 0.010  # half a frame period
DRAIN_SECONDS = 5.0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _memory_kb(pid: int) -> dict[str, int]:
    """Resident memory in KB: all of it (``VmRSS``) and its anonymous part (``RssAnon``: heap, Python objects,
    buffers; not the shared libraries' file-backed pages)."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon"):
            found[key] = int(value.split()[0])
    return found


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


def _wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _client_frame(text: str | bytes) -> bytes:
    """One masked text frame (zero masking key: the payload goes out as-is)."""
    payload = text.encode() if isinstance(text, str) else text
    size = len(payload)
    if size < 126:
        header = bytes((0x81, 0x80 | size))
    elif size < 65536:
        header = bytes((0x81, 0xFE)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x81, 0xFF)) + size.to_bytes(8, "big")
    return header + b"\0\0\0\0" + payload


_PONG_EMPTY = bytes((0x8A, 0x80)) + b"\0\0\0\0"
_MARK = b'{"event":"mark"'
_MEDIA = b'{"event":"media"'
_PAYLOAD = b'"payload":"'


class Latencies:
    """One driver process's end-to-end outbound latencies (Voice Live stub → bridge → here), in microseconds,
    recorded only inside the measured window and only when the bridge forwards audio untouched."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.recording = False
        self.values = array("q")


class RawTwilioCall(asyncio.Protocol):
    """One simulated call on a raw transport: pre-encoded frames out (stamped with their send time), marks
    echoed, media counted (and its stamp read)."""

    def __init__(
        self, index: int, port: int, speech: list[bytes], silence: bytes, latencies: Latencies
    ) -> None:
        from router.stream_token import StreamTokens
        from router.twilio_signature import sign

        self.call_sid = "CA" + secrets.token_hex(16)
        self.stream_sid = "MZ" + secrets.token_hex(16)
        signature = sign(AUTH_TOKEN, PUBLIC.replace("https://", "wss://") + "/twilio/media")
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        self.handshake = (
            f"GET /twilio/media HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"X-Twilio-Signature: {signature}\r\n\r\n"
        ).encode()
        token = StreamTokens(STREAM_SECRET, 600).issue(self.call_sid)
        start = {
            "event": "start",
            "sequenceNumber": "1",
            "start": {
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "accountSid": "AC" + "0" * 32,
                "tracks": ["inbound"],
                "customParameters": {"token": token},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
            "streamSid": self.stream_sid,
        }
        self.opening = _client_frame(
            orjson.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        ) + _client_frame(orjson.dumps(start))
        # Twilio's own media shape (sequence, chunk and timestamp before the payload, streamSid last).
        frames = [*speech, *([silence] * 200)]  # 1.6 s of speech, 4 s of silence (the reply plays)
        self.cycle = [split_at(self._media(n, audio), _PAYLOAD) for n, audio in enumerate(frames)]
        self.silence = split_at(self._media(0, silence), _PAYLOAD)
        self.latencies = latencies
        self.stop = _client_frame(
            orjson.dumps({"event": "stop", "streamSid": self.stream_sid, "stop": {"callSid": self.call_sid}})
        )
        self.position = index * 7 % len(self.cycle)  # calls do not all speak at once
        self.transport: asyncio.Transport | None = None
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.buffer = bytearray()
        self.speaking = True
        self.sent = 0
        self.media = 0
        self.audio_bytes = 0
        self.marks = 0
        self.closed = False

    def _media(self, n: int, audio: bytes) -> bytes:
        return _client_frame(
            f'{{"event":"media","sequenceNumber":"{n + 2}","media":{{"track":"inbound","chunk":"{n + 1}",'
            f'"timestamp":"{n * 20}","payload":"{base64.b64encode(audio).decode()}"}},'
            f'"streamSid":"{self.stream_sid}"}}'
        )

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCP transport
        transport.write(self.handshake)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError("closed before upgrade"))

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        if not self.upgraded.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if b" 101 " not in buf[: buf.find(b"\r\n")]:
                self.upgraded.set_exception(ConnectionError(bytes(buf[:200]).decode(errors="replace")))
                return
            del buf[: end + 4]
            self.upgraded.set_result(None)
        pos = 0
        transport = self.transport
        assert transport is not None
        while (frame := frame_at(buf, pos, masked=False)) is not None:
            opcode, start, end, _ = frame
            if opcode == 1:
                if buf.startswith(_MARK, start):
                    self.marks += 1
                    if not self.closed:
                        transport.write(_client_frame(bytes(buf[start:end])))
                elif buf.startswith(_MEDIA, start):
                    self.media += 1
                    first = buf.find(_PAYLOAD, start, end) + len(_PAYLOAD)
                    last = buf.find(b'"', first, end)
                    if self.latencies.recording:
                        age = age_us(buf[first : first + STAMP_CHARS])
                        if age >= 0:
                            self.latencies.values.append(age)
                    self.audio_bytes += (
                        (last - first) * 3 // 4 - (buf[last - 1] == 61) - (buf[last - 2] == 61)
                    )
            elif opcode == 9 and not self.closed:  # ping → pong with the same payload
                transport.write(bytes((0x8A, 0x80 | (end - start))) + b"\0\0\0\0" + bytes(buf[start:end]))
            elif opcode == 8:
                self.closed = True
            pos = end
        if pos:
            del buf[:pos]

    def send_next(self, stamp: bytes) -> None:
        if self.closed or self.transport is None:
            return
        if self.speaking:
            cycle = self.cycle
            head, tail = cycle[self.position % len(cycle)]
            self.position += 1
        else:
            head, tail = self.silence
        self.transport.write(head + stamp + tail)
        self.sent += 1


def _drive_process(
    port: int, first: int, count: int, conn: Any, harness_cpus: list[int] | None, stamped: bool
) -> None:
    """One driver process: ``count`` calls; talks to the parent over ``conn`` (a multiprocessing Pipe)."""
    if harness_cpus:
        os.sched_setaffinity(0, harness_cpus)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    conn.send(runner(_drive(port, first, count, conn, stamped)))


async def _drive(port: int, first: int, count: int, conn: Any, stamped: bool) -> dict[str, Any]:
    from emulators.speechlike import silence_ulaw, speechlike_ulaw

    loop = asyncio.get_running_loop()
    speech_audio = speechlike_ulaw(1600, seed=7)
    speech = [speech_audio[i : i + 160] for i in range(0, len(speech_audio), 160)]
    silence = silence_ulaw(20)
    calls: list[RawTwilioCall] = []
    latencies = Latencies(stamped)
    for n in range(first, first + count):
        call = RawTwilioCall(n, port, speech, silence, latencies)
        await loop.create_connection(lambda call=call: call, "127.0.0.1", port)  # type: ignore[misc]
        await call.upgraded
        assert call.transport is not None
        call.transport.write(call.opening)
        calls.append(call)
        if n % 25 == 24:
            await asyncio.sleep(0.05)  # let the server open Voice Live sessions as it goes
    conn.send("connected")
    plan: dict[str, float] = await loop.run_in_executor(None, conn.recv)
    offset = loop.time() - time.time()  # epoch → loop clock
    t0 = plan["start"] + offset
    speak_until = plan["speak_until"] + offset
    stop_at = speak_until + DRAIN_SECONDS
    window = (plan["window_start"] + offset, plan["window_end"] + offset)
    groups: list[list[RawTwilioCall]] = [[] for _ in range(SLOTS_PER_FRAME)]
    for n, call in enumerate(calls):
        groups[(first + n) % SLOTS_PER_FRAME].append(call)
    stats = {"ticks": 0, "late_ticks": 0, "max_late_ms": 0.0, "window_late_ticks": 0}
    snapshots: dict[str, tuple[int, int]] = {}
    done = loop.create_future()

    def totals() -> tuple[int, int]:
        return sum(c.sent for c in calls), sum(c.media for c in calls)  # audio frames, both ways

    def tick(k: int) -> None:
        due = t0 + k * SLOT_SECONDS
        late = loop.time() - due
        stats["ticks"] += 1
        if late > LATE_SECONDS:
            stats["late_ticks"] += 1
            if window[0] <= due <= window[1]:
                stats["window_late_ticks"] += 1
        if late * 1000 > stats["max_late_ms"]:
            stats["max_late_ms"] = late * 1000
        if "window_start" not in snapshots and due >= window[0]:
            snapshots["window_start"] = totals()
            latencies.recording = latencies.enabled
        if "window_end" not in snapshots and due >= window[1]:
            snapshots["window_end"] = totals()
            latencies.recording = False
        if due >= speak_until:
            if due >= stop_at:
                done.set_result(None)
                return
            for call in calls:
                call.speaking = False
        stamp = stamp_now()
        for call in groups[k % SLOTS_PER_FRAME]:
            call.send_next(stamp)
        loop.call_at(t0 + (k + 1) * SLOT_SECONDS, tick, k + 1)

    loop.call_at(t0, tick, 0)
    await done
    refused = [call for call in calls if call.closed]  # the server ended them: over its call limit
    for call in calls:
        if call.transport is not None and not call.closed:
            call.transport.write(call.stop)
    await asyncio.sleep(0.5)
    for call in calls:
        if call.transport is not None:
            call.transport.close()
    w0 = snapshots.get("window_start", (0, 0))
    w1 = snapshots.get("window_end", w0)
    return {
        **stats,
        "max_late_ms": round(stats["max_late_ms"], 2),
        "frames_sent_total": sum(c.sent for c in calls),
        "calls_refused": len(refused),
        "frames_sent_refused": sum(c.sent for c in refused),
        "media_received_total": sum(c.media for c in calls),
        "marks_received_total": sum(c.marks for c in calls),
        "audio_bytes_received_total": sum(c.audio_bytes for c in calls),
        "frames_in_window": (w1[0] - w0[0]) + (w1[1] - w0[1]),
        "outbound_latency_us": latencies.values.tobytes(),
        "cpu_seconds": round(time.process_time(), 3),
    }


class FarEnd:
    """The Voice Live side of a run: the product emulator (``--farend emulator``) or the cheap stub."""

    def __init__(self, kind: str, chunk_ms: int, harness_cpus: list[int] | None) -> None:
        import multiprocessing

        self.kind = kind
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        if kind == "emulator":
            self.process: Any = _emulator(port, chunk_ms, harness_cpus)
            _wait_http(f"{self.url}/_emulator/state")
        else:
            from bench.voicelive_stub import run_stub

            self._pipe, child = multiprocessing.get_context("fork").Pipe()
            self.process = multiprocessing.get_context("fork").Process(
                target=run_stub, args=(port, child, harness_cpus), daemon=True
            )
            self.process.start()
            deadline = time.monotonic() + 20
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    def totals(self) -> dict[str, int]:
        if self.kind == "emulator":
            sessions = _get(f"{self.url}/_emulator/state")["sessions"]
            return {
                "sessions": len(sessions),
                "appends": sum(s["append_count"] for s in sessions),
                "appended_ms": sum(s["appended_audio_ms"] for s in sessions),
                "audio_deltas": sum(s["server_events"].count("response.audio.delta") for s in sessions),
            }
        self._pipe.send("totals")
        totals = dict(self._pipe.recv())
        # base64: 3 bytes per 4 characters
        totals["appended_bytes"] = totals.pop("appended_b64_chars") * 3 // 4
        return totals

    def record_latency(self, on: bool) -> array[int]:
        """Stub only: start recording the end-to-end inbound latency of stamped appends (``on``), or stop and
        return what was recorded since, in microseconds."""
        recorded: array[int] = array("q")
        if self.kind != "emulator":
            self._pipe.send("record" if on else "stop_recording")
            recorded.frombytes(self._pipe.recv())
        return recorded

    def quiet(self, on: bool) -> None:
        """Stub only: finish replies in progress but start no new turn (the callers stop talking)."""
        if self.kind != "emulator":
            self._pipe.send("quiet" if on else "talk")

    def close(self) -> None:
        self.process.terminate()
        if self.kind == "emulator":
            self.process.wait(10)
        else:
            self.process.join(10)


def _pids_cpu(pids: list[int]) -> float:
    return sum(_cpu_seconds(pid) for pid in pids)


def run_one(
    mode: str,
    calls: int,
    seconds: float,
    farend: FarEnd,
    options: argparse.Namespace,
) -> dict[str, Any]:
    import multiprocessing

    port = _free_port()
    stamped = mode != "pcm16" and farend.kind == "stub"  # see bench.stamps
    command = [sys.executable, "-m", "bench.bridge", "--serve", "--mode", mode, "--port", str(port)]
    command += ["--voicelive-url", farend.url, "--loop", options.loop, "--ws", options.ws]
    if options.server_cpu is not None:
        command += ["--server-cpu", str(options.server_cpu)]
    command += ["--max-calls", str(options.max_calls)]
    server = subprocess.Popen(command)
    context = multiprocessing.get_context("fork")
    drivers: list[tuple[Any, Any]] = []
    try:
        _wait_http(f"http://127.0.0.1:{port}/_bench/stats")
        mem_idle = _memory_kb(server.pid)
        farend.quiet(False)
        before = farend.totals()
        processes = max(1, min(options.drivers, calls))
        share = [calls // processes + (1 if i < calls % processes else 0) for i in range(processes)]
        first = 0
        for count in share:
            parent_end, child_end = context.Pipe()
            process = context.Process(
                target=_drive_process,
                args=(port, first, count, child_end, options.harness_cpus, stamped),
            )
            process.start()
            drivers.append((process, parent_end))
            first += count
        for _, pipe in drivers:
            if not pipe.poll(120):
                raise RuntimeError("driver did not connect its calls in time")
            assert pipe.recv() == "connected"
        warmup = min(10.0, 3.0 + calls / 100)
        start = time.time() + 0.5
        plan = {
            "start": start,
            "window_start": start + warmup,
            "window_end": start + warmup + seconds,
            "speak_until": start + warmup + seconds,
        }
        for _, pipe in drivers:
            pipe.send(plan)
        time.sleep(max(0.0, plan["window_start"] - time.time()))
        _get(f"http://127.0.0.1:{port}/_bench/stats?reset=1")
        farend.record_latency(stamped)
        driver_pids = [p.pid for p, _ in drivers]
        cpu0 = (
            _cpu_seconds(server.pid),
            _cpu_seconds(farend.pid),
            _pids_cpu(driver_pids),
            time.monotonic(),
        )
        time.sleep(max(0.0, plan["window_end"] - time.time()))
        cpu1 = (
            _cpu_seconds(server.pid),
            _cpu_seconds(farend.pid),
            _pids_cpu(driver_pids),
            time.monotonic(),
        )
        mem_busy = _memory_kb(server.pid)
        inbound_us = farend.record_latency(False)
        farend.quiet(True)
        latency = _get(f"http://127.0.0.1:{port}/_bench/stats")
        loop_lag = latency.pop("loop_lag")
        reports = []
        for process, pipe in drivers:
            if not pipe.poll(60):
                raise RuntimeError("driver did not finish")
            reports.append(pipe.recv())
            process.join(10)
        time.sleep(1.5)
        after = farend.totals()
    finally:
        for process, _ in drivers:
            if process.is_alive():
                process.terminate()
        server.terminate()
        server.wait(10)
    wall = cpu1[3] - cpu0[3]
    cpu = cpu1[0] - cpu0[0]
    driver = {
        key: sum(r[key] for r in reports)
        for key in (
            "frames_sent_total",
            "calls_refused",
            "frames_sent_refused",
            "media_received_total",
            "marks_received_total",
            "audio_bytes_received_total",
            "frames_in_window",
            "ticks",
            "late_ticks",
            "window_late_ticks",
        )
    }
    driver["processes"] = len(reports)
    driver["late_ticks_per_process"] = [r["late_ticks"] for r in reports]
    driver["max_late_ms"] = max(r["max_late_ms"] for r in reports)
    outbound_us = array("q")
    for report in reports:
        outbound_us.frombytes(report.pop("outbound_latency_us"))
    frames = max(1, driver["frames_in_window"])
    # Calls the server closed before the callers hung up: refused over the call limit when there is one; with
    # no limit they are failures, so their frames stay in the loss count.
    refused = driver["calls_refused"] if options.max_calls else 0
    refused_frames = driver["frames_sent_refused"] if options.max_calls else 0
    served = max(1, calls - refused)
    appends = after["appends"] - before["appends"]
    if "appended_ms" in after:  # the emulator reports audio time
        appended_frames = (after["appended_ms"] - before["appended_ms"]) // 20
    else:  # the stub reports bytes: 160 per 20 ms of μ-law, 960 of PCM16 at 24 kHz
        frame_bytes = 960 if mode == "pcm16" else 160
        appended_frames = (after["appended_bytes"] - before["appended_bytes"]) // frame_bytes
    deltas = after["audio_deltas"] - before["audio_deltas"]
    harness_core = ((cpu1[1] - cpu0[1]) + (cpu1[2] - cpu0[2])) / wall
    emulator_core = (cpu1[1] - cpu0[1]) / wall
    # Late ticks during warm-up (sessions still opening) are harmless; inside the window they are not.
    behind = driver["window_late_ticks"] > 0 or emulator_core > 0.9
    result: dict[str, Any] = {
        "mode": mode,
        "calls": calls,
        "calls_served": calls - refused,  # the rest were over the bridge's call limit
        "calls_closed_by_server": driver["calls_refused"],
        "loop": options.loop,
        "ws": options.ws,
        "seconds": round(wall, 2),
        "latency": latency,
        "server_loop_lag": loop_lag,
        "end_to_end_ms": {"inbound": _percentiles(inbound_us), "outbound": _percentiles(outbound_us)}
        if stamped
        else None,
        "cpu": {
            "server_cpu_seconds": round(cpu, 3),
            "server_core_utilisation": round(cpu / wall, 3),
            "cpu_us_per_frame": round(cpu / frames * 1e6, 2),
            "cpu_ms_per_call_second": round(cpu / served / wall * 1000, 3),
            "emulator_core_utilisation": round(emulator_core, 3),
            "drivers_core_utilisation": round((cpu1[2] - cpu0[2]) / wall, 3),
            "harness_core_utilisation": round(harness_core, 3),
        },
        "memory": {
            "rss_idle_kb": mem_idle["VmRSS"],
            "rss_busy_kb": mem_busy["VmRSS"],
            "anon_idle_kb": mem_idle["RssAnon"],
            "anon_busy_kb": mem_busy["RssAnon"],
            "kb_per_call": round((mem_busy["RssAnon"] - mem_idle["RssAnon"]) / served, 1),
            "rss_kb_per_call": round((mem_busy["VmRSS"] - mem_idle["VmRSS"]) / served, 1),
        },
        "driver": driver,
        "voicelive": {
            "far_end": farend.kind,
            "sessions": after["sessions"] - before["sessions"],
            "appends": appends,
            "audio_deltas": deltas,
        },
        "valid": not behind,
    }
    result["keeps_pace"] = keeps_pace(result)
    if behind:
        result["frames_lost"] = "invalid: harness behind"
    else:
        # Inbound counts audio, not append messages: pcm16's soxr stream emits in blocks (an append per
        # three frames) and still holds some of the caller's last frames when the caller hangs up mid-block.
        held = pcm16_max_held_frames() * calls if mode == "pcm16" else 0
        result["frames_lost"] = {
            # (a refused call's frames were never meant for Voice Live)
            "inbound": max(0, driver["frames_sent_total"] - refused_frames - appended_frames - held),
            # g711_ulaw and the baseline send one media per delta; pcm16 resamples, so count bytes there.
            "outbound": max(0, deltas - driver["media_received_total"])
            if mode != "pcm16"
            else max(0, (deltas * 8 * options.chunk_ms - driver["audio_bytes_received_total"]))
            // (8 * options.chunk_ms),
        }
    return result


PACE_MS = 20.0  # one frame period


def keeps_pace(run: dict[str, Any]) -> bool:
    """Whether the worker kept up with its calls rather than fell ever further behind: its event loop's p99
    lag within one 20 ms frame period. A saturated worker can still lose no frame in a short run (its backlog
    drains after the callers stop), so frames lost alone does not tell. The end-to-end latency is reported but
    not judged here: it also holds the harness's own scheduling delays on its shared core."""
    lag = run["server_loop_lag"].get("p99_ms")
    return lag is not None and lag <= PACE_MS


def _percentiles(microseconds: array[int]) -> dict[str, float]:
    if not microseconds:
        return {"count": 0}
    values = np.frombuffer(microseconds, dtype=np.int64) / 1000.0
    return {
        "count": int(values.size),
        "p50": round(float(np.percentile(values, 50)), 3),
        "p99": round(float(np.percentile(values, 99)), 3),
        "max": round(float(values.max()), 3),
    }


def _free_port() -> int:
    from emulators.runner import free_port

    return free_port()


def pcm16_max_held_frames(frames: int = 500) -> int:
    """The most 20 ms caller frames the pcm16 inbound resampler holds back at any moment (measured, not
    assumed: soxr HQ holds up to about 73 ms, so a fixed allowance of 60 ms counted held audio as lost)."""
    from realtime_pipeline.audio import Pcm16Converter, b64encode

    converter = Pcm16Converter()
    frame = bytes(range(96, 256))  # 160 μ-law bytes, not silence
    payload = b64encode(frame)
    fed_ms = emitted_ms = most_held_ms = 0.0
    for _ in range(frames):
        fed_ms += 20.0
        emitted_ms += len(base64.b64decode(converter.inbound(payload, frame))) / 48.0  # 24 kHz, 2 bytes
        most_held_ms = max(most_held_ms, fed_ms - emitted_ms)
    return int(-(-most_held_ms // 20.0))


def conversion_ab(frames: int = 5000) -> dict[str, float]:
    """CPU of one 20 ms frame through each audio path, both directions (in-process, no sockets)."""
    from realtime_pipeline.audio import Pcm16Converter, UlawPassthrough, b64encode

    ulaw = b64encode(bytes(range(160)))
    raw = bytes(range(160))
    pcm24 = b64encode(np.zeros(480, dtype=np.int16).tobytes())
    out: dict[str, float] = {}
    for name, path in (("g711_ulaw", UlawPassthrough()), ("pcm16", Pcm16Converter())):
        t0 = time.perf_counter()
        for _ in range(frames):
            path.inbound(ulaw, raw)
            path.outbound(pcm24 if name == "pcm16" else ulaw)
        out[f"{name}_us_per_frame_pair"] = round((time.perf_counter() - t0) / frames * 1e6, 2)
    return out


def _emulator(port: int, chunk_ms: int, harness_cpus: list[int] | None) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "emulators.voicelive", "--port", str(port), "--no-auth", "--pace", "1"]
    command += [
        "--chunk-ms",
        str(chunk_ms),
        "--first-audio-ms",
        "150",
        "--ms-per-char",
        "30",
        "--reply",
        REPLY,
    ]
    if harness_cpus:
        command = ["taskset", "-c", ",".join(map(str, harness_cpus)), *command]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL)


# About 2.3 s of reply audio at 30 ms per character: it ends well inside the 4 s of caller silence, so no
# reply is cut by the next utterance (a barge-in drops audio on purpose, which would read as frames lost).
REPLY = "Sure, I can help with that. We have an opening on Tuesday at ten."


def _summary(run: dict[str, Any]) -> str:
    lat = run["latency"]
    lost = run["frames_lost"]
    lost_text = lost if isinstance(lost, str) else f"{lost['inbound']}/{lost['outbound']}"
    return (
        f"{run['mode']:>9} {run['loop']:>7} calls={run['calls']:4d} "
        + (f"(served {run['calls_served']}) " if run["calls_served"] != run["calls"] else "")
        + f"in p50/p99={lat['inbound'].get('p50_ms', 0):.3f}/{lat['inbound'].get('p99_ms', 0):.3f} ms "
        f"out p50/p99={lat['outbound'].get('p50_ms', 0):.3f}/{lat['outbound'].get('p99_ms', 0):.3f} ms "
        f"cpu/frame={run['cpu']['cpu_us_per_frame']} us cpu/call-s={run['cpu']['cpu_ms_per_call_second']} ms "
        f"core={run['cpu']['server_core_utilisation']} harness={run['cpu']['harness_core_utilisation']} "
        f"mem/call={run['memory']['kb_per_call']} KB (VmRSS {run['memory']['rss_kb_per_call']}) lost in/out={lost_text} "
        f"late ticks={run['driver']['late_ticks_per_process']} max late={run['driver']['max_late_ms']} ms "
        f"loop lag p99/max={run['server_loop_lag'].get('p99_ms')}/{run['server_loop_lag'].get('max_ms')} ms"
        f"{'' if run['keeps_pace'] else ' (behind)'}"
        + (
            f" end-to-end p99 in/out={e2e['inbound'].get('p99')}/{e2e['outbound'].get('p99')} ms"
            if (e2e := run["end_to_end_ms"])
            else ""
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bridge", description=__doc__)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--voicelive-url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="g711_ulaw", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="20 calls for 8 s (smoke run)")
    parser.add_argument("--calls", default="50,200,400", help="comma-separated concurrent call counts")
    parser.add_argument("--modes", default="baseline,g711_ulaw,pcm16", help="comma-separated bridges")
    parser.add_argument("--pcm16-max-calls", type=int, default=200, help="skip pcm16 above this")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--loop", default="uvloop", choices=["uvloop", "asyncio"], help="server event loop")
    parser.add_argument(
        "--ws", default="websockets-sansio", help="uvicorn WebSocket implementation (the service uses sansio)"
    )
    parser.add_argument("--drivers", type=int, default=4, help="driver processes sharing the calls")
    parser.add_argument(
        "--max-calls",
        type=int,
        default=0,
        help="the bridge's REALTIME_MAX_CALLS (0: no limit); calls over it are moved and not counted as lost",
    )
    parser.add_argument("--chunk-ms", type=int, default=20, help="emulator audio per response.audio.delta")
    parser.add_argument(
        "--server-cpu", type=int, default=0, help="pin the server to this CPU (-1: no pinning)"
    )
    parser.add_argument(
        "--farend",
        default="stub",
        choices=["stub", "emulator"],
        help="Voice Live side: the cheap scripted stub (default) or the product emulator",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.server_cpu is not None and args.server_cpu < 0:
        args.server_cpu = None
    if args.serve:
        serve(args)
        return
    cpus = sorted(os.sched_getaffinity(0))
    args.harness_cpus = [c for c in cpus if c != args.server_cpu] if args.server_cpu is not None else None
    counts = [20] if args.quick else [int(c) for c in args.calls.split(",")]
    seconds = 8.0 if args.quick else args.seconds
    modes = args.modes.split(",")
    results: dict[str, Any] = {
        "setup": {
            "cpus": len(cpus),
            "server_cpu": args.server_cpu,
            "harness_cpus": args.harness_cpus,
            "driver_processes": args.drivers,
            "far_end": args.farend,
            "emulator_chunk_ms": args.chunk_ms,
            "seconds": seconds,
            "loop": args.loop,
            "ws": args.ws,
            "max_calls": args.max_calls,
        },
        "conversion_ab": conversion_ab(),
        "runs": [],
    }
    print("conversion A/B (in-process):", results["conversion_ab"], flush=True)
    farend = FarEnd(args.farend, args.chunk_ms, args.harness_cpus)
    try:
        for calls in counts:
            for mode in modes:
                if mode == "pcm16" and calls > args.pcm16_max_calls:
                    continue
                run = run_one(mode, calls, seconds, farend, args)
                results["runs"].append(run)
                print(_summary(run), flush=True)
    finally:
        farend.close()
    ratios: dict[str, float] = {}
    for run in results["runs"]:
        base = next(
            (r for r in results["runs"] if r["mode"] == "baseline" and r["calls"] == run["calls"]), None
        )
        if base is not None and run["mode"] != "baseline":
            key = f"{run['mode']}@{run['calls']}"
            ratios[key] = round(
                run["cpu"]["cpu_us_per_frame"] / max(1e-9, base["cpu"]["cpu_us_per_frame"]), 2
            )
    results["cpu_ratio_vs_baseline"] = ratios
    # Calls per worker: the most calls a mode served in a valid run with no frame lost and keeping pace.
    results["max_calls_sustained"] = {
        mode: max(
            (
                r["calls_served"]
                for r in results["runs"]
                if r["mode"] == mode
                and r["valid"]
                and r["keeps_pace"]
                and r["frames_lost"] == {"inbound": 0, "outbound": 0}
            ),
            default=None,
        )
        for mode in modes
    }
    print("CPU per frame, ours / baseline:", ratios, flush=True)
    print("most calls sustained (valid, no frame lost, keeping pace):", results["max_calls_sustained"])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2))
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
