"""Agent tools in a legacy call, over real sockets: the model (OpenAI emulator, through the openai SDK) asks
for a tool, the router calls the tool tool_backend (its emulator), and the caller hears the answer built from it."""

from __future__ import annotations

from typing import Any

import orjson

from emulators.tool_backend import ToolBackendEmulator
from tests.legacy.conftest import HarnessFactory, LegacyHarness

CALL = "CA" + "7" * 32
DAY = {"type": "object", "properties": {"day": {"type": "string"}}, "required": ["day"]}
BOOK = {
    "type": "object",
    "properties": {"day": {"type": "string"}, "time": {"type": "string"}},
    "required": ["day", "time"],
}


def tools(tool_backend: ToolBackendEmulator, **extra: Any) -> list[dict[str, Any]]:
    return [
        {
            "name": "check_availability",
            "description": "Free appointment slots on a day",
            "parameters": DAY,
            "url": tool_backend.tool_url("check_availability"),
            **extra,
        },
        {
            "name": "book_appointment",
            "description": "Book a slot",
            "parameters": BOOK,
            "url": tool_backend.tool_url("book_appointment"),
            **extra,
        },
    ]


async def _start(legacy: HarnessFactory, tool_backend: ToolBackendEmulator, **top: Any) -> LegacyHarness:
    return await legacy(profile_top={"tools": tools(tool_backend), **top})


async def test_a_turn_runs_the_tool_and_speaks_its_answer(
    legacy: HarnessFactory, tool_backend: ToolBackendEmulator
) -> None:
    h = await _start(legacy, tool_backend)
    h.openai.set_script(
        [
            {"tool_calls": [{"name": "check_availability", "arguments": {"day": "Tuesday"}}]},
            "On Tuesday I have {tool_output}",
        ]
    )
    greeting = await h.twilio.incoming_call(CALL)
    twiml = await h.twilio.say(greeting, CALL, "Is Tuesday free?")
    assert twiml.status == 200 and len(twiml.plays) == 1 and not twiml.says, twiml.text

    # The tool tool_backend got the model's arguments, with the call it belongs to.
    [sent] = tool_backend.calls[-1:]
    assert sent["body"]["arguments"] == {"day": "Tuesday"}
    assert (sent["body"]["call_sid"], sent["body"]["pipeline"], sent["body"]["turn"]) == (CALL, "legacy", 1)

    first, second = h.openai.requests
    assert [t["function"]["name"] for t in first.body["tools"]] == ["check_availability", "book_appointment"]
    assert first.body["tool_choice"] == "auto"
    # The second request carries the model's call and the tool's answer, in the order OpenAI requires.
    assistant, tool_message = second.body["messages"][-2:]
    [asked] = assistant["tool_calls"]
    assert asked["function"] == {"name": "check_availability", "arguments": '{"day":"Tuesday"}'}
    assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == asked["id"]
    assert orjson.loads(tool_message["content"])["free_slots"] == ["09:30", "11:00", "14:30"]

    # The caller hears the answer built from the tool's output.
    spoken = h.speech.syntheses[-1].text
    assert spoken.startswith("On Tuesday I have") and "09:30" in spoken

    [turn] = [t for t in await h.list_turns(CALL) if t["turn"] == 1]
    assert [(c["name"], c["ok"]) for c in turn["tool_calls"]] == [("check_availability", True)]
    assert turn["stages"]["tool"] > 0
    assert turn["stages"]["llm_total"] > 0
    assert turn["usage"]["completion_tokens"] > 0
    assert turn["error"] is None
    assert (
        h.sample(
            "voice_router_tool_call_seconds_count", pipeline="legacy", tool="check_availability", result="ok"
        )
        == 1.0
    )

    # The history keeps the tool's call and answer in their place, so the next turn's model knows what the
    # tool said (and the emulator, as OpenAI, accepts the pairing: no apology).
    h.openai.set_script(["Anything else?"])
    twiml = await h.twilio.say(twiml, CALL, "No thanks")
    assert twiml.status == 200 and not twiml.says
    later = h.openai.requests[-1].body["messages"]
    assert [m["role"] for m in later] == [
        "system",
        "assistant",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]
    assert later[3]["tool_calls"] == [asked] and later[4] == tool_message
    assert later[5]["content"] == spoken


