"""The bridge's own CPU per event, in-process and repeatable: ``CallBridge`` driven by in-memory fakes of the
Twilio socket and the Voice Live connection (no sockets, no uvicorn, no websockets library), against the
least a bridge can do on the same fakes (parse, forward; the benchmark baseline's loops).

    python -m bench.bridge_hotpath [--events 100000] [--rounds 5]

``bench.bridge`` measures the whole worker, where our code is a sixth to a quarter of the CPU and the box's
drift is ±10 %; this isolates the part that is ours, so a change to the hot path can be measured before and
after. Three phases, each timed with ``time.process_time``: caller frames in (Twilio ``media`` → ``append``),
agent audio out (``response.audio.delta`` → Twilio ``media`` + ``mark``), and the mark echoes coming back.
Reported: microseconds per event, ours and minimal, best of ``--rounds`` (the two alternating).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from realtime_pipeline.voicelive_client import VoiceLiveClosed

RESULTS = Path(__file__).with_name("results") / "bridge_hotpath.json"
STREAM_SID = "MZ" + "a" * 32
CALL_SID = "CA" + "b" * 32
AUDIO = base64.b64encode(bytes(range(160))).decode()  # 20 ms of μ-law
MEDIA = orjson.dumps(
    {
        "event": "media",
        "sequenceNumber": "3",
        "media": {"track": "inbound", "chunk": "2", "timestamp": "40", "payload": AUDIO},
        "streamSid": STREAM_SID,
    }
).decode()
DELTA = orjson.dumps(
    {
        "type": "response.audio.delta",
        "response_id": "resp_1",
        "item_id": "item_1",
        "output_index": 0,
        "content_index": 0,
        "delta": AUDIO,
    }
).decode()


class Phases:
    """CPU time at each phase boundary."""

    def __init__(self) -> None:
        self.marks: list[float] = [time.process_time()]

    def next(self) -> None:
        self.marks.append(time.process_time())


class Gates:
    """Phase 1 (caller frames) ends with ``caller_done``; phase 2 (agent audio) with ``audio_done``."""

    def __init__(self) -> None:
        self.caller_done = asyncio.Event()
        self.audio_done = asyncio.Event()


class FakeTwilio:
    """The Starlette ``WebSocket`` surface the bridge uses. Phase 1 yields ``frames`` caller frames; then it waits
    for the agent audio phase and echoes every mark it was sent (phase 3); then the caller hangs up."""

    def __init__(self, frames: int, phases: Phases, gates: Gates) -> None:
        self._script = self._messages(frames)
        self._phases = phases
        self._gates = gates
        self.marks: list[str] = []
        self.media = 0

    def _messages(self, frames: int) -> Iterator[dict[str, Any] | None]:
        message = {"type": "websocket.receive", "text": MEDIA}
        for _ in range(frames):
            yield message
        yield None  # wait for phase 2
        for mark in self.marks:  # Twilio echoes a mark as it was sent (plus a sequence number)
            yield {"type": "websocket.receive", "text": mark}
        yield {"type": "websocket.disconnect", "code": 1000}

    async def receive(self) -> dict[str, Any]:
        message = next(self._script)
        if message is None:
            self._phases.next()  # end of phase 1
            self._gates.caller_done.set()
            await self._gates.audio_done.wait()
            self._phases.next()  # end of phase 2
            message = next(self._script)
        assert message is not None
        return message

    async def send_text(self, text: str) -> None:
        if text.startswith('{"event":"mark"'):
            self.marks.append(text)
        else:
            self.media += 1

    async def close(self, code: int = 1000, reason: str = "") -> None:
        return None


class FakeVoiceLive:
    """A ``VoiceLiveConnection``: appends are counted; ``recv`` yields ``deltas`` audio deltas once the caller's
    frames are done, then blocks until the call ends."""

    def __init__(self, deltas: int, gates: Gates) -> None:
        self._deltas = deltas
        self._gates = gates
        self._closed = asyncio.Event()
        self.appends = 0

    async def send(self, message: str) -> None:
        self.appends += 1

    async def recv(self) -> str | bytes:
        await self._gates.caller_done.wait()  # returns at once after phase 1
        if self._deltas == 0:
            self._gates.audio_done.set()
            await self._closed.wait()
            raise VoiceLiveClosed(1000, "")
        self._deltas -= 1
        return DELTA

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self._closed.set()

    def abort(self) -> None:
        self._closed.set()


async def run_ours(events: int) -> list[float]:
    from flags.breaker import BreakerConfig, CircuitBreaker
    from flags.clock import SystemClock
    from flags.memory_backend import InMemoryBreakerBackend
    from realtime_pipeline.audio import audio_path
    from realtime_pipeline.bridge import BridgeConfig, CallBridge
    from realtime_pipeline.call_log import CallLog
    from realtime_pipeline.guards import RateLimitedLog
    from realtime_pipeline.outcome import OutcomeReporter
    from realtime_pipeline.twilio_media import Start
    from realtime_pipeline.voicelive_client import ReadySession
    from router.observability import Metrics

    phases = Phases()
    gates = Gates()
    twilio = FakeTwilio(events, phases, gates)
    voicelive = FakeVoiceLive(events, gates)

    class Client:
        async def open_session(self, session: dict[str, Any], **_: Any) -> ReadySession:
            return ReadySession(voicelive, 1.0, 1.0, session)

    class Store:
        async def append_call_event(self, call_sid: str, event: dict[str, Any]) -> None: ...
        async def merge_call(self, call_sid: str, fields: dict[str, Any]) -> None: ...
        async def append_turn(self, turn: dict[str, Any]) -> None: ...

    class Mover:
        async def move_to_legacy(self, call_sid: str, reason: str, *, greet: bool = False) -> bool:
            return True

        async def hang_up(self, call_sid: str, reason: str) -> bool:
            return True

        async def aclose(self) -> None: ...

    clock = SystemClock()
    metrics = Metrics()
    call_log = CallLog(Store(), metrics, CALL_SID)  # type: ignore[arg-type]
    start = Start(STREAM_SID, CALL_SID, "AC", {}, "audio/x-mulaw", 8000)
    bridge = CallBridge(
        websocket=twilio,  # type: ignore[arg-type]
        start=start,
        client=Client(),  # type: ignore[arg-type]
        session={},
        audio=audio_path("g711_ulaw"),
        mover=Mover(),
        outcome=OutcomeReporter(
            CircuitBreaker(BreakerConfig(), InMemoryBreakerBackend(), clock=clock),
            metrics,
            call_log,
            trial=None,
        ),
        call_log=call_log,
        metrics=metrics,
        clock=clock,
        config=BridgeConfig(max_frames_per_second=1e9, frame_burst=1e9),
        ratelog=RateLimitedLog(logging.getLogger("bench.bridge_hotpath"), clock.monotonic),
    )
    phases.marks[0] = time.process_time()
    await bridge.run()
    phases.next()
    assert voicelive.appends == events and twilio.media == events, (voicelive.appends, twilio.media)
    assert len(twilio.marks) == events
    assert bridge.stats["frames_in"] == events and bridge.stats["frames_out"] == events
    return phases.marks


async def run_minimal(events: int) -> list[float]:
    """The benchmark baseline's loops on the same fakes."""
    phases = Phases()
    gates = Gates()
    twilio = FakeTwilio(events, phases, gates)
    voicelive = FakeVoiceLive(events, gates)
    media_prefix = '{"event":"media","streamSid":"' + STREAM_SID + '","media":{"payload":"'
    mark_prefix = '{"event":"mark","streamSid":"' + STREAM_SID + '","mark":{"name":"'

    async def up() -> None:
        while True:
            message = await twilio.receive()
            if message["type"] == "websocket.disconnect":
                return
            event = orjson.loads(message["text"])
            if event.get("event") == "media":
                await voicelive.send(
                    '{"type":"input_audio_buffer.append","audio":"' + event["media"]["payload"] + '"}'
                )

    async def down() -> None:
        count = 0
        while True:
            try:
                frame = await voicelive.recv()
            except VoiceLiveClosed:
                return
            event = orjson.loads(frame)
            if event.get("type") == "response.audio.delta":
                count += 1
                await twilio.send_text(media_prefix + event["delta"] + '"}}')
                await twilio.send_text(mark_prefix + str(count) + '"}}')

    phases.marks[0] = time.process_time()
    tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
    await tasks[0]
    await voicelive.close()
    await tasks[1]
    phases.next()
    return phases.marks


