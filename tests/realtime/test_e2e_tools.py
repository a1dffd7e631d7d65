"""Agent tools in a realtime call, end to end over real sockets: Voice Live (its emulator) asks for a function,
the bridge calls the tool tool_backend (its emulator) and hands the answer back, and the caller hears the reply
built from it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson

from emulators.speechlike import silence_ulaw, speechlike_ulaw
from emulators.tool_backend import ToolBackendEmulator
from emulators.voicelive import VoiceLiveEmulator
from tests.realtime.controlled_connector import ControlledConnector
from tests.realtime.harness import Harness, new_call_sid
from tests.realtime.twilio_client import wait_until

SPEECH = speechlike_ulaw(900, seed=1) + silence_ulaw(800)
DAY = {"type": "object", "properties": {"day": {"type": "string"}}, "required": ["day"]}


def profile_tools(tool_backend: ToolBackendEmulator, **extra: Any) -> dict[str, Any]:
    return {
        "tools": [
            {
                "name": "check_availability",
                "description": "Free appointment slots on a day",
                "parameters": DAY,
                "url": tool_backend.tool_url("check_availability"),
                **extra,
            }
        ]
    }


def script_tool_then_reply(voicelive: VoiceLiveEmulator) -> None:
    voicelive.config.replies = (
        {"tool_calls": [{"name": "check_availability", "arguments": {"day": "Tuesday"}}]},
        "On Tuesday I have {tool_output}",
    )


async def test_a_tool_call_is_run_and_its_answer_spoken(
    make_harness: Callable[..., Harness], voicelive: VoiceLiveEmulator, tool_backend: ToolBackendEmulator
) -> None:
    script_tool_then_reply(voicelive)
    harness = make_harness(profile_overrides=profile_tools(tool_backend))
    call_sid, session = await _call_with_one_tool_round(harness, voicelive)

    # The session offered the profile's tool in Voice Live's flat shape.
    [offered] = session.session["tools"]
    assert offered["name"] == "check_availability" and offered["parameters"] == DAY
    assert session.session["tool_choice"] == "auto"
    # The tool_backend got the model's arguments; Voice Live got its answer under the call's id.
    [sent] = [c for c in tool_backend.calls if c["body"]["call_sid"] == call_sid]
    assert sent["body"]["arguments"] == {"day": "Tuesday"} and sent["body"]["pipeline"] == "realtime"
    assert sent["body"]["turn"] == 1
    [call] = session.function_calls
    [output] = session.function_outputs
    assert output["call_id"] == call["call_id"]
    assert orjson.loads(output["output"])["free_slots"] == ["09:30", "11:00", "14:30"]

    turns = await harness.turns(call_sid)
    [turn] = turns
    assert "09:30" in turn["assistant_text"]  # the reply was built from the tool's answer
    assert [(c["name"], c["ok"]) for c in turn["tool_calls"]] == [("check_availability", True)]
    assert turn["stages"]["tool"] > 0
    assert turn["response_ms"] > turn["stages"]["tool"]
    assert await harness.wait_call_field(call_sid, "breaker_outcome") == "success"
    record = await harness.call(call_sid)
    assert record["realtime"]["tool_calls"] == 1
    assert not record["moved_to_legacy"]
    assert (
        harness.metric(
            "voice_router_tool_call_seconds_count",
            pipeline="realtime",
            tool="check_availability",
            result="ok",
        )
        == 1
    )


async def test_a_tool_that_times_out_is_answered_with_an_error_and_the_call_goes_on(
    make_harness: Callable[..., Harness], voicelive: VoiceLiveEmulator, tool_backend: ToolBackendEmulator
) -> None:
    """The model hears that the tool failed and says so; the caller is neither left in silence nor moved,
    and Voice Live is not blamed (the breaker counts a success)."""
    script_tool_then_reply(voicelive)
    tool_backend.set_faults(stall_next=1, stall_s=1.5)
    harness = make_harness(profile_overrides=profile_tools(tool_backend, timeout_seconds=0.3))
    call_sid, session = await _call_with_one_tool_round(harness, voicelive)

    [output] = session.function_outputs
    assert "did not answer within 0.3 s" in orjson.loads(output["output"])["error"]
    [turn] = await harness.turns(call_sid)
    assert turn["tool_calls"][0]["error"] == "timeout"
    assert "did not answer" in turn["assistant_text"]
    assert await harness.wait_call_field(call_sid, "breaker_outcome") == "success"


async def test_a_slow_tool_is_covered_by_the_wait_phrase(
    make_harness: Callable[..., Harness], voicelive: VoiceLiveEmulator, tool_backend: ToolBackendEmulator
) -> None:
    """Pain point P15: the caller hears the profile's wait phrase while the tool works, then the answer."""
    voicelive.config.replies = (
        {"tool_calls": [{"name": "check_availability", "arguments": {"day": "Tuesday"}}]},
        "One moment while I check that.",
        "On Tuesday I have {tool_output}",
    )
    tool_backend.set_faults(delay_s=0.8)  # the next test's tool_backend fixture clears it
    harness = make_harness(profile_overrides={**profile_tools(tool_backend), "tool_wait_seconds": 0.2})
    call_sid, session = await _call_with_one_tool_round(harness, voicelive, replies=3)
    # The call, the wait phrase (asked for by the bridge), the answer; all completed, none refused.
    assert list(session.responses.values()) == ["completed"] * 3
    assert session.client_events.count("response.create") == 2
    [turn] = await harness.turns(call_sid)
    assert turn["assistant_text"].startswith("One moment while I check that.")
    assert "09:30" in turn["assistant_text"]
    assert turn["response_ms"] < turn["stages"]["tool"]  # the caller heard something before the tool answered
    record = await harness.call(call_sid)
    assert record["realtime"]["tool_waits"] == 1


