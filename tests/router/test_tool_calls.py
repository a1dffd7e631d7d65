"""The agent's tools: the profile's ``tools`` section, and ``ToolRunner`` calling a tool tool_backend over a real
socket, including every way a call can go wrong (each becomes an error output the model can speak about)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from emulators.tool_backend import ToolBackendEmulator
from router.agent_profile import AgentProfile, AgentTool
from router.observability import Metrics
from router.tool_calls import ToolCall, ToolRunner

DAY_SCHEMA = {"type": "object", "properties": {"day": {"type": "string"}}, "required": ["day"]}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


def tool(tool_backend: ToolBackendEmulator, name: str = "check_availability", **extra: Any) -> AgentTool:
    return AgentTool.model_validate(
        {
            "name": name,
            "description": "d",
            "parameters": DAY_SCHEMA,
            "url": tool_backend.tool_url(name),
            **extra,
        }
    )


def call(name: str = "check_availability", arguments: str = '{"day": "Tuesday"}') -> ToolCall:
    return ToolCall(call_id="call_1", name=name, arguments=arguments)


# The profile -------------------------------------------------------------------------------------------


def test_profile_loads_tools_with_headers_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "instructions: help\n"
        "tool_choice: required\n"
        "tools:\n"
        "  - name: check_availability\n"
        "    description: Free slots on a day\n"
        "    parameters: {type: object, properties: {day: {type: string}}}\n"
        "    url: https://booking.example.com/tools/check\n"
        "    timeout_seconds: 2.5\n"
        "    headers: {Authorization: 'Bearer ${BOOKING_KEY}'}\n"
    )
    profile = AgentProfile.load(path, environ={"BOOKING_KEY": "s3cret"})
    assert profile.tool_choice == "required"
    [loaded] = profile.tools
    assert loaded.name == "check_availability"
    assert loaded.timeout_seconds == 2.5
    assert loaded.headers == {"Authorization": "Bearer s3cret"}


def test_profile_with_a_missing_secret_fails_start_up(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "instructions: help\ntools:\n  - name: t\n    url: https://x.example/t\n    headers: {K: '${NOPE}'}\n"
    )
    with pytest.raises(ValidationError, match=r"\$\{NOPE\}"):
        AgentProfile.load(path, environ={})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "has space"}, "should match pattern"),
        ({"name": "x" * 65}, "should match pattern"),
        ({"url": "ftp://x.example/t"}, "http"),
        ({"url": "/relative"}, "http"),
        ({"parameters": {"type": "string"}}, "type"),
        (
            {"parameters": {"type": "object", "properties": {"day": {"type": "weekday"}}}},
            "not a valid JSON Schema, at properties/day/type",
        ),
        ({"parameters": {"type": "object", "required": "day"}}, "at required: 'day' is not of type 'array'"),
        ({"parameters": {"type": "object", "$schema": ["draft"]}}, "not a valid JSON Schema: TypeError"),
        ({"timeout_seconds": 0}, "greater than 0"),
        ({"unknown": 1}, "Extra inputs"),
    ],
)
def test_profile_refuses_a_bad_tool(change: dict[str, Any], message: str) -> None:
    spec = {"name": "t", "url": "https://x.example/t", **change}
    with pytest.raises(ValidationError, match=message):
        AgentProfile.model_validate({"instructions": "i", "tools": [spec]})


@pytest.mark.parametrize(
    "ref",
    [
        "#/$defs/weekday",  # a typo'd or missing definition: every call reaching it would fail
        "https://schemas.example/weekday.json",  # another document: jsonschema would download it per call
    ],
)
def test_profile_refuses_a_ref_that_does_not_resolve_within_the_schema(ref: str) -> None:
    """``check_schema`` does not follow ``$ref``; validation does, only when a call's arguments reach it."""
    parameters = {
        "type": "object",
        "properties": {"day": {"$ref": ref}},
        "$defs": {"day": {"type": "string"}},
    }
    spec = {"name": "t", "url": "https://x.example/t", "parameters": parameters}
    with pytest.raises(ValidationError, match="does not resolve within it"):
        AgentProfile.model_validate({"instructions": "i", "tools": [spec]})


async def test_a_ref_to_the_schemas_own_definitions_is_followed(
    tool_backend: ToolBackendEmulator, client: httpx.AsyncClient
) -> None:
    parameters = {
        "type": "object",
        "properties": {"day": {"$ref": "#/$defs/day"}},
        "required": ["day"],
        "$defs": {"day": {"type": "string"}},
    }
    runner = ToolRunner([tool(tool_backend, parameters=parameters)], client)
    assert (await runner.run(call(), call_sid="CA1", pipeline="x")).ok
    refused = await runner.run(call(arguments='{"day": 3}'), call_sid="CA1", pipeline="x")
    assert (refused.ok, refused.error) == (False, "bad_arguments")