def per_event(marks: list[float], events: int) -> dict[str, float]:
    inbound, outbound, echoes = (b - a for a, b in itertools.pairwise(marks))
    return {
        "inbound_us": round(inbound / events * 1e6, 3),
        "outbound_us": round(outbound / events * 1e6, 3),
        "mark_echo_us": round(echoes / events * 1e6, 3),
    }


def best_of_alternating(
    runners: dict[str, Callable[[int], Any]], events: int, rounds: int
) -> dict[str, dict[str, float]]:
    """Best of ``rounds`` per runner, the runners alternating within each round (the box's speed drifts over
    seconds, so timing all of one and then all of the other would compare two different machines)."""
    results: dict[str, list[dict[str, float]]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            results[name].append(per_event(asyncio.run(runner(events)), events))
    return {name: {key: min(r[key] for r in runs) for key in runs[0]} for name, runs in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bridge_hotpath", description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    timings = best_of_alternating({"ours": run_ours, "minimal": run_minimal}, args.events, args.rounds)
    ours, minimal = timings["ours"], timings["minimal"]
    result = {
        "events": args.events,
        "rounds": args.rounds,
        "ours": ours,
        "minimal": minimal,
        "ours_extra_us": {key: round(ours[key] - minimal[key], 3) for key in ours},
    }
    print(json.dumps(result, indent=2))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