async def test_a_renewed_session_is_given_the_tool_round(
    make_harness: Callable[..., Harness], voicelive: VoiceLiveEmulator, tool_backend: ToolBackendEmulator
) -> None:
    """The session renewal replays the answered call and its output, and the emulator (which checks that
    an output answers a call in its conversation) takes them."""
    script_tool_then_reply(voicelive)
    harness = make_harness(
        profile_overrides=profile_tools(tool_backend),
        settings_overrides={"realtime_session_max_age_seconds": 1.0},
    )
    call_sid = new_call_sid()
    await harness.register_call(call_sid)
    async with harness.client(call_sid) as twilio:
        await twilio.start()
        await twilio.send_audio(SPEECH)
        await twilio.wait_for(lambda: len(voicelive.sessions) >= 2)
        renewed = voicelive.sessions[1]
        await twilio.wait_for(lambda: renewed.function_outputs_received == 1)
        await twilio.stop()
        await twilio.wait_closed()
    first = voicelive.sessions[0]
    [replayed_call] = renewed.client_function_calls
    assert replayed_call["call_id"] == first.function_calls[0]["call_id"]
    assert replayed_call["name"] == "check_availability"
    assert renewed.function_outputs[0]["output"] == first.function_outputs[0]["output"]
    assert renewed.errors_sent == []
    record = await harness.call(call_sid)
    assert record["realtime"]["renewals"] >= 1


async def test_a_required_tool_choice_greets_calls_once_then_answers(
    make_harness: Callable[..., Harness], voicelive: VoiceLiveEmulator, tool_backend: ToolBackendEmulator
) -> None:
    """Under ``tool_choice: required`` the emulator, like the service, turns every response into a call.
    The greeting (``none``) and the reply after the tool's answer (``auto``) are spoken all the same."""
    voicelive.config.replies = (
        "Welcome to the test line.",
        {"tool_calls": [{"name": "check_availability", "arguments": {"day": "Tuesday"}}]},
        "On Tuesday I have {tool_output}",
    )
    harness = make_harness(
        profile_overrides={**profile_tools(tool_backend), "tool_choice": "required", "greeting": "Welcome."}
    )
    call_sid = new_call_sid()
    await harness.register_call(call_sid)
    async with harness.client(call_sid) as twilio:
        await twilio.start()
        await twilio.wait_for(lambda: bool(voicelive.sessions))
        session = voicelive.sessions[0]
        await twilio.wait_for(lambda: list(session.responses.values()) == ["completed"])  # the greeting
        await twilio.send_audio(SPEECH)
        await twilio.wait_for(lambda: list(session.responses.values())[2:3] == ["completed"])
        await twilio.stop()
        await twilio.wait_closed()
    assert session.function_calls_emitted == 1
    greeting, turn = await harness.turns(call_sid)
    assert greeting["assistant_text"] == "Welcome to the test line."
    assert "09:30" in turn["assistant_text"]


