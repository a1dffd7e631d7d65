"""Tool calls in the realtime bridge, in process (tests.realtime.bridge_fakes): the order of what reaches
Voice Live, and the interleavings (the caller speaks, the session is lost, a renewal falls due while a tool
runs) that real sockets make too rare to reach end to end."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from realtime_pipeline.bridge import BridgeConfig, CallBridge
from realtime_pipeline.session_config import repeat_request_instructions
from router.tool_calls import ToolCall, ToolResult
from tests.realtime.bridge_fakes import (
    STREAM_SID,
    FakeBreaker,
    FakeClient,
    FakeConnection,
    FakeStore,
    FakeWS,
    audio_delta,
    make_bridge,
    until,
)

SPEECH_STARTED = {"type": "input_audio_buffer.speech_started", "item_id": "u1", "audio_start_ms": 0}
SPEECH_STOPPED = {"type": "input_audio_buffer.speech_stopped", "item_id": "u1", "audio_end_ms": 900}
USER_TRANSCRIPT = {
    "type": "conversation.item.input_audio_transcription.completed",
    "item_id": "u1",
    "content_index": 0,
    "transcript": "Book me Tuesday, please.",
}


def function_call_response(*calls: tuple[str, str, str], status: str = "completed") -> list[dict[str, Any]]:
    """response.created … response.done of a response that asks for ``(call_id, name, arguments)`` calls."""
    items = [
        {
            "id": f"item_{call_id}",
            "object": "realtime.item",
            "type": "function_call",
            "status": "completed",
            "name": name,
            "call_id": call_id,
            "arguments": arguments,
        }
        for call_id, name, arguments in calls
    ]
    return [
        {"type": "response.created", "response": {"id": "r_fc", "status": "in_progress", "output": []}},
        *(
            {
                "type": "response.function_call_arguments.done",
                "response_id": "r_fc",
                "item_id": item["id"],
                "output_index": index,
                "call_id": item["call_id"],
                "arguments": item["arguments"],
            }
            for index, item in enumerate(items)
        ),
        {
            "type": "response.done",
            "response": {
                "id": "r_fc",
                "status": status,
                "output": items,
                "usage": {"total_tokens": 30, "output_tokens": 10},
            },
        },
    ]


class GatedTools:
    """A ToolRunner stand-in whose calls finish when the test opens the gate."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.asked: list[ToolCall] = []
        self.turns: list[int | None] = []  # the turn each round belongs to

    async def run_all(
        self, calls: Sequence[ToolCall], *, call_sid: str, pipeline: str, turn: int | None = None
    ) -> list[ToolResult]:
        self.asked.extend(calls)
        self.turns.append(turn)
        await self.gate.wait()
        return [ToolResult(c.call_id, c.name, f'{{"answer": "{c.name}"}}', True, 12.5) for c in calls]


def created(response_id: str) -> dict[str, Any]:
    return {"type": "response.created", "response": {"id": response_id}}


def done(response_id: str) -> dict[str, Any]:
    return {"type": "response.done", "response": {"id": response_id, "status": "completed"}}


def function_outputs(connection: FakeConnection) -> list[dict[str, Any]]:
    return [
        e["item"]
        for e in connection.sent
        if e["type"] == "conversation.item.create" and e["item"]["type"] == "function_call_output"
    ]


@dataclass
class Running:
    """A bridge running on fakes; ``vl`` is its first Voice Live session."""

    bridge: CallBridge
    ws: FakeWS
    client: FakeClient
    breaker: FakeBreaker
    store: FakeStore
    vl: FakeConnection


@contextlib.asynccontextmanager
async def running(tools: Any = None, **options: Any) -> AsyncIterator[Running]:
    """The bridge from session open to the caller's hang-up (which ends it, within 3 s). A gated tool still
    waiting when the call moves is waited for 0.2 s (tool_handover_seconds) unless ``config`` says otherwise."""
    options.setdefault("config", BridgeConfig(tool_handover_seconds=0.2))
    bridge, ws, client, _, breaker, store = make_bridge(tools=tools, **options)
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    yield Running(bridge, ws, client, breaker, store, client.opened[0])
    ws.hang_up()
    await asyncio.wait_for(run, 3)


async def _turn_asking_for(vl: FakeConnection, *calls: tuple[str, str, str]) -> None:
    vl.push(SPEECH_STARTED)
    vl.push(SPEECH_STOPPED)
    for event in function_call_response(*calls):
        vl.push(event)