def test_profile_refuses_duplicate_tool_names() -> None:
    spec = {"name": "t", "url": "https://x.example/t"}
    with pytest.raises(ValidationError, match="unique: t"):
        AgentProfile.model_validate({"instructions": "i", "tools": [spec, spec]})


def test_default_profile_has_no_tools_and_loads() -> None:
    profile = AgentProfile.load(Path("router/default_agent.yaml"))
    assert profile.tool_choice == "auto"


# Tool definitions as each API wants them ------------------------------------------------------------------


async def test_definitions_in_chat_and_session_shapes(
    tool_backend: ToolBackendEmulator, client: httpx.AsyncClient
) -> None:
    runner = ToolRunner([tool(tool_backend)], client)
    assert runner.chat_tools() == [
        {
            "type": "function",
            "function": {"name": "check_availability", "description": "d", "parameters": DAY_SCHEMA},
        }
    ]
    assert runner.session_tools() == [
        {"type": "function", "name": "check_availability", "description": "d", "parameters": DAY_SCHEMA}
    ]
    assert runner and not ToolRunner([], client)


# Running a call ----------------------------------------------------------------------------------------


async def test_a_call_posts_the_arguments_and_returns_the_answer(
    tool_backend: ToolBackendEmulator, client: httpx.AsyncClient
) -> None:
    metrics = Metrics(CollectorRegistry())
    runner = ToolRunner([tool(tool_backend, headers={"X-Api-Key": "k1"})], client, metrics=metrics)
    result = await runner.run(call(), call_sid="CA1", pipeline="legacy", turn=4)
    assert result.ok and result.error is None
    assert orjson.loads(result.output) == {"day": "Tuesday", "free_slots": ["09:30", "11:00", "14:30"]}
    sent = tool_backend.calls[-1]
    assert sent["body"] == {
        "tool": "check_availability",
        "call_id": "call_1",
        "call_sid": "CA1",
        "pipeline": "legacy",
        "turn": 4,
        "arguments": {"day": "Tuesday"},
    }
    assert sent["headers"]["x-api-key"] == "k1"
    assert result.record() == {"name": "check_availability", "ms": round(result.ms, 1), "ok": True}
    observed = metrics.registry.get_sample_value(
        "voice_router_tool_call_seconds_count",
        {"pipeline": "legacy", "tool": "check_availability", "result": "ok"},
    )
    assert observed == 1.0


@pytest.mark.parametrize(
    ("name", "arguments", "error"),
    [
        ("no_such_tool", "{}", "unknown_tool"),
        ("check_availability", "{not json", "bad_arguments"),
        ("check_availability", "[1, 2]", "bad_arguments"),
        ("check_availability", "{}", "bad_arguments"),  # the schema requires a day
        ("check_availability", '{"day": 3}', "bad_arguments"),
    ],
)
async def test_calls_that_never_reach_the_backend(
    tool_backend: ToolBackendEmulator, client: httpx.AsyncClient, name: str, arguments: str, error: str
) -> None:
    before = len(tool_backend.calls)
    metrics = Metrics(CollectorRegistry())
    runner = ToolRunner([tool(tool_backend)], client, metrics=metrics)
    result = await runner.run(call(name, arguments), call_sid="CA1", pipeline="x")
    assert not result.ok and result.error == error
    assert "error" in orjson.loads(result.output)
    assert len(tool_backend.calls) == before
    # A name the model made up is not a label value: the metric's series stay bounded by the profile.
    label = name if name == "check_availability" else "unknown"
    labels = {"pipeline": "x", "tool": label, "result": error}
    assert metrics.registry.get_sample_value("voice_router_tool_call_seconds_count", labels) == 1.0


async def test_an_http_error_becomes_an_error_output(
    tool_backend: ToolBackendEmulator, client: httpx.AsyncClient
) -> None:
    tool_backend.set_faults(fail_next=1, fail_status=503)
    result = await ToolRunner([tool(tool_backend)], client).run(call(), call_sid="CA1", pipeline="legacy")
    assert (result.ok, result.error) == (False, "http_503")
    assert orjson.loads(result.output) == {"error": "the tool failed (HTTP 503)"}
    assert result.record()["error"] == "http_503"


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        ("{}", "'day' is a required property"),
        ('{"day": 3}', "day: 3 is not of type 'string'"),
    ],
)
async def test_arguments_that_do_not_match_the_schema_are_answered_with_the_reason(
    tool_backend: ToolBackendEmulator, client: httpx.AsyncClient, arguments: str, reason: str
) -> None:
    """The model reads why and can call again with what the schema asks for."""
    result = await ToolRunner([tool(tool_backend)], client).run(
        call(arguments=arguments), call_sid="CA1", pipeline="x"
    )
    expected = f"the arguments do not match the tool's parameters ({reason})"
    assert orjson.loads(result.output) == {"error": expected}