async def test_a_history_cap_that_cuts_a_tool_exchange_leaves_its_rest_out(
    legacy: HarnessFactory, tool_backend: ToolBackendEmulator
) -> None:
    """The cap counts messages: two keep the tool's answer and the reply of the turn before, but not the call
    the answer belongs to. OpenAI refuses an answer without its call, which would cost the turn."""
    h = await legacy(profile_top={"tools": tools(tool_backend)}, profile_legacy={"max_history_messages": 2})
    h.openai.set_script(
        [
            {"tool_calls": [{"name": "check_availability", "arguments": {"day": "Tuesday"}}]},
            "On Tuesday I have {tool_output}",
            "Anything else?",
        ]
    )
    greeting = await h.twilio.incoming_call(CALL)
    twiml = await h.twilio.say(greeting, CALL, "Is Tuesday free?")
    assert [m["role"] for m in await h.store.get_history(CALL)] == ["tool", "assistant"]
    twiml = await h.twilio.say(twiml, CALL, "No thanks")
    assert twiml.status == 200 and len(twiml.plays) == 1 and not twiml.says, twiml.text
    later = h.openai.requests[-1].body["messages"]
    assert [m["role"] for m in later] == ["system", "assistant", "user"]
    assert later[1]["content"].startswith("On Tuesday I have")
    [turn] = [t for t in await h.list_turns(CALL) if t["turn"] == 2]
    assert turn["error"] is None