async def test_tool_answers_go_back_to_voice_live_and_the_reply_is_asked_for() -> None:
    tools = GatedTools()
    async with running(tools=tools) as call:
        vl = call.vl
        await _turn_asking_for(
            vl, ("call_a", "check_availability", '{"day":"Tuesday"}'), ("call_b", "b", "{}")
        )
        await until(lambda: len(tools.asked) == 2)
        assert tools.turns == [1]  # the caller's first utterance (no greeting)
        # Voice Live answered (with calls) within the slow-call threshold: the service is healthy, whatever the
        # tools take.
        await until(lambda: call.breaker.recorded == [("success", None)])
        assert function_outputs(vl) == []
        tools.gate.set()
        await until(lambda: vl.types()[-1:] == ["response.create"])
        assert function_outputs(vl) == [
            {
                "type": "function_call_output",
                "call_id": "call_a",
                "output": '{"answer": "check_availability"}',
            },
            {"type": "function_call_output", "call_id": "call_b", "output": '{"answer": "b"}'},
        ]
        # The reply after the tools is the turn's reply: its first audio ends the turn's response time.
        vl.push(created("r2"))
        vl.push(audio_delta("a2", 100, "r2"))
        await until(lambda: len(call.ws.events("media")) == 1)
    [turn] = call.store.turns
    assert [c["name"] for c in turn["tool_calls"]] == ["check_availability", "b"]
    assert turn["tool_calls"][0] == {"name": "check_availability", "ms": 12.5, "ok": True}
    assert turn["stages"]["tool"] > 0
    assert turn["response_ms"] >= turn["stages"]["tool"]
    assert call.bridge.stats["tool_calls"] == 2


async def test_answers_arriving_while_the_caller_talks_are_added_without_asking_for_a_reply() -> None:
    """A response.create then would either fail (a response is already under way) or answer the old
    question over the new one; the reply to the caller's new words sees the answers anyway."""
    tools = GatedTools()
    async with running(tools=tools) as call:
        vl = call.vl
        await _turn_asking_for(vl, ("call_a", "check_availability", "{}"))
        await until(lambda: len(tools.asked) == 1)
        vl.push({**SPEECH_STARTED, "item_id": "u2"})
        await asyncio.sleep(0.05)
        tools.gate.set()
        await until(lambda: len(function_outputs(vl)) == 1)
        await asyncio.sleep(0.05)
        assert "response.create" not in vl.types()


def function_call_items(connection: FakeConnection) -> list[dict[str, Any]]:
    return [
        e["item"]
        for e in connection.sent
        if e["type"] == "conversation.item.create" and e["item"]["type"] == "function_call"
    ]


async def test_answers_for_a_session_lost_meanwhile_go_to_the_new_one_with_their_calls() -> None:
    """The new session is not asked for the reply while the tool still runs: asked then, it would answer the
    question afresh and could call a tool that acts (a booking) twice. Once the answer is in, it is given the
    call (which it never saw) and the answer, then asked for the reply."""
    tools = GatedTools()
    async with running(tools=tools) as call:
        first = call.vl
        await _turn_asking_for(first, ("call_a", "check_availability", '{"day":"Tuesday"}'))
        await until(lambda: len(tools.asked) == 1)
        first.lose()
        await until(lambda: len(call.client.opened) == 2)
        second = call.client.opened[1]
        await until(lambda: call.bridge.stats["reconnects"] == 1)
        await asyncio.sleep(0.05)
        assert "response.create" not in second.types()
        tools.gate.set()
        await until(lambda: second.types()[-1:] == ["response.create"])
        assert function_outputs(first) == []
        assert function_call_items(second) == [
            {
                "type": "function_call",
                "name": "check_availability",
                "call_id": "call_a",
                "arguments": '{"day":"Tuesday"}',
            }
        ]
        assert function_outputs(second) == [
            {
                "type": "function_call_output",
                "call_id": "call_a",
                "output": '{"answer": "check_availability"}',
            }
        ]
        created_items = [e for e in second.sent if e["type"] == "conversation.item.create"]
        assert created_items[-2:] == [
            {"type": "conversation.item.create", "item": item}
            for item in (*function_call_items(second), *function_outputs(second))
        ], "the call and its answer come last, just before the reply is asked for"
        assert second.types().count("response.create") == 1
        assert len(tools.asked) == 1, "the tool ran once"


async def test_a_renewal_waits_for_running_tools() -> None:
    """Swapping the session while a tool runs would lose its answer (the new session cannot take it)."""
    tools = GatedTools()
    async with running(tools=tools, config=BridgeConfig(session_max_age_seconds=0.2)) as call:
        vl = call.vl
        await _turn_asking_for(vl, ("call_a", "check_availability", "{}"))
        await until(lambda: len(tools.asked) == 1)
        await asyncio.sleep(0.4)  # the renewal fell due twice meanwhile
        assert len(call.client.opened) == 1
        tools.gate.set()
        await until(lambda: len(function_outputs(vl)) == 1)
        vl.push(created("r2"))
        vl.push(done("r2"))
        await until(lambda: len(call.client.opened) == 2)  # renewed once the reply was done