async def test_a_session_that_expires_while_a_tool_runs_hands_the_answer_to_the_next_one(
    make_harness: Callable[..., Harness], voicelive: VoiceLiveEmulator, tool_backend: ToolBackendEmulator
) -> None:
    """The session that asked for the tool expires while the tool works. The next one is not asked for the
    reply until the answer is in (asked at once, a model answers afresh and may call the tool again: a
    booking made twice); then it is given the call and its answer (the emulator refuses an output for a call
    it does not know) and speaks the reply."""
    # Each session starts its script at the top: under ``required`` the one text entry is a call in the first
    # session, and the reply after the answer (``auto``) is spoken by the next. The forced call has no
    # arguments: with the schema check off they reach the backend, which refuses them (slowly, as set here),
    # and the model reads its reason out like any answer.
    voicelive.config.replies = ("The tool said: {tool_output}",)
    tool_backend.set_faults(delay_s=1.5)  # the next test's tool_backend fixture clears it
    harness = make_harness(
        profile_overrides={
            **profile_tools(tool_backend, validate_arguments=False),
            "tool_choice": "required",
            "tool_wait_phrase": "",
        }
    )
    call_sid = new_call_sid()
    await harness.register_call(call_sid)

    def tool_calls() -> list[dict[str, Any]]:
        return [c for c in tool_backend.calls if c["body"]["call_sid"] == call_sid]

    async with harness.client(call_sid) as twilio:
        await twilio.start()
        await twilio.send_audio(SPEECH)
        await twilio.wait_for(lambda: bool(tool_calls()))
        first = voicelive.sessions[0]
        voicelive.config.faults.update(expire_after_s=time.time() - first.opened_at + 0.05)
        await twilio.wait_for(lambda: len(voicelive.sessions) >= 2)
        voicelive.config.faults.update(expire_after_s=None)
        second = voicelive.sessions[1]
        await twilio.wait_for(lambda: "completed" in second.responses.values() and bool(twilio.audio))
        await twilio.stop()
        await twilio.wait_closed()
    assert first.close_reason == "session_expired" and first.function_outputs_received == 0
    assert len(tool_calls()) == 1, "the tool ran once"
    assert second.function_calls_emitted == 0, "the new session did not call it again"
    assert second.errors_sent == []
    [handed_over] = second.client_function_calls
    assert handed_over["call_id"] == first.function_calls[0]["call_id"]
    [output] = second.function_outputs
    assert orjson.loads(output["output"])["error"] == "the tool refused the call (HTTP 422): day is required"
    turns = await harness.turns(call_sid)
    assert "day is required" in turns[-1]["assistant_text"]
    record = await harness.call(call_sid)
    assert not record["moved_to_legacy"]


async def _call_with_one_tool_round(
    harness: Harness, voicelive: VoiceLiveEmulator, *, replies: int = 2
) -> tuple[str, Any]:
    """One caller question whose reply needs a tool; returns the call and its Voice Live session once the reply
    after the tool's answer has completed."""
    call_sid = new_call_sid()
    await harness.register_call(call_sid)
    async with harness.client(call_sid) as twilio:
        await twilio.start()
        await twilio.send_audio(SPEECH)
        await twilio.wait_for(lambda: bool(voicelive.sessions))
        session = voicelive.sessions[0]
        await twilio.wait_for(lambda: session.function_outputs_received == 1 and bool(twilio.audio))
        await twilio.wait_for(
            lambda: list(session.responses.values())[replies - 1 : replies] == ["completed"]
        )
        await twilio.stop()
        await twilio.wait_closed()
    return call_sid, session