async def test_a_call_moved_from_realtime_carries_its_tool_exchange_to_the_model(
    legacy: HarnessFactory, tool_backend: ToolBackendEmulator
) -> None:
    """What the bridge hands over when a call moves: a booking made on realtime is known to legacy's model."""
    from realtime_pipeline.history import ConversationHistory
    from router.tool_calls import ToolCall
    from tests.legacy.twilio_script import Twiml

    h = await _start(legacy, tool_backend)
    realtime = ConversationHistory()
    realtime.set_text("user", "u1", "Book Tuesday at nine thirty")
    booking = ToolCall("call_9", "book_appointment", '{"day":"Tuesday","time":"09:30"}')
    realtime.add_function_call(booking)
    realtime.set_function_output("call_9", '{"confirmation":"BK-42"}')
    realtime.set_text("assistant", "a1", "Booked.")
    await h.store.append_history(CALL, realtime.chat_messages(), 20)
    resumed = Twiml.parse(await h.twilio.post("/legacy/start", h.twilio.params(CALL)))
    h.openai.set_script(["Your confirmation is BK-42."])
    reply = await h.twilio.say(resumed, CALL, "What was my confirmation number?")
    assert reply.status == 200 and len(reply.plays) == 1 and not reply.says, reply.text
    messages = h.openai.requests[-1].body["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert messages[2]["tool_calls"][0]["function"]["name"] == "book_appointment"
    assert messages[3] == {"role": "tool", "tool_call_id": "call_9", "content": '{"confirmation":"BK-42"}'}


async def test_a_failing_tool_is_spoken_about_not_an_apology(
    legacy: HarnessFactory, tool_backend: ToolBackendEmulator
) -> None:
    h = await _start(legacy, tool_backend)
    tool_backend.set_faults(fail_next=1, fail_status=503)
    h.openai.set_script(
        [
            {"tool_calls": [{"name": "check_availability", "arguments": {"day": "Friday"}}]},
            "I could not check that: {tool_output}",
        ]
    )
    greeting = await h.twilio.incoming_call(CALL)
    twiml = await h.twilio.say(greeting, CALL, "Is Friday free?")
    assert twiml.status == 200 and len(twiml.plays) == 1 and not twiml.says
    assert "HTTP 503" in h.speech.syntheses[-1].text
    [turn] = [t for t in await h.list_turns(CALL) if t["turn"] == 1]
    assert turn["tool_calls"][0]["ok"] is False and turn["tool_calls"][0]["error"] == "http_503"
    assert turn["error"] is None


async def test_arguments_that_miss_the_schema_are_corrected_by_the_model_before_the_backend_sees_them(
    legacy: HarnessFactory, tool_backend: ToolBackendEmulator
) -> None:
    """The model forgot the time: the check answers it why, the next round has the time, and only that call
    reaches the booking backend."""
    h = await _start(legacy, tool_backend)
    before = len(tool_backend.calls)
    h.openai.set_script(
        [
            {"tool_calls": [{"name": "book_appointment", "arguments": {"day": "Friday"}}]},
            {"tool_calls": [{"name": "book_appointment", "arguments": {"day": "Friday", "time": "11:00"}}]},
            "Booked: {tool_output}",
        ]
    )
    greeting = await h.twilio.incoming_call(CALL)
    twiml = await h.twilio.say(greeting, CALL, "Book me Friday.")
    assert twiml.status == 200 and len(twiml.plays) == 1 and not twiml.says
    second = h.openai.requests[1]
    refusal = orjson.loads(second.body["messages"][-1]["content"])
    assert refusal == {
        "error": "the arguments do not match the tool's parameters ('time' is a required property)"
    }
    [booked] = tool_backend.calls[before:]
    assert booked["body"]["arguments"] == {"day": "Friday", "time": "11:00"}
    assert "confirmation" in h.speech.syntheses[-1].text
    [turn] = [t for t in await h.list_turns(CALL) if t["turn"] == 1]
    assert [(c["ok"], c.get("error")) for c in turn["tool_calls"]] == [(False, "bad_arguments"), (True, None)]


async def test_a_model_that_keeps_asking_for_tools_is_made_to_answer(
    legacy: HarnessFactory, tool_backend: ToolBackendEmulator
) -> None:
    """After max_tool_rounds rounds the model is asked with tool_choice "none", so the turn ends in words
    (and the caller is not kept waiting by a loop of calls)."""
    h = await _start(legacy, tool_backend, max_tool_rounds=2)
    call = {"tool_calls": [{"name": "check_availability", "arguments": {"day": "Monday"}}]}
    h.openai.set_script([call, call, call, "Monday is open."])
    greeting = await h.twilio.incoming_call(CALL)
    twiml = await h.twilio.say(greeting, CALL, "Monday?")
    assert twiml.status == 200 and not twiml.says
    choices = [r.body.get("tool_choice") for r in h.openai.requests]
    assert choices == ["auto", "auto", "none"]
    # The emulator's third script entry was a call, but tool_choice none makes it speak instead.
    [turn] = [t for t in await h.list_turns(CALL) if t["turn"] == 1]
    assert len(turn["tool_calls"]) == 2
    assert h.speech.syntheses[-1].text


async def test_required_tool_choice_is_relaxed_once_the_tools_have_answered(
    legacy: HarnessFactory, tool_backend: ToolBackendEmulator
) -> None:
    h = await _start(legacy, tool_backend, tool_choice="required")
    h.openai.set_script(
        [{"tool_calls": [{"name": "check_availability", "arguments": {"day": "Monday"}}]}, "Monday is open."]
    )
    greeting = await h.twilio.incoming_call(CALL)
    twiml = await h.twilio.say(greeting, CALL, "Monday?")
    assert twiml.status == 200 and not twiml.says
    assert [r.body.get("tool_choice") for r in h.openai.requests] == ["required", "auto"]
    assert h.speech.syntheses[-1].text == "Monday is open."


async def test_a_tool_slower_than_the_turn_deadline_gets_the_apology_and_the_call_goes_on(
    legacy: HarnessFactory, tool_backend: ToolBackendEmulator
) -> None:
    h = await legacy(
        profile_top={"tools": tools(tool_backend, timeout_seconds=20.0)}, legacy_turn_deadline_seconds=1.5
    )
    tool_backend.set_faults(stall_next=1, stall_s=3.0)
    h.openai.set_script([{"tool_calls": [{"name": "check_availability", "arguments": {"day": "Monday"}}]}])
    greeting = await h.twilio.incoming_call(CALL)
    twiml = await h.twilio.say(greeting, CALL, "Monday?")
    assert twiml.status == 200 and twiml.says == [h.profile.legacy.apology]
    assert twiml.gather is not None  # still listening
    [turn] = [t for t in await h.list_turns(CALL) if t["turn"] == 1]
    assert turn["error_stage"] == "tool"


async def test_words_said_alongside_a_tool_call_are_not_kept_as_heard(
    legacy: HarnessFactory, tool_backend: ToolBackendEmulator
) -> None:
    """A model may say something with its calls ("Let me check"). The tool round's request carries those words
    back, as OpenAI expects, but the caller never heard them (a legacy turn plays its final reply only): the
    history kept for later turns has the call without them."""
    h = await _start(legacy, tool_backend)
    check = {"name": "check_availability", "arguments": {"day": "Tuesday"}}
    h.openai.set_script(
        [{"tool_calls": [check], "content": "Let me check the calendar."}, "On Tuesday I have {tool_output}"]
    )
    greeting = await h.twilio.incoming_call(CALL)
    twiml = await h.twilio.say(greeting, CALL, "Is Tuesday free?")
    assert twiml.status == 200 and len(twiml.plays) == 1, twiml.text
    assert "Let me check" not in h.speech.syntheses[-1].text
    assistant = h.openai.requests[-1].body["messages"][-2]
    assert assistant["content"] == "Let me check the calendar." and assistant["tool_calls"]
    [stored] = [m for m in await h.store.get_history(CALL) if m.get("tool_calls")]
    assert stored["content"] is None