async def test_without_tools_a_call_is_answered_with_an_error_the_model_can_speak_about() -> None:
    async with running() as call:
        vl = call.vl
        await _turn_asking_for(vl, ("call_x", "invented_tool", "{}"))
        await until(lambda: vl.types()[-1:] == ["response.create"])
        [output] = function_outputs(vl)
        assert output["call_id"] == "call_x"
        assert "invented_tool" in orjson.loads(output["output"])["error"]
    assert call.bridge.stats["tool_calls"] == 1


async def test_a_cancelled_response_runs_none_of_its_calls() -> None:
    """The caller cut the response off: its calls were never confirmed, and the caller has moved on."""
    tools = GatedTools()
    tools.gate.set()
    async with running(tools=tools) as call:
        vl = call.vl
        vl.push(SPEECH_STARTED)
        vl.push(SPEECH_STOPPED)
        for event in function_call_response(("call_a", "check_availability", "{}"), status="cancelled"):
            vl.push(event)
        vl.push(created("r3"))  # the next event was handled too
        await until(lambda: call.bridge._response_active)
        assert tools.asked == []


async def test_malformed_function_call_items_are_skipped_and_the_response_still_ends() -> None:
    tools = GatedTools()
    tools.gate.set()
    async with running(tools=tools) as call:
        vl = call.vl
        vl.push(created("r1"))
        vl.push(
            {
                "type": "response.done",
                "response": {
                    "id": "r1",
                    "status": "completed",
                    "output": [
                        {"type": "function_call", "name": "no_call_id", "arguments": "{}"},
                        {
                            "type": "function_call",
                            "call_id": "call_ok",
                            "name": "ok",
                            "arguments": {"day": "Mon"},
                        },
                    ],
                },
            }
        )
        await until(lambda: len(function_outputs(vl)) == 1)
        assert not call.bridge._response_active
        assert [(c.call_id, c.arguments) for c in tools.asked] == [("call_ok", '{"day":"Mon"}')]


async def test_the_greeting_calls_no_tool_and_a_required_choice_is_relaxed_after_the_answers() -> None:
    """With tool_choice "required" every response must call a tool: the reply after the tools' answers would
    call one again, and again. The greeting is never a tool call either."""
    tools = GatedTools()
    tools.gate.set()
    session = {
        "input_audio_format": "g711_ulaw",
        "tools": [{"type": "function", "name": "check_availability", "parameters": {"type": "object"}}],
        "tool_choice": "required",
    }
    options = {"session": session, "config": BridgeConfig(greeting="Hello, Contoso Dental.")}
    async with running(tools, **options) as call:
        vl = call.vl
        await until(lambda: "response.create" in vl.types())
        [greeting] = [e for e in vl.sent if e["type"] == "response.create"]
        assert greeting["response"]["tool_choice"] == "none"
        for event in function_call_response(("call_a", "check_availability", "{}")):
            vl.push(event)
        await until(lambda: len([e for e in vl.sent if e["type"] == "response.create"]) == 2)
        after = [e for e in vl.sent if e["type"] == "response.create"][-1]
        assert after == {"type": "response.create", "response": {"tool_choice": "auto"}}


WAIT = BridgeConfig(tool_wait_phrase="One moment.", tool_wait_seconds=0.1)


def response_creates(vl: FakeConnection) -> list[dict[str, Any]]:
    return [e for e in vl.sent if e["type"] == "response.create"]


async def test_a_slow_tool_is_covered_by_the_wait_phrase_and_the_reply_follows_it() -> None:
    """Pain point P15: the caller hears "one moment" instead of silence; the reply is asked for once the
    phrase is done (a response.create during it would be refused as a second active response)."""
    tools = GatedTools()
    async with running(tools, config=WAIT) as call:
        vl = call.vl
        await _turn_asking_for(vl, ("call_a", "check_availability", "{}"))
        await until(lambda: len(response_creates(vl)) == 1)
        [wait] = response_creates(vl)
        assert wait["response"]["tool_choice"] == "none"
        assert wait["response"]["instructions"].endswith("Say exactly this, and nothing else: One moment.")
        vl.push(created("r_wait"))
        vl.push(audio_delta("a_wait", 100, "r_wait"))
        await until(lambda: len(call.ws.events("media")) == 1)
        tools.gate.set()
        await until(lambda: len(function_outputs(vl)) == 1)
        await asyncio.sleep(0.05)
        assert len(response_creates(vl)) == 1  # not while the phrase is under way
        vl.push(done("r_wait"))
        await until(lambda: len(response_creates(vl)) == 2)
        assert response_creates(vl)[-1] == {"type": "response.create"}
        assert call.bridge.stats["tool_waits"] == 1