async def test_why_the_arguments_miss_the_schema_is_short_even_for_a_long_value(
    tool_backend: ToolBackendEmulator, client: httpx.AsyncClient
) -> None:
    """jsonschema's message quotes the offending value whole (a non-printable character four to six times
    over): the model is told the verdict, not sent its own runaway value back."""
    parameters = {"type": "object", "properties": {"day": {"type": "string", "maxLength": 20}}}
    runner = ToolRunner([tool(tool_backend, parameters=parameters)], client)
    arguments = orjson.dumps({"day": "\u200b" * 15_000}).decode()
    result = await runner.run(call(arguments=arguments), call_sid="CA1", pipeline="x")
    assert (result.ok, result.error) == (False, "bad_arguments")
    message = orjson.loads(result.output)["error"]
    assert len(message) < 500, len(message)
    assert message.startswith("the arguments do not match the tool's parameters (day: ")
    assert message.endswith("is too long)")


async def test_long_arguments_are_checked_off_the_event_loop(
    tool_backend: ToolBackendEmulator, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some schemas cost time that grows fast with the value (uniqueItems over objects): a long value is
    checked in a thread, so the other calls on the worker's loop go on; a few fields stay on the loop."""
    threaded: list[str] = []
    real_to_thread = asyncio.to_thread

    async def to_thread(function: Any, /, *args: Any) -> Any:
        threaded.append(function.__name__)
        return await real_to_thread(function, *args)

    monkeypatch.setattr("router.tool_calls.asyncio.to_thread", to_thread)
    parameters = {"type": "object", "properties": {"day": {"type": "string", "maxLength": 20}}}
    runner = ToolRunner([tool(tool_backend, parameters=parameters)], client)
    short = await runner.run(call(arguments='{"day": "' + "x" * 30 + '"}'), call_sid="CA1", pipeline="x")
    assert short.error == "bad_arguments" and threaded == []
    long = await runner.run(call(arguments='{"day": "' + "x" * 2000 + '"}'), call_sid="CA1", pipeline="x")
    assert long.error == "bad_arguments" and threaded == ["_first_mismatch"]
    assert orjson.loads(long.output)["error"].endswith("is too long)")


async def test_arguments_nested_past_the_validators_depth_are_bad_arguments(
    tool_backend: ToolBackendEmulator, client: httpx.AsyncClient
) -> None:
    """A recursive schema follows the value down: a value nested deep enough exhausts the recursion limit,
    which is the model's runaway arguments, not a failure of the tool."""
    parameters = {"type": "object", "properties": {"a": {"$ref": "#"}}}
    runner = ToolRunner([tool(tool_backend, parameters=parameters)], client)
    depth = 900
    arguments = '{"a": ' * depth + "{}" + "}" * depth
    result = await runner.run(call(arguments=arguments), call_sid="CA1", pipeline="x")
    assert (result.error, orjson.loads(result.output)) == (
        "bad_arguments",
        {"error": "the arguments are nested too deeply"},
    )


async def test_a_backend_refusal_passes_its_reason_to_the_model(
    tool_backend: ToolBackendEmulator, client: httpx.AsyncClient
) -> None:
    """With the schema check off the backend judges the arguments: its 4xx message (``{"error": …}``) is what
    the model needs to correct them; a 5xx's is not (the model cannot fix the backend)."""
    runner = ToolRunner([tool(tool_backend, validate_arguments=False)], client)
    before = len(tool_backend.calls)
    refused = await runner.run(call(arguments="{}"), call_sid="CA1", pipeline="x")
    assert len(tool_backend.calls) == before + 1, "the call reached the backend"
    assert (refused.ok, refused.error) == (False, "http_422")
    assert orjson.loads(refused.output) == {"error": "the tool refused the call (HTTP 422): day is required"}
    tool_backend.set_faults(fail_next=1, fail_status=500)
    failed = await runner.run(call(), call_sid="CA1", pipeline="x")
    assert orjson.loads(failed.output) == {"error": "the tool failed (HTTP 500)"}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"message": "' + b"x" * 500 + b'"}', "the tool refused the call (HTTP 400): " + "x" * 300),
        (b'{"detail": "no such slot"}', "the tool refused the call (HTTP 400): no such slot"),
        (b"<html><body>Bad Request</body></html>", "the tool failed (HTTP 400)"),
        (b'{"error": {"code": 7}}', "the tool failed (HTTP 400)"),
        (b'["not", "an", "object"]', "the tool failed (HTTP 400)"),
    ],
)
async def test_only_a_short_json_reason_of_a_refusal_reaches_the_model(body: bytes, expected: str) -> None:
    """An HTML error page or a structured error is not read to the model; a long reason is cut."""

    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, content=body)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as mocked:
        spec = AgentTool.model_validate({"name": "t", "url": "https://backend.example/t"})
        result = await ToolRunner([spec], mocked).run(call("t", "{}"), call_sid="CA1", pipeline="x")
    assert (result.error, orjson.loads(result.output)) == ("http_400", {"error": expected})


