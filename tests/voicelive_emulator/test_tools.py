"""Function calling: scripted tool calls, client function outputs, and ``{tool_output}`` in the next reply."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from emulators.voicelive import Faults, VoiceLiveEmulator, VoiceLiveEmulatorConfig
from emulators.voicelive.__main__ import config_from_args, parse_args
from emulators.voicelive.script import TOOL_FALLBACK_TEXT
from tests.voicelive_emulator.client import Client, types, ulaw_session

CHECK = {
    "type": "function",
    "name": "check_availability",
    "description": "Free appointment slots on a day.",
    "parameters": {"type": "object", "properties": {"day": {"type": "string"}}, "required": ["day"]},
}
BOOK = {"type": "function", "name": "book", "parameters": {"type": "object", "properties": {}}}
CALL_CHECK = {"tool_calls": [{"name": "check_availability", "arguments": {"day": "Tuesday"}}]}
FOLLOW_UP = "We have {tool_output} open. Shall I book it?"

FUNCTION_CALL_ORDER = [
    "response.created",
    "rate_limits.updated",
    "response.output_item.added",
    "conversation.item.created",
]


@pytest.fixture
def script() -> tuple[Any, ...]:
    return (CALL_CHECK, FOLLOW_UP)


@pytest.fixture
def emulator(script: tuple[Any, ...]) -> Iterator[VoiceLiveEmulator]:
    config = VoiceLiveEmulatorConfig(replies=script, faults=Faults(first_audio_ms=0, pace=0))
    with VoiceLiveEmulator(config) as running:
        yield running


async def tool_session(emulator: VoiceLiveEmulator, **extra: Any) -> Client:
    """A μ-law session without VAD (the client drives responses) offering ``check_availability``."""
    session: dict[str, Any] = {"tools": [CHECK], "turn_detection": None, **extra}
    return await ulaw_session(emulator, **session)


async def respond(client: Client, **options: Any) -> list[dict[str, Any]]:
    event: dict[str, Any] = {"type": "response.create"}
    if options:
        event["response"] = options
    await client.send(event)
    return await client.until("response.done")


async def nothing_more(client: Client, wait_s: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        await client.recv(wait_s)


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


async def test_function_call_response_event_order_and_fields(emulator: VoiceLiveEmulator) -> None:
    client = await tool_session(emulator)
    events = await respond(client)
    names = types(events)
    deltas = of_type(events, "response.function_call_arguments.delta")
    assert len(deltas) > 1
    assert names == [
        *FUNCTION_CALL_ORDER,
        *["response.function_call_arguments.delta"] * len(deltas),
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.done",
    ]
    response_id = events[0]["response"]["id"]
    added = events[2]
    item = added["item"]
    assert added["output_index"] == 0 and added["response_id"] == response_id
    assert item == {
        "id": item["id"],
        "object": "realtime.item",
        "type": "function_call",
        "status": "in_progress",
        "name": "check_availability",
        "call_id": item["call_id"],
        "arguments": "",
    }
    assert item["call_id"].startswith("call_") and len(item["call_id"]) > len("call_")
    created = events[3]
    assert created["item"] == item and created["previous_item_id"] is None

    arguments = '{"day":"Tuesday"}'
    ids = {"response_id": response_id, "item_id": item["id"], "output_index": 0, "call_id": item["call_id"]}
    for delta in deltas:
        assert set(delta) == {"event_id", "type", "delta", *ids}
        assert {k: delta[k] for k in ids} == ids
    args_done = events[-3]
    assert "".join(d["delta"] for d in deltas) == args_done["arguments"] == arguments
    assert args_done == {**args_done, **ids, "name": "check_availability"}
    assert orjson.loads(args_done["arguments"]) == {"day": "Tuesday"}

    final_item = events[-2]["item"]
    assert final_item == {**item, "status": "completed", "arguments": arguments}
    assert events[-2]["output_index"] == 0
    done = events[-1]["response"]
    assert (done["id"], done["status"], done["status_details"]) == (response_id, "completed", None)
    assert done["output"] == [final_item]
    usage = done["usage"]
    text_tokens = math.ceil(len(arguments) / 4)
    assert usage["output_token_details"] == {"text_tokens": text_tokens, "audio_tokens": 0}
    assert usage["output_tokens"] == text_tokens
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert not any(n.startswith(("response.audio", "response.content_part", "response.text")) for n in names)
    await nothing_more(client)
    await client.ws.close()


@pytest.mark.parametrize(
    "script",
    [
        (
            {
                "tool_calls": [
                    {"name": "check_availability", "arguments": {"day": "Tuesday"}},
                    {"name": "book", "arguments": '{"day": "Tuesday", "time": "10:00"}'},
                ]
            },
        )
    ],
)
async def test_two_calls_in_one_response(emulator: VoiceLiveEmulator) -> None:
    client = await tool_session(emulator, tools=[CHECK, BOOK])
    events = await respond(client)
    added = of_type(events, "response.output_item.added")
    dones = of_type(events, "response.function_call_arguments.done")
    assert [a["output_index"] for a in added] == [0, 1]
    assert [d["name"] for d in dones] == ["check_availability", "book"]
    assert dones[1]["arguments"] == '{"day": "Tuesday", "time": "10:00"}'  # a JSON string goes out verbatim
    first, second = (a["item"] for a in added)
    assert first["call_id"] != second["call_id"] and first["id"] != second["id"]
    for index, item in enumerate((first, second)):
        deltas = [
            d["delta"]
            for d in of_type(events, "response.function_call_arguments.delta")
            if d["item_id"] == item["id"]
        ]
        assert "".join(deltas) == dones[index]["arguments"]
        assert {d["output_index"] for d in events if d.get("item_id") == item["id"]} == {index}
    created = of_type(events, "conversation.item.created")
    assert created[1]["previous_item_id"] == first["id"]
    # the first call is finished before the second begins
    names = types(events)
    assert names.index("response.output_item.done") < names.index("response.output_item.added", 3)
    done = events[-1]["response"]
    assert [o["call_id"] for o in done["output"]] == [first["call_id"], second["call_id"]]
    assert all(o["status"] == "completed" for o in done["output"])
    await client.ws.close()


async def test_tool_not_offered_speaks_the_fallback(emulator: VoiceLiveEmulator) -> None:
    client = await ulaw_session(emulator, turn_detection=None)  # no tools
    events = await respond(client)
    assert "response.function_call_arguments.delta" not in types(events)
    assert of_type(events, "response.audio_transcript.done")[0]["transcript"] == TOOL_FALLBACK_TEXT
    assert of_type(events, "response.audio.delta")
    assert emulator.sessions[0].function_calls_emitted == 0
    await client.ws.close()


@pytest.mark.parametrize("tool_choice", ["none", {"type": "function", "name": "book"}])
async def test_tool_choice_that_rules_the_call_out_speaks_the_fallback(
    emulator: VoiceLiveEmulator, tool_choice: Any
) -> None:
    client = await tool_session(emulator, tools=[CHECK, BOOK], tool_choice=tool_choice)
    events = await respond(client)
    assert of_type(events, "response.audio_transcript.done")[0]["transcript"] == TOOL_FALLBACK_TEXT
    await client.ws.close()


async def test_tools_offered_by_response_create_options(emulator: VoiceLiveEmulator) -> None:
    client = await ulaw_session(emulator, turn_detection=None)
    events = await respond(client, tools=[CHECK], tool_choice="required")
    assert of_type(events, "response.function_call_arguments.done")[0]["name"] == "check_availability"
    await client.ws.close()


async def test_function_output_with_unknown_call_id_is_an_error(emulator: VoiceLiveEmulator) -> None:
    client = await tool_session(emulator)
    await client.send(
        {
            "type": "conversation.item.create",
            "event_id": "out1",
            "item": {"type": "function_call_output", "call_id": "call_nope", "output": "{}"},
        }
    )
    error = await client.recv()
    assert error["type"] == "error"
    body = error["error"]
    assert (body["type"], body["code"], body["param"], body["event_id"]) == (
        "invalid_request_error",
        "invalid_value",
        "item.call_id",
        "out1",
    )
    assert "call_nope" in body["message"]
    assert emulator.sessions[0].function_outputs_received == 0
    await client.ws.close()


async def test_function_output_must_be_a_string(emulator: VoiceLiveEmulator) -> None:
    client = await tool_session(emulator)
    call_id = of_type(await respond(client), "response.output_item.done")[0]["item"]["call_id"]
    await client.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": call_id, "output": {"slots": []}},
        }
    )
    error = (await client.recv())["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "invalid_type",
        "item.output",
    )
    await client.ws.close()


async def test_follow_up_response_speaks_the_tool_output(emulator: VoiceLiveEmulator) -> None:
    client = await tool_session(emulator)
    first = await respond(client)
    call = of_type(first, "response.output_item.done")[0]["item"]
    output = orjson.dumps({"slots": ["Tuesday 10:00"]}).decode()
    await client.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": call["call_id"], "output": output},
        }
    )
    created = await client.recv()
    assert created["type"] == "conversation.item.created"
    assert created["previous_item_id"] == call["id"]
    assert created["item"] == {
        "id": created["item"]["id"],
        "object": "realtime.item",
        "status": "completed",
        "type": "function_call_output",
        "call_id": call["call_id"],
        "output": output,
    }
    second = await respond(client)
    spoken = FOLLOW_UP.replace("{tool_output}", output)
    assert of_type(second, "response.audio_transcript.done")[0]["transcript"] == spoken
    assert "".join(d["delta"] for d in of_type(second, "response.audio_transcript.delta")) == spoken
    assert second[-1]["response"]["status"] == "completed"

    record = emulator.sessions[0]
    assert record.function_calls_emitted == 1
    assert record.function_calls == [
        {
            "id": call["id"],
            "name": "check_availability",
            "call_id": call["call_id"],
            "arguments": '{"day":"Tuesday"}',
            "status": "completed",
        }
    ]
    assert record.function_outputs_received == 1
    assert record.function_outputs == [
        {"item_id": created["item"]["id"], "call_id": call["call_id"], "output": output}
    ]
    state = emulator.state_dict()["sessions"][0]
    assert state["function_outputs"][0]["output"] == output and state["function_calls_emitted"] == 1
    await client.ws.close()


@pytest.mark.parametrize("script", [(FOLLOW_UP,)])
async def test_placeholder_without_any_output_is_empty(emulator: VoiceLiveEmulator) -> None:
    client = await ulaw_session(emulator, turn_detection=None)
    events = await respond(client)
    assert of_type(events, "response.audio_transcript.done")[0]["transcript"] == FOLLOW_UP.replace(
        "{tool_output}", ""
    )
    await client.ws.close()


async def test_client_replays_a_function_call_and_its_output(emulator: VoiceLiveEmulator) -> None:
    client = await tool_session(emulator)
    replayed = {
        "type": "function_call",
        "name": "check_availability",
        "call_id": "call_old",
        "arguments": "{}",
    }
    await client.send({"type": "conversation.item.create", "item": replayed})
    created = await client.recv()
    assert created["type"] == "conversation.item.created"
    assert created["item"] == {**created["item"], **replayed}
    await client.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": "call_old", "output": "Tuesday 10:00"},
        }
    )
    assert (await client.recv())["type"] == "conversation.item.created"
    await client.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call", "name": 7, "call_id": "call_bad", "arguments": "{}"},
        }
    )
    error = (await client.recv())["error"]
    assert (error["code"], error["param"]) == ("invalid_type", "item.name")
    await client.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call", "name": "book", "call_id": "c"},
        }
    )
    error = (await client.recv())["error"]
    assert (error["code"], error["param"]) == ("missing_required_parameter", "item.arguments")
    record = emulator.sessions[0]
    assert record.client_function_calls == [
        {"id": created["item"]["id"], "name": "check_availability", "call_id": "call_old", "arguments": "{}"}
    ]
    assert record.function_outputs[0]["output"] == "Tuesday 10:00"
    assert record.function_calls_emitted == 0
    await client.ws.close()


@pytest.mark.parametrize(
    "script", [({"tool_calls": [{"name": "check_availability", "arguments": {"day": "Tuesday" * 20}}]},)]
)
async def test_cancel_mid_function_call_ends_with_one_cancelled_done(emulator: VoiceLiveEmulator) -> None:
    emulator.faults.update(delta_delay_ms=30)
    client = await tool_session(emulator)
    await client.send({"type": "response.create"})
    events = await client.until("response.function_call_arguments.delta")
    await client.send({"type": "response.cancel"})
    events += await client.until("response.done")
    await nothing_more(client)
    names = types(client.received)
    assert names.count("response.done") == 1
    done = events[-1]["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    assert names[-3:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.done",
    ]
    sent = "".join(d["delta"] for d in of_type(events, "response.function_call_arguments.delta"))
    args_done = of_type(events, "response.function_call_arguments.done")[0]
    assert args_done["arguments"] == sent and 0 < len(sent) < len('{"day":""}') + 7 * 20
    item = of_type(events, "response.output_item.done")[0]["item"]
    assert (item["status"], item["arguments"]) == ("incomplete", sent)
    assert done["output"] == [item]
    assert emulator.sessions[0].function_calls[0]["status"] == "incomplete"
    assert emulator.sessions[0].responses[done["id"]] == "cancelled"
    await client.ws.close()


@pytest.mark.parametrize(
    "script", [({"tool_calls": [{"name": "check_availability", "arguments": {"day": "Tuesday" * 20}}]},)]
)
async def test_barge_in_cancels_a_function_call_response(emulator: VoiceLiveEmulator) -> None:
    emulator.faults.update(delta_delay_ms=30)
    client = await ulaw_session(emulator, tools=[CHECK])
    await client.speak()
    await client.until("response.function_call_arguments.delta")
    await client.speak(seed=1)
    events = await client.until("response.done")
    done = events[-1]["response"]
    assert (done["status"], done["status_details"]["reason"]) == ("cancelled", "turn_detected")
    assert types(client.received).count("response.done") == 1
    await client.ws.close()


async def test_error_fault_fails_a_function_call_response(emulator: VoiceLiveEmulator) -> None:
    emulator.faults.update(error_after_deltas=1)
    client = await tool_session(emulator)
    events = await respond(client)
    assert len(of_type(events, "response.function_call_arguments.delta")) == 1
    assert of_type(events, "error")[0]["error"]["type"] == "server_error"
    assert events[-1]["response"]["status"] == "failed"
    assert of_type(events, "response.output_item.done")[0]["item"]["status"] == "incomplete"
    await client.ws.close()


async def test_close_fault_mid_function_call(emulator: VoiceLiveEmulator) -> None:
    emulator.faults.update(close_after_deltas=1, close_code=1011)
    client = await tool_session(emulator)
    await client.send({"type": "response.create"})
    await client.until("response.function_call_arguments.delta")
    await asyncio.wait_for(client.ws.wait_closed(), 5)
    assert client.ws.close_code == 1011
    assert "response.done" not in emulator.sessions[0].server_events


async def test_output_token_limit_makes_a_function_call_incomplete(emulator: VoiceLiveEmulator) -> None:
    client = await tool_session(emulator, max_response_output_tokens=2)
    events = await respond(client)
    done = events[-1]["response"]
    assert done["status_details"] == {"type": "incomplete", "reason": "max_output_tokens"}
    assert done["usage"]["output_tokens"] <= 2
    assert done["output"][0]["status"] == "incomplete"


def test_cli_reply_json_entries_keep_their_order() -> None:
    args = parse_args(
        ["--reply", "Hi.", "--reply-json", orjson.dumps(CALL_CHECK).decode(), "--reply-json", '"Bye."']
    )
    assert config_from_args(args).replies == ("Hi.", CALL_CHECK, "Bye.")
    with pytest.raises(SystemExit):
        parse_args(["--reply-json", '{"tool_calls": [{"arguments": {}}]}'])


@pytest.mark.parametrize(
    "entry",
    [
        {"tool_calls": []},
        {"tool_calls": [{"name": "x", "arguments": "{not json"}]},
        {"tool_calls": [{"name": "x", "arguments": 3}]},
        {"calls": [{"name": "x"}]},
        42,
    ],
)
def test_bad_script_entries_are_refused_at_config_time(entry: Any) -> None:
    with pytest.raises(ValueError, match=r"replies\[1\]"):
        VoiceLiveEmulatorConfig(replies=("Hello.", entry))


@pytest.mark.parametrize("script", [("Just words.",)])
@pytest.mark.parametrize(
    ("tool_choice", "called"),
    [("required", "check_availability"), ({"type": "function", "name": "book"}, "book")],
)
async def test_a_forcing_tool_choice_makes_a_text_entry_a_call(
    emulator: VoiceLiveEmulator, tool_choice: Any, called: str
) -> None:
    """A model made to call a tool always calls one: a client that leaves "required" on after the tools
    have answered gets another call, as it would from the service, not the spoken text."""
    client = await tool_session(emulator, tools=[CHECK, BOOK], tool_choice=tool_choice)
    events = await respond(client)
    [done] = of_type(events, "response.function_call_arguments.done")
    assert (done["name"], done["arguments"]) == (called, "{}")
    assert not of_type(events, "response.audio.delta")
    # The same text entry with the choice lifted for this response is spoken.
    events = await respond(client, tool_choice="auto")
    assert of_type(events, "response.audio_transcript.done")[0]["transcript"] == "Just words."
    await client.ws.close()