async def test_a_quick_tool_needs_no_wait_phrase() -> None:
    tools = GatedTools()
    tools.gate.set()
    async with running(tools, config=WAIT) as call:
        await _turn_asking_for(call.vl, ("call_a", "check_availability", "{}"))
        await until(lambda: len(response_creates(call.vl)) == 1)
        await asyncio.sleep(0.2)
        assert response_creates(call.vl) == [{"type": "response.create"}]  # the reply, no phrase
        assert call.bridge.stats["tool_waits"] == 0


async def test_no_wait_phrase_over_the_caller() -> None:
    tools = GatedTools()
    async with running(tools, config=WAIT) as call:
        await _turn_asking_for(call.vl, ("call_a", "check_availability", "{}"))
        call.vl.push({**SPEECH_STARTED, "item_id": "u2"})
        await asyncio.sleep(0.3)
        assert response_creates(call.vl) == []
        tools.gate.set()
        await until(lambda: len(function_outputs(call.vl)) == 1)


async def test_no_wait_phrase_while_a_reply_to_the_callers_newer_words_is_on_its_way() -> None:
    """The caller asked something else while the tool ran and Voice Live is about to answer it (its
    response.created not in yet): a phrase now would be refused as a second response, and the answer's
    response.done would be taken for the phrase's."""
    tools = GatedTools()
    async with running(
        tools, config=BridgeConfig(tool_wait_phrase="One moment.", tool_wait_seconds=0.2)
    ) as call:
        await _turn_asking_for(call.vl, ("call_a", "check_availability", "{}"))
        call.vl.push({**SPEECH_STARTED, "item_id": "u2"})
        call.vl.push({**SPEECH_STOPPED, "item_id": "u2"})
        await asyncio.sleep(0.4)  # the wait phrase fell due meanwhile
        assert response_creates(call.vl) == []
        assert call.bridge.stats["tool_waits"] == 0
        tools.gate.set()
        await until(lambda: len(function_outputs(call.vl)) == 1)


async def _lose_then_the_reply_waits_for_the_answer(call: Running, tools: GatedTools) -> None:
    """The first session drops while ``call_a`` runs: the next one is asked for nothing until the answer is
    in, then for the reply, having been given the call and its output."""
    call.vl.lose()
    await until(lambda: call.bridge.stats["reconnects"] == 1)
    second = call.client.opened[1]
    await asyncio.sleep(0.05)
    assert response_creates(second) == []
    tools.gate.set()
    await until(lambda: len(response_creates(second)) == 1)
    assert [i["call_id"] for i in function_outputs(second)] == ["call_a"]
    assert [i["call_id"] for i in function_call_items(second)] == ["call_a"]


async def test_a_session_lost_after_the_wait_phrase_is_asked_for_the_reply_once_the_tool_answers() -> None:
    """The wait phrase is not the reply the caller is owed: a session lost after it, while the tool still
    works, leaves the reply owed. The new session is asked for it with the tool's answer, not before."""
    tools = GatedTools()
    async with running(tools, config=WAIT) as call:
        vl = call.vl
        await _turn_asking_for(vl, ("call_a", "check_availability", "{}"))
        await until(lambda: len(response_creates(vl)) == 1)
        vl.push(created("r_wait"))
        vl.push(done("r_wait"))
        await asyncio.sleep(0.05)
        await _lose_then_the_reply_waits_for_the_answer(call, tools)


async def test_a_session_that_took_over_before_the_wait_phrase_was_due_says_it() -> None:
    """The caller would otherwise sit in silence for the whole tool: the new session was not asked for the
    reply (it waits for the answer), so it is the one asked for the phrase."""
    tools = GatedTools()
    slow_phrase = BridgeConfig(tool_wait_phrase="One moment.", tool_wait_seconds=0.3)
    async with running(tools, config=slow_phrase) as call:
        first = call.vl
        await _turn_asking_for(first, ("call_a", "check_availability", "{}"))
        await until(lambda: len(tools.asked) == 1)
        first.lose()
        await until(lambda: call.bridge.stats["reconnects"] == 1)
        second = call.client.opened[1]
        await until(lambda: len(response_creates(second)) == 1)
        [wait] = response_creates(second)
        assert wait["response"]["instructions"].endswith("Say exactly this, and nothing else: One moment.")
        assert response_creates(first) == []
        second.push(created("r_wait"))
        second.push(done("r_wait"))
        tools.gate.set()
        await until(lambda: len(response_creates(second)) == 2)
        assert [i["call_id"] for i in function_outputs(second)] == ["call_a"]


