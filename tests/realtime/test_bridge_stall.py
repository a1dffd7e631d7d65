"""A Voice Live session that goes quiet while the caller waits on it (realtime_pipeline/stall.py), in process on
fakes: the socket stays open, so nothing but the stall watch notices."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from realtime_pipeline.bridge import BridgeConfig, CallBridge
from tests.realtime.bridge_fakes import (
    FakeBreaker,
    FakeClient,
    FakeConnection,
    FakeMover,
    FakeStore,
    FakeWS,
    audio_delta,
    make_bridge,
    until,
)

STALL = 0.3
SPEECH_STARTED = {"type": "input_audio_buffer.speech_started", "item_id": "u1", "audio_start_ms": 0}
SPEECH_STOPPED = {"type": "input_audio_buffer.speech_stopped", "item_id": "u1", "audio_end_ms": 900}
CREATED = {"type": "response.created", "response": {"id": "r1"}}
DONE = {"type": "response.done", "response": {"id": "r1", "status": "completed"}}


@dataclass
class Call:
    bridge: CallBridge
    ws: FakeWS
    client: FakeClient
    mover: FakeMover
    breaker: FakeBreaker
    store: FakeStore

    @property
    def vl(self) -> FakeConnection:
        return self.client.opened[0]

    def asked(self, index: int) -> list[dict[str, Any]]:
        return [e for e in self.client.opened[index].sent if e["type"] == "response.create"]


@contextlib.asynccontextmanager
async def calling(**config: Any) -> AsyncIterator[Call]:
    bridge, ws, client, mover, breaker, store = make_bridge(
        config=BridgeConfig(stall_seconds=STALL, **config)
    )
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    yield Call(bridge, ws, client, mover, breaker, store)
    ws.hang_up()
    await asyncio.wait_for(run, 3)


async def test_a_reply_that_stops_mid_way_is_asked_of_a_new_session() -> None:
    """The service began the reply, sent one delta and went quiet with the socket open: the caller would
    have sat in silence until they hung up."""
    async with calling() as call:
        call.vl.push(SPEECH_STARTED)
        call.vl.push(SPEECH_STOPPED)
        call.vl.push(CREATED)
        call.vl.push(audio_delta("a1", 100))
        await until(lambda: len(call.client.opened) == 2)
        assert call.vl.aborted, "the stuck session is dropped, not closed politely"
        await until(lambda: len(call.asked(1)) == 1)
        assert call.bridge.stats["reconnects"] == 1
        # First audio came in time (a success), then the session failed the call mid-reply.
        await until(lambda: ("failure", None) in call.breaker.recorded)
    [turn] = call.store.turns
    assert (turn["error_stage"], turn["error"]) == ("voicelive_stalled", "nothing from Voice Live for 0.3 s")
    lost = [e for e in call.store.events if e["type"] == "voicelive_lost"]
    assert [e["cause"] for e in lost] == ["stalled"]


async def test_a_greeting_never_begun_is_asked_of_a_new_session() -> None:
    """A response.create the service never answers (no response.created, no error) is a stall too."""
    async with calling(greeting="Hello, this is the clinic.") as call:
        await until(lambda: len(call.asked(0)) == 1)
        await until(lambda: len(call.client.opened) == 2, within=2)
        await until(lambda: len(call.asked(1)) == 1)
        assert call.asked(1) == call.asked(0), "the greeting, with its own words"


async def test_a_stalled_session_whose_replacement_fails_moves_the_call_to_legacy() -> None:
    async with calling() as call:
        call.client.fail_next = TimeoutError()
        call.vl.push(SPEECH_STARTED)
        call.vl.push(SPEECH_STOPPED)
        await until(lambda: bool(call.mover.moves), within=2)
        assert [reason for _, reason in call.mover.moves] == ["voicelive_stalled"]


async def test_a_session_that_keeps_talking_or_owes_nothing_is_not_a_stall() -> None:
    """A long reply whose deltas keep coming, the quiet between turns, and a refusal of a request (an answer)
    are no stall; only the lack of any event while one is owed is."""
    async with calling() as call:
        call.vl.push(SPEECH_STARTED)
        call.vl.push(SPEECH_STOPPED)
        call.vl.push(CREATED)
        for _ in range(8):  # 0.8 s of a reply, deltas 0.1 s apart: each one is news of the session
            call.vl.push(audio_delta("a1", 100))
            await asyncio.sleep(0.1)
        call.vl.push(DONE)
        await asyncio.sleep(2 * STALL)  # between turns: nothing is owed
        call.vl.push(SPEECH_STARTED)
        call.vl.push(SPEECH_STOPPED)
        call.vl.push({"type": "error", "error": {"type": "invalid_request_error", "message": "no"}})
        await asyncio.sleep(2 * STALL)
        assert len(call.client.opened) == 1
        assert not call.vl.aborted


async def test_no_stall_while_the_callers_reply_waits_on_a_running_tool() -> None:
    """While a tool runs the session owes nothing: the bridge asks for the reply once the answer is in."""
    from tests.realtime.test_bridge_tools import GatedTools, function_call_response

    tools = GatedTools()
    bridge, ws, client, *_ = make_bridge(config=BridgeConfig(stall_seconds=STALL), tools=tools)
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    vl = client.opened[0]
    vl.push(SPEECH_STARTED)
    vl.push(SPEECH_STOPPED)
    for event in function_call_response(("call_a", "check_availability", "{}")):
        vl.push(event)
    await until(lambda: len(tools.asked) == 1)
    await asyncio.sleep(3 * STALL)
    assert len(client.opened) == 1 and not vl.aborted
    tools.gate.set()
    await until(lambda: vl.types()[-1:] == ["response.create"])
    await asyncio.sleep(2 * STALL)  # asked, and never answered: now it is a stall
    assert len(client.opened) == 2 and vl.aborted
    ws.hang_up()
    await asyncio.wait_for(run, 3)


async def test_a_caller_who_goes_on_talking_after_a_turn_end_with_no_reply_is_no_stall() -> None:
    """Voice Live's end of turn may decide the caller had not finished and begin no reply (the bridge stops
    awaiting one after reply_wait_seconds): the caller goes on talking, and the session, which sends nothing
    while they do, was dropped as stalled in mid-sentence. Once they stop, a reply is owed again."""
    async with calling() as call:
        call.vl.push(SPEECH_STARTED)
        call.vl.push(SPEECH_STOPPED)  # no response.created follows
        await asyncio.sleep(STALL / 2)
        call.vl.push({**SPEECH_STARTED, "item_id": "u2"})  # they go on for a while
        await asyncio.sleep(3 * STALL)
        assert len(call.client.opened) == 1 and not call.vl.aborted
        call.vl.push({**SPEECH_STOPPED, "item_id": "u2"})  # and stop: now a reply is owed, and never begins
        await until(lambda: len(call.client.opened) == 2, within=2)
        assert call.vl.aborted
