"""Bridge benchmark: N concurrent simulated calls through one uvicorn worker, Voice Live emulated in another
process, both directions streaming at real pace.

    python -m bench.bridge [--quick] [--calls 50,200,400] [--seconds 20]

Three processes: this driver (the simulated Twilio side: 20 ms μ-law frames at real pace per call, marks
echoed at once), the server under test (``--serve``: ``RealtimePipeline`` in ``ulaw`` or ``pcm16`` mode, or a
minimal passthrough bridge written with the same libraries as the baseline), and ``python -m emulators.voicelive``
pacing its reply audio at real time. Reported per run: the bridge's added latency per frame (frame received →
forwarded, both directions, measured inside the server with ``perf_counter_ns``), frames lost end to end,
server CPU per frame and per call, server memory per call. Results go to ``bench/results/bridge.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson

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
    async def move_to_legacy(self, call_sid: str, reason: str) -> bool:
        return True

    async def aclose(self) -> None:
        return None


def pipeline_app(voicelive_url: str, mode: str, probe: RingProbe, state_dir: str) -> Any:
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


def serve(args: argparse.Namespace) -> None:
    import uvicorn
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    probe = RingProbe()
    state_dir = tempfile.mkdtemp(prefix="bench-bridge-")
    if args.mode == "baseline":
        app = baseline_app(args.voicelive_url, probe)
    else:
        app = pipeline_app(args.voicelive_url, args.mode, probe, state_dir)

    async def stats(request: Any) -> JSONResponse:
        if request.query_params.get("reset"):
            probe.reset()
        return JSONResponse(probe.stats())

    app.router.routes.append(Route("/_bench/stats", stats))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", ws_max_size=1 << 20)


# Driver side --------------------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
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


class SimCall:
    """One caller: speech and silence in 20 ms frames at real pace; every mark echoed immediately."""

    def __init__(self, index: int, url: str, speech: list[bytes], silence: bytes) -> None:
        from router.stream_token import StreamTokens
        from router.twilio_signature import sign

        self.call_sid = "CA" + secrets.token_hex(16)
        self.stream_sid = "MZ" + secrets.token_hex(16)
        self.url = url
        self.signature = sign(AUTH_TOKEN, PUBLIC.replace("https://", "wss://") + "/twilio/media")
        self.token = StreamTokens(STREAM_SECRET, 600).issue(self.call_sid)
        prefix = '{"event":"media","streamSid":"' + self.stream_sid + '","media":{"payload":"'
        self.speech = [prefix + base64.b64encode(f).decode() + '"}}' for f in speech]
        self.silence = prefix + base64.b64encode(silence).decode() + '"}}'
        self.offset = index % 50
        self.sent = 0
        self.received_media = 0
        self.received_bytes = 0
        self.late_ticks = 0

    async def run(self, until: float, ready: asyncio.Event) -> None:
        import websockets

        ws = await websockets.connect(
            self.url, additional_headers={"X-Twilio-Signature": self.signature}, compression=None, proxy=None
        )
        await ws.send(orjson.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}).decode())
        start = {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": self.stream_sid,
            "start": {
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "accountSid": "AC" + "0" * 32,
                "tracks": ["inbound"],
                "customParameters": {"token": self.token},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
        await ws.send(orjson.dumps(start).decode())

        async def reader() -> None:
            async for frame in ws:
                if isinstance(frame, str) and frame.startswith('{"event":"mark"'):
                    await ws.send(frame)
                elif isinstance(frame, str) and frame.startswith('{"event":"media"'):
                    self.received_media += 1
                    payload = frame[frame.index('"payload":"') + 11 : frame.rindex('"}}')]
                    self.received_bytes += len(payload) * 3 // 4 - payload.count("=")

        read_task = asyncio.create_task(reader())
        await ready.wait()
        loop = asyncio.get_running_loop()
        cycle = self.speech + [self.silence] * 200  # 1.6 s of speech, 4 s of silence (the reply plays)
        position = self.offset
        tick = loop.time() + self.offset * 0.0004
        while loop.time() < until:
            await ws.send(cycle[position % len(cycle)])
            self.sent += 1
            position += 1
            tick += 0.02
            delay = tick - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                self.late_ticks += 1
        # Let the reply in progress finish before hanging up, so "lost" means lost, not cut off.
        drain_until = loop.time() + 4.0
        while loop.time() < drain_until:
            await ws.send(self.silence)
            self.sent += 1
            await asyncio.sleep(0.02)
        await ws.send(orjson.dumps({"event": "stop", "streamSid": self.stream_sid, "stop": {}}).decode())
        await asyncio.sleep(0.5)
        read_task.cancel()
        with contextlib.suppress(Exception):
            await ws.close()


def run_one(mode: str, calls: int, seconds: float, voicelive_url: str, vl_state_url: str) -> dict[str, Any]:
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.bridge",
            "--serve",
            "--mode",
            mode,
            "--port",
            str(port),
            "--voicelive-url",
            voicelive_url,
        ],
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/_bench/stats")
        rss_idle = _rss_kb(server.pid)
        before_sessions = len(_get(vl_state_url)["sessions"])
        result = asyncio.run(_measure(port, server.pid, calls, seconds, rss_idle))
        state = _get(vl_state_url)
        sessions = state["sessions"][before_sessions:]
        appends = sum(s["append_count"] for s in sessions)
        deltas = sum(s["server_events"].count("response.audio.delta") for s in sessions)
        result["voicelive"] = {"sessions": len(sessions), "appends": appends, "audio_deltas": deltas}
        result["frames_lost"] = {
            "inbound": max(0, result["driver"]["frames_sent_total"] - appends),
            # 20 ms deltas of 160 μ-law bytes (pcm16 output is resampled back to the same 8 kHz μ-law).
            "outbound": max(0, (deltas * 160 - result["driver"]["audio_bytes_received_total"]) // 160),
        }
        return result
    finally:
        server.terminate()
        server.wait(10)


async def _measure(port: int, pid: int, calls: int, seconds: float, rss_idle: int) -> dict[str, Any]:
    from emulators.speechlike import silence_ulaw, speechlike_ulaw

    url = f"ws://127.0.0.1:{port}/twilio/media"
    speech_audio = speechlike_ulaw(1600, seed=7)
    speech = [speech_audio[i : i + 160] for i in range(0, len(speech_audio), 160)]
    sims = [SimCall(i, url, speech, silence_ulaw(20)) for i in range(calls)]
    ready = asyncio.Event()
    loop = asyncio.get_running_loop()
    warmup = min(10.0, 2.0 + calls / 100)
    until = loop.time() + warmup + seconds
    tasks = [asyncio.create_task(sim.run(until, ready)) for sim in sims]
    ready.set()
    await asyncio.sleep(warmup)
    _get(f"http://127.0.0.1:{port}/_bench/stats?reset=1")
    window_sent = sum(s.sent for s in sims)
    window_received = sum(s.received_media for s in sims)
    cpu0, wall0 = _cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    cpu1, wall1 = _cpu_seconds(pid), time.monotonic()
    rss_busy = _rss_kb(pid)
    stats = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/_bench/stats")
    frames_window = (sum(s.sent for s in sims) - window_sent) + (
        sum(s.received_media for s in sims) - window_received
    )
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(1.5)
    cpu = cpu1 - cpu0
    return {
        "calls": calls,
        "seconds": round(wall1 - wall0, 2),
        "latency": stats,
        "cpu": {
            "server_cpu_seconds": round(cpu, 3),
            "server_core_utilisation": round(cpu / (wall1 - wall0), 3),
            "cpu_us_per_frame": round(cpu / max(1, frames_window) * 1e6, 2),
            "cpu_ms_per_call_second": round(cpu / calls / (wall1 - wall0) * 1000, 3),
        },
        "memory": {
            "rss_idle_kb": rss_idle,
            "rss_busy_kb": rss_busy,
            "kb_per_call": round((rss_busy - rss_idle) / calls, 1),
        },
        "driver": {
            "frames_sent_total": sum(s.sent for s in sims),
            "media_received_total": sum(s.received_media for s in sims),
            "audio_bytes_received_total": sum(s.received_bytes for s in sims),
            "frames_in_window": frames_window,
            "late_ticks": sum(s.late_ticks for s in sims),
        },
    }


def _free_port() -> int:
    from emulators.runner import free_port

    return free_port()


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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bridge", description=__doc__)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="g711_ulaw", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--voicelive-url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="20 calls for 8 s (smoke run)")
    parser.add_argument("--calls", default="50,200,400", help="comma-separated concurrent call counts")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return

    counts = [20] if args.quick else [int(c) for c in args.calls.split(",")]
    seconds = 8.0 if args.quick else args.seconds
    vl_port = _free_port()
    emulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emulators.voicelive",
            "--port",
            str(vl_port),
            "--no-auth",
            "--pace",
            "1",
            "--chunk-ms",
            "20",
            "--first-audio-ms",
            "150",
            "--ms-per-char",
            "40",
        ],
        stdout=subprocess.DEVNULL,
    )
    voicelive_url = f"http://127.0.0.1:{vl_port}"
    state_url = f"{voicelive_url}/_emulator/state"
    results: dict[str, Any] = {"conversion_ab": conversion_ab(), "runs": []}
    print("conversion A/B (in-process):", results["conversion_ab"], flush=True)
    try:
        _wait_http(state_url)
        plan = [("baseline", counts[0]), ("pcm16", counts[0])] + [("g711_ulaw", n) for n in counts]
        for mode, calls in plan:
            run = run_one(mode, calls, seconds, voicelive_url, state_url)
            run["mode"] = mode
            results["runs"].append(run)
            lat = run["latency"]
            print(
                f"{mode:>9} calls={calls:4d} in p50/p99={lat['inbound'].get('p50_ms', 0):.3f}/"
                f"{lat['inbound'].get('p99_ms', 0):.3f} ms out p50/p99={lat['outbound'].get('p50_ms', 0):.3f}/"
                f"{lat['outbound'].get('p99_ms', 0):.3f} ms cpu/frame={run['cpu']['cpu_us_per_frame']} us "
                f"core={run['cpu']['server_core_utilisation']} mem/call={run['memory']['kb_per_call']} KB "
                f"lost in/out={run['frames_lost']['inbound']}/{run['frames_lost']['outbound']} "
                f"late driver ticks={run['driver']['late_ticks']}",
                flush=True,
            )
    finally:
        emulator.terminate()
        emulator.wait(10)
    base = next(r for r in results["runs"] if r["mode"] == "baseline")
    same = next(r for r in results["runs"] if r["mode"] == "g711_ulaw" and r["calls"] == base["calls"])
    pcm = next(r for r in results["runs"] if r["mode"] == "pcm16")
    results["cpu_ratio_vs_baseline"] = round(
        same["cpu"]["cpu_us_per_frame"] / max(1e-9, base["cpu"]["cpu_us_per_frame"]), 2
    )
    results["cpu_ratio_pcm16_vs_ulaw"] = round(
        pcm["cpu"]["cpu_us_per_frame"] / max(1e-9, same["cpu"]["cpu_us_per_frame"]), 2
    )
    print("CPU per frame, ours / baseline:", results["cpu_ratio_vs_baseline"], flush=True)
    print("CPU per frame, pcm16 / ulaw:", results["cpu_ratio_pcm16_vs_ulaw"], flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