async def test_a_session_lost_during_the_wait_phrase_of_a_long_tool_waits_for_its_answer() -> None:
    """The tool outlasts ``reply_wait_seconds`` and the session is lost while the phrase plays: asking the new
    session again for "the response that was under way" would have it answer without the tool's answer."""
    tools = GatedTools()
    config = BridgeConfig(tool_wait_phrase="One moment.", tool_wait_seconds=0.05, reply_wait_seconds=0.1)
    async with running(tools, config=config) as call:
        vl = call.vl
        await _turn_asking_for(vl, ("call_a", "check_availability", "{}"))
        await until(lambda: len(response_creates(vl)) == 1)
        vl.push(created("r_wait"))
        await asyncio.sleep(0.2)  # the owed reply is past reply_wait_seconds
        await _lose_then_the_reply_waits_for_the_answer(call, tools)


async def test_answered_calls_are_replayed_into_the_next_session() -> None:
    """A new session (here after a loss between turns) knows what the tools said, not only what was spoken:
    the call and its answer are replayed in place, as Voice Live items."""
    tools = GatedTools()
    tools.gate.set()
    async with running(tools) as call:
        first = call.vl
        await _turn_asking_for(first, ("call_a", "check_availability", '{"day":"Tuesday"}'))
        await until(lambda: len(function_outputs(first)) == 1)
        first.push(created("r2"))
        first.push(done("r2"))
        await asyncio.sleep(0.05)
        first.lose()
        await until(lambda: len(call.client.opened) == 2)
        second = call.client.opened[1]
        await until(lambda: len(function_outputs(second)) == 1)
        items = [e["item"] for e in second.sent if e["type"] == "conversation.item.create"]
        assert [item["type"] for item in items] == ["function_call", "function_call_output"]
        assert items[0] == {
            "type": "function_call",
            "name": "check_availability",
            "call_id": "call_a",
            "arguments": '{"day":"Tuesday"}',
        }
        assert items[1]["output"] == '{"answer": "check_availability"}'


async def test_answers_arriving_before_the_wait_phrase_began_ask_for_the_reply_after_it() -> None:
    """The wait phrase was asked for and Voice Live has started it, but its response.created is still on the
    way when the tool answers: a response.create then is refused (the phrase is the active response), and the
    reply the caller waits for would never be asked. It is asked once the phrase is done, as during it."""
    tools = GatedTools()
    async with running(tools, config=WAIT) as call:
        vl = call.vl
        await _turn_asking_for(vl, ("call_a", "check_availability", "{}"))
        await until(lambda: len(response_creates(vl)) == 1)  # the wait phrase
        tools.gate.set()
        await until(lambda: len(function_outputs(vl)) == 1)
        await asyncio.sleep(0.05)
        assert len(response_creates(vl)) == 1, "not while the phrase is under way at the service"
        vl.push(created("r_wait"))
        vl.push(done("r_wait"))
        await until(lambda: len(response_creates(vl)) == 2)
        assert response_creates(vl)[-1] == {"type": "response.create"}


REQUIRED = {
    "input_audio_format": "g711_ulaw",
    "tools": [{"type": "function", "name": "book_appointment", "parameters": {"type": "object"}}],
    "tool_choice": "required",
}


async def test_a_reply_after_the_answers_lost_mid_playback_is_asked_again_without_a_forced_tool() -> None:
    """The reply after the tools' answers is asked with tool_choice "auto" (the profile's "required" would
    force another call). Cut off by a lost session, it was asked again as a bare response.create: under
    "required" the new session calls the tool again (a second booking) instead of finishing the reply."""
    tools = GatedTools()
    tools.gate.set()
    async with running(tools, session=REQUIRED) as call:
        vl = call.vl
        vl.push(SPEECH_STARTED)
        vl.push(SPEECH_STOPPED)
        vl.push(USER_TRANSCRIPT)
        for event in function_call_response(("call_a", "book_appointment", '{"day":"Tuesday"}')):
            vl.push(event)
        await until(lambda: len(response_creates(vl)) == 1)
        assert response_creates(vl)[-1]["response"]["tool_choice"] == "auto"
        vl.push(created("r_reply"))
        vl.push(audio_delta("a_reply", 300, "r_reply"))
        await until(lambda: len(call.ws.events("media")) == 1)
        vl.lose()
        await until(lambda: call.bridge.stats["reconnects"] == 1)
        second = call.client.opened[1]
        await until(lambda: len(response_creates(second)) == 1)
        assert response_creates(second) == [{"type": "response.create", "response": {"tool_choice": "auto"}}]