async def test_a_call_moved_after_a_tool_round_hands_the_tool_exchange_to_legacy(
    make_harness: Callable[..., Harness], voicelive: VoiceLiveEmulator, tool_backend: ToolBackendEmulator
) -> None:
    """The legacy model must know what a tool did on realtime (a booking made, its confirmation), not only
    what was said of it: the handed-over history holds the call and its answer in their place."""
    script_tool_then_reply(voicelive)
    connector = ControlledConnector()
    connector.refuse_after = 1  # the quick reconnect fails: the call moves
    harness = make_harness(connector=connector, profile_overrides=profile_tools(tool_backend))
    call_sid = new_call_sid()
    await harness.register_call(call_sid)
    async with harness.client(call_sid) as twilio:
        await twilio.start()
        await twilio.send_audio(SPEECH)
        await twilio.wait_for(lambda: bool(voicelive.sessions))
        session = voicelive.sessions[0]
        await twilio.wait_for(lambda: list(session.responses.values())[1:2] == ["completed"])
        await twilio.wait_for(lambda: not twilio._queue and len(twilio.marks_echoed) >= 1)
        assert harness.server.loop is not None
        harness.server.loop.call_soon_threadsafe(connector.abort, 0)
        await wait_until(lambda: bool(harness.rest.updates_for(call_sid)))
        await twilio.stop()
        await twilio.wait_closed()
    for _ in range(250):  # the call log writes the history before the move's event
        if any(event["type"] == "moved_to_legacy" for event in (await harness.call(call_sid))["events"]):
            break
        await asyncio.sleep(0.02)
    history = await harness.on_server(harness.store.get_history(call_sid))
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "assistant"]
    [call] = session.function_calls
    [asked] = history[1]["tool_calls"]
    assert asked["id"] == call["call_id"] and asked["function"]["name"] == "check_availability"
    assert history[2]["tool_call_id"] == call["call_id"]
    assert orjson.loads(history[2]["content"])["free_slots"] == ["09:30", "11:00", "14:30"]
    assert history[3]["content"].startswith("On Tuesday I have")


async def test_a_tool_still_running_when_the_call_moves_finishes_and_reaches_legacy(
    make_harness: Callable[..., Harness], voicelive: VoiceLiveEmulator, tool_backend: ToolBackendEmulator
) -> None:
    """The session is lost while a tool (a booking, say) runs, and the call moves to legacy. The tool was
    cancelled as the stream ended, though its backend may already have acted, and legacy's model never
    learned of it. Now it runs to its end and its call and answer join the handed-over history."""
    script_tool_then_reply(voicelive)
    tool_backend.set_faults(delay_s=1.0)
    connector = ControlledConnector()
    connector.refuse_after = 1  # the quick reconnect fails: the call moves
    harness = make_harness(connector=connector, profile_overrides=profile_tools(tool_backend))
    call_sid = new_call_sid()
    await harness.register_call(call_sid)
    async with harness.client(call_sid) as twilio:
        await twilio.start()
        await twilio.send_audio(SPEECH)
        await twilio.wait_for(lambda: bool(voicelive.sessions) and bool(voicelive.sessions[0].function_calls))
        await wait_until(lambda: bool(tool_backend.calls))  # the tool is running
        assert harness.server.loop is not None
        harness.server.loop.call_soon_threadsafe(connector.abort, 0)
        await wait_until(lambda: bool(harness.rest.updates_for(call_sid)))
        await twilio.stop()  # Twilio runs the redirect: the stream ends while the tool still runs
        await twilio.wait_closed()

    async def history() -> list[dict[str, Any]]:
        return await harness.on_server(harness.store.get_history(call_sid))

    for _ in range(150):
        if any(m["role"] == "tool" for m in await history()):
            break
        await asyncio.sleep(0.02)
    messages = await history()
    assert [m["role"] for m in messages][-2:] == ["assistant", "tool"], messages
    [asked] = messages[-2]["tool_calls"]
    assert asked["function"]["name"] == "check_availability"
    assert messages[-1]["tool_call_id"] == asked["id"]
    assert orjson.loads(messages[-1]["content"])["free_slots"] == ["09:30", "11:00", "14:30"]