async def test_a_slow_tool_is_abandoned_at_its_timeout(
    tool_backend: ToolBackendEmulator, client: httpx.AsyncClient
) -> None:
    tool_backend.set_faults(stall_next=1, stall_s=1.0)
    runner = ToolRunner([tool(tool_backend, timeout_seconds=0.3)], client)
    result = await runner.run(call(), call_sid="CA1", pipeline="realtime")
    assert (result.ok, result.error) == (False, "timeout")
    assert 250 <= result.ms < 3000
    assert "0.3 s" in orjson.loads(result.output)["error"]


async def test_an_oversized_answer_is_refused_not_cut(
    tool_backend: ToolBackendEmulator, client: httpx.AsyncClient
) -> None:
    tool_backend.set_faults(oversize_next=1, oversize_bytes=20_000)
    result = await ToolRunner([tool(tool_backend)], client).run(call(), call_sid="CA1", pipeline="legacy")
    assert (result.ok, result.error) == (False, "too_large")


async def test_an_unreachable_tool(client: httpx.AsyncClient) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dead = AgentTool(name="t", url=f"http://127.0.0.1:{port}/t")
    result = await ToolRunner([dead], client).run(call("t"), call_sid="CA1", pipeline="legacy")
    assert (result.ok, result.error) == (False, "unreachable")


async def test_calls_of_one_answer_run_side_by_side(
    tool_backend: ToolBackendEmulator, client: httpx.AsyncClient
) -> None:
    tool_backend.set_faults(delay_s=1.0)
    runner = ToolRunner([tool(tool_backend), tool(tool_backend, "book_appointment")], client)
    calls = [
        ToolCall("call_a", "check_availability", '{"day": "Monday"}'),
        ToolCall("call_b", "book_appointment", '{"day": "Monday", "time": "11:00"}'),
    ]
    started = asyncio.get_running_loop().time()
    results = await runner.run_all(calls, call_sid="CA1", pipeline="legacy")
    elapsed = asyncio.get_running_loop().time() - started
    assert [r.call_id for r in results] == ["call_a", "call_b"]
    assert all(r.ok for r in results)
    assert orjson.loads(results[1].output)["booked"] is True
    assert elapsed < 1.8  # one delay of 1 s, not two


async def test_a_redirect_is_not_an_answer(
    tool_backend: ToolBackendEmulator, client: httpx.AsyncClient
) -> None:
    tool_backend.set_faults(fail_next=1, fail_status=302)
    result = await ToolRunner([tool(tool_backend)], client).run(call(), call_sid="CA1", pipeline="legacy")
    assert (result.ok, result.error) == (False, "http_302")


async def test_runaway_arguments_are_not_forwarded(
    tool_backend: ToolBackendEmulator, client: httpx.AsyncClient
) -> None:
    before = len(tool_backend.calls)
    huge = orjson.dumps({"day": "x" * 20_000}).decode()
    result = await ToolRunner([tool(tool_backend)], client).run(
        call(arguments=huge), call_sid="CA1", pipeline="x"
    )
    assert (result.ok, result.error) == (False, "bad_arguments")
    assert len(tool_backend.calls) == before


async def test_one_answer_calls_at_most_eight_tools(
    tool_backend: ToolBackendEmulator, client: httpx.AsyncClient
) -> None:
    before = len(tool_backend.calls)
    calls = [ToolCall(f"call_{n}", "check_availability", '{"day": "Monday"}') for n in range(11)]
    results = await ToolRunner([tool(tool_backend)], client).run_all(calls, call_sid="CA1", pipeline="legacy")
    assert [r.call_id for r in results] == [f"call_{n}" for n in range(11)]
    assert [r.ok for r in results] == [True] * 8 + [False] * 3
    assert {r.error for r in results[8:]} == {"too_many_calls"}
    assert len(tool_backend.calls) == before + 8


async def test_an_unexpected_error_is_still_an_answer(tool_backend: ToolBackendEmulator) -> None:
    """Whatever goes wrong inside the call (here the transport raises something httpx does not wrap), the
    model gets an error output: a bridge or a turn waiting for the answer is never left without one."""

    def broken(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("transport bug")

    async with httpx.AsyncClient(transport=httpx.MockTransport(broken)) as broken_client:
        result = await ToolRunner([tool(tool_backend)], broken_client).run(
            call(), call_sid="CA1", pipeline="x"
        )
    assert (result.ok, result.error) == (False, "error")
    assert orjson.loads(result.output) == {"error": "the tool failed"}