async def test_a_greeting_lost_mid_playback_is_asked_again_with_its_own_words_and_no_tool() -> None:
    """The greeting had begun when its session was lost: the new session was asked for a bare
    response.create, which says whatever the model likes and, under tool_choice "required", calls a tool."""
    options = {"session": REQUIRED, "config": BridgeConfig(greeting="Hello, Contoso Dental.")}
    async with running(GatedTools(), **options) as call:
        vl = call.vl
        await until(lambda: len(response_creates(vl)) == 1)
        [greeting] = response_creates(vl)
        vl.push(created("r_greeting"))
        vl.push(audio_delta("a_greeting", 300, "r_greeting"))
        await until(lambda: len(call.ws.events("media")) == 1)
        vl.lose()
        await until(lambda: call.bridge.stats["reconnects"] == 1)
        second = call.client.opened[1]
        await until(lambda: len(response_creates(second)) == 1)
        assert response_creates(second) == [greeting]
        assert call.ws.events("clear"), "the cut greeting is not played on under the new one"


async def test_the_apology_for_words_lost_with_a_session_calls_no_tool() -> None:
    """The caller's words were lost with the session before their transcript came: the new session is asked
    to apologise and ask again. Without tool_choice "none" that request took the profile's "required", and the
    new session called a tool (with arguments made up from nothing) instead of apologising."""
    async with running(GatedTools(), session=REQUIRED) as call:
        call.vl.push(SPEECH_STARTED)
        call.vl.push(SPEECH_STOPPED)
        await until(lambda: call.bridge._turns.current is not None)
        call.vl.lose()
        await until(lambda: call.bridge.stats["reconnects"] == 1)
        second = call.client.opened[1]
        await until(lambda: len(response_creates(second)) == 1)
        [apology] = response_creates(second)
        assert apology["response"]["instructions"] == repeat_request_instructions()
        assert apology["response"]["tool_choice"] == "none"


async def test_a_session_lost_while_the_tool_runs_fails_no_turn_when_the_next_one_gives_the_reply() -> None:
    """Nothing of the reply was lost with the session (it waited on the tool), and the caller got it from the
    next one: the turn is no failure in the comparison's error rate."""
    tools = GatedTools()
    async with running(tools=tools) as call:
        await _turn_asking_for(call.vl, ("call_a", "check_availability", "{}"))
        await until(lambda: len(tools.asked) == 1)
        await _lose_then_the_reply_waits_for_the_answer(call, tools)
        second = call.client.opened[1]
        second.push(created("r2"))
        second.push(audio_delta("a2", 100, "r2"))
        await until(lambda: len(call.ws.events("media")) == 1)
    [turn] = call.store.turns
    assert turn["error"] is None
    assert turn["response_ms"] is not None


async def test_a_session_lost_while_the_tool_runs_fails_the_turn_when_none_takes_over() -> None:
    tools = GatedTools()
    async with running(tools=tools) as call:
        await _turn_asking_for(call.vl, ("call_a", "check_availability", "{}"))
        await until(lambda: len(tools.asked) == 1)
        call.client.fail_next = TimeoutError()
        call.vl.lose()
        await until(lambda: any(e["type"] == "moved_to_legacy" for e in call.store.events))
    [turn] = call.store.turns
    assert turn["error_stage"] == "voicelive_lost"


async def test_answers_arriving_after_newer_words_were_committed_are_asked_about_after_that_reply() -> None:
    """The caller spoke again and stopped while the tool ran: Voice Live began the reply to those words before
    the answers were in (its response.created on the way), so a response.create now would be refused as a
    second response and the tool's answer never spoken. It is asked for once that reply is over."""
    tools = GatedTools()
    async with running(tools=tools) as call:
        vl = call.vl
        await _turn_asking_for(vl, ("call_a", "check_availability", "{}"))
        await until(lambda: len(tools.asked) == 1)
        vl.push({**SPEECH_STARTED, "item_id": "u2"})
        vl.push({**SPEECH_STOPPED, "item_id": "u2"})
        await asyncio.sleep(0.05)
        tools.gate.set()
        await until(lambda: len(function_outputs(vl)) == 1)
        await asyncio.sleep(0.05)
        assert response_creates(vl) == []
        vl.push(created("r2"))
        vl.push(done("r2"))
        await until(lambda: len(response_creates(vl)) == 1)


async def _answers_during_the_reply_to_newer_words(call: Running, tools: GatedTools) -> None:
    """``call_a`` runs; the caller speaks again and Voice Live begins the reply to those words (``r2``); then
    the tool answers, its output given while ``r2`` is under way."""
    vl = call.vl
    await _turn_asking_for(vl, ("call_a", "check_availability", "{}"))
    await until(lambda: len(tools.asked) == 1)
    vl.push({**SPEECH_STARTED, "item_id": "u2"})
    vl.push({**SPEECH_STOPPED, "item_id": "u2"})
    vl.push(created("r2"))
    await until(lambda: call.bridge._response_active)
    tools.gate.set()
    await until(lambda: len(function_outputs(vl)) == 1)


async def test_answers_arriving_while_the_reply_to_newer_words_is_under_way_are_asked_about_after_it() -> (
    None
):
    """As above, but the answers come once that reply has begun (its response.created is in): it was made
    without them too, and nothing asked about them after it, so the tool's answer was never spoken."""
    tools = GatedTools()
    async with running(tools=tools) as call:
        vl = call.vl
        await _answers_during_the_reply_to_newer_words(call, tools)
        await asyncio.sleep(0.05)
        assert response_creates(vl) == [], "not while that reply is under way"
        vl.push(done("r2"))
        await until(lambda: len(response_creates(vl)) == 1)


async def test_a_wait_phrase_refused_for_the_reply_to_newer_words_leaves_that_reply_given() -> None:
    """The caller spoke as the phrase was asked for: Voice Live began the reply to them (taken by the bridge
    for the phrase) and refused the phrase. That reply was then still counted as owed once it ended: the stall
    watch waited for it and dropped the healthy session, and the new one was asked to answer again."""
    tools = GatedTools()
    config = BridgeConfig(tool_wait_phrase="One moment.", tool_wait_seconds=0.1, stall_seconds=0.3)
    async with running(tools, config=config) as call:
        vl = call.vl
        await _turn_asking_for(vl, ("call_a", "check_availability", "{}"))
        await until(lambda: len(response_creates(vl)) == 1)  # the wait phrase, on its way
        vl.push({**SPEECH_STARTED, "item_id": "u2"})
        vl.push({**SPEECH_STOPPED, "item_id": "u2"})
        vl.push(created("r_reply"))  # Voice Live's reply to those words
        vl.push(
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "code": "conversation_already_has_active_response",
                    "message": "Conversation already has an active response in progress.",
                },
            }
        )
        vl.push(audio_delta("a_reply", 100, "r_reply"))
        vl.push(done("r_reply"))
        await until(lambda: len(call.ws.events("mark")) == 1)
        call.ws.mark(call.ws.events("mark")[0]["mark"]["name"])
        await asyncio.sleep(0.6)
        assert len(call.client.opened) == 1, "the healthy session was dropped as stalled"
        tools.gate.set()


async def test_a_reply_that_calls_tools_of_its_own_is_not_followed_by_a_request_before_their_answers() -> (
    None
):
    """The earlier tool's answers came while the reply to the caller's newer words was under way, and that
    reply ended calling a tool itself: a response.create then ran with its call unanswered (the model could
    call it again). The one reply after its answer sees both answers."""
    tools = GatedTools()
    async with running(tools=tools) as call:
        vl = call.vl
        await _answers_during_the_reply_to_newer_words(call, tools)
        for event in function_call_response(("call_b", "book", "{}"))[1:]:  # r2 goes on: it calls a tool
            vl.push(event)
        await until(lambda: len(function_outputs(vl)) == 2)
        await asyncio.sleep(0.05)
        sent = [(e["type"], e.get("item", {}).get("call_id")) for e in vl.sent]
        creates = [i for i, (kind, _) in enumerate(sent) if kind == "response.create"]
        assert len(creates) == 1, sent
        assert creates[0] > sent.index(("conversation.item.create", "call_b")), "asked after call_b's answer"


async def test_a_turn_whose_tool_outlasts_the_reply_wait_fails_when_its_session_is_lost_for_good() -> None:
    """The reply waits on the tool, which takes longer than ``reply_wait_seconds``: past that, the reply no
    longer counted as owed, so a loss with no session taking over left a turn that never got its reply
    unmarked."""
    tools = GatedTools()
    async with running(tools, config=BridgeConfig(reply_wait_seconds=0.1, tool_handover_seconds=0.1)) as call:
        await _turn_asking_for(call.vl, ("call_a", "check_availability", "{}"))
        await until(lambda: len(tools.asked) == 1)
        await asyncio.sleep(0.2)  # the tool is still working
        call.client.fail_next = TimeoutError()
        call.vl.lose()
        await until(lambda: any(e["type"] == "moved_to_legacy" for e in call.store.events))
    [turn] = call.store.turns
    assert turn["error_stage"] == "voicelive_lost"


async def test_a_wait_phrase_voice_live_fails_does_not_fail_the_turn_whose_reply_follows_it() -> None:
    """The wait phrase is no reply: the tool's answer still gets the caller theirs. Its failure recorded the
    turn as an error all the same."""
    tools = GatedTools()
    async with running(tools, config=WAIT) as call:
        vl = call.vl
        await _turn_asking_for(vl, ("call_a", "check_availability", "{}"))
        await until(lambda: len(response_creates(vl)) == 1)
        vl.push(created("r_wait"))
        vl.push({"type": "response.done", "response": {"id": "r_wait", "status": "failed"}})
        await asyncio.sleep(0.02)
        tools.gate.set()
        await until(lambda: len(response_creates(vl)) == 2)  # the reply, asked once the answer is in
        vl.push(created("r_reply"))
        vl.push(audio_delta("a_reply", 100, "r_reply"))
        vl.push(done("r_reply"))
        await until(lambda: len(call.ws.events("media")) == 1)
    [turn] = call.store.turns
    assert turn["error"] is None and turn["response_ms"] is not None


async def test_a_call_moved_before_the_agent_spoke_is_greeted_by_legacy_despite_a_tool_round() -> None:
    """No greeting; the caller asked, a tool answered, and the session was lost before the reply that the
    answer made possible had begun (no reconnect): the caller never heard the agent. The tool exchange's
    assistant message (its tool_calls, no words) counted as heard, so legacy was asked to carry on, and the
    first words of the call were "Sorry about that. Let's carry on." instead of the greeting."""
    tools = GatedTools()
    tools.gate.set()
    bridge, ws, client, mover, _, store = make_bridge(tools=tools)
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    vl = client.opened[0]
    vl.push(USER_TRANSCRIPT)
    await _turn_asking_for(vl, ("call_a", "check_availability", "{}"))
    await until(lambda: vl.types()[-1:] == ["response.create"])  # the answer is in, the reply asked for
    client.fail_next = TimeoutError()
    vl.lose()
    await until(lambda: bool(mover.moves))
    ws.push({"event": "stop", "streamSid": STREAM_SID, "stop": {}})
    await asyncio.wait_for(run, 3)
    assert [m["role"] for m in store.history] == ["user", "assistant", "tool"]  # legacy learns what it did
    assert mover.greets == [True]


async def test_a_tool_running_when_the_stream_is_closed_without_stop_finishes_and_reaches_legacy() -> None:
    """A deploy closes the stream (1012) while a tool (a booking) runs: Twilio goes on at legacy, as after a
    move. The tool was cancelled as the stream ended (its backend may already have acted), and the history
    left for legacy did not hold its call and answer, as a moved call's does."""
    tools = GatedTools()
    bridge, ws, client, _, _, store = make_bridge(tools=tools, config=BridgeConfig(tool_handover_seconds=2.0))
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    vl = client.opened[0]
    vl.push(USER_TRANSCRIPT)
    await _turn_asking_for(vl, ("call_a", "book", "{}"))
    await until(lambda: len(tools.asked) == 1)
    ws.inbox.put_nowait({"type": "websocket.disconnect", "code": 1012})
    await asyncio.sleep(0.1)
    tools.gate.set()  # the booking is done
    await asyncio.wait_for(run, 3)
    assert [m["role"] for m in store.history] == ["user", "assistant", "tool"], store.history
    assert store.history[2]["content"] == '{"answer": "book"}'
    [turn] = store.turns
    assert [c["name"] for c in turn["tool_calls"]] == ["book"]


async def test_the_voice_live_session_is_closed_while_a_handed_over_tool_finishes() -> None:
    """The stream ended (a deploy) while a tool ran: the bridge waits for the tool so legacy learns its
    answer, but it kept the Voice Live session open, and billed, through that wait."""
    tools = GatedTools()
    bridge, ws, client, *_ = make_bridge(tools=tools, config=BridgeConfig(tool_handover_seconds=5.0))
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    vl = client.opened[0]
    await _turn_asking_for(vl, ("call_a", "check_availability", "{}"))
    await until(lambda: len(tools.asked) == 1)
    ws.hang_up()  # no stop: the stream goes on at legacy
    await until(lambda: vl.closed, within=1.0)
    assert not run.done()  # still waiting for the tool
    tools.gate.set()
    await asyncio.wait_for(run, 3)
