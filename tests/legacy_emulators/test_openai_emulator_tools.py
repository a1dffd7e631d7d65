"""Function tools in the OpenAI emulator, driven by the real ``openai`` SDK over loopback."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any, cast

import httpx
import openai
import pytest
from openai import AsyncAzureOpenAI, AsyncOpenAI, AsyncStream
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
    ChatCompletionToolParam,
)

from emulators.openai import TOOL_UNAVAILABLE_REPLY, OpenAIEmulator, tokenize
from emulators.openai.__main__ import parse_args

KEY = "sk-test-key"
ASK: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You are a receptionist."},
    {"role": "user", "content": "Is there a table on Tuesday?"},
]
TOOLS: list[ChatCompletionToolParam] = [
    {
        "type": "function",
        "function": {
            "name": "check_availability",
            "description": "Free tables on a day.",
            "parameters": {"type": "object", "properties": {"day": {"type": "string"}}, "required": ["day"]},
        },
    },
    {
        "type": "function",
        "function": {"name": "book_table", "parameters": {"type": "object", "properties": {}}},
    },
]
CHECK = {"tool_calls": [{"name": "check_availability", "arguments": {"day": "Tuesday"}}]}
CHECK_ARGS = '{"day":"Tuesday"}'


@pytest.fixture
def emulator() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator(api_key=KEY) as emu:
        yield emu


def oai(emu: OpenAIEmulator, timeout: float = 10) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=emu.openai_base_url, api_key=KEY, max_retries=0, timeout=timeout)


def azure(emu: OpenAIEmulator) -> AsyncAzureOpenAI:
    return AsyncAzureOpenAI(
        azure_endpoint=emu.url, api_key=KEY, api_version="2024-10-21", max_retries=0, timeout=10
    )


def function_calls(result: ChatCompletion) -> list[ChatCompletionMessageFunctionToolCall]:
    """The function tool calls of a non-streamed answer (the SDK also knows "custom" tool calls)."""
    calls = result.choices[0].message.tool_calls
    assert calls is not None
    assert all(isinstance(call, ChatCompletionMessageFunctionToolCall) for call in calls)
    return cast(list[ChatCompletionMessageFunctionToolCall], calls)


class Streamed:
    """What a client accumulates from a streamed tool-call response."""

    def __init__(self) -> None:
        self.calls: dict[int, dict[str, str]] = {}
        self.chunks: list[ChatCompletionChunk] = []
        self.finishes: list[str] = []
        self.fragments = 0
        self.usage: Any = None

    async def read(self, stream: AsyncStream[ChatCompletionChunk]) -> Streamed:
        async for chunk in stream:
            self.chunks.append(chunk)
            if chunk.usage is not None:
                self.usage = chunk.usage
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            if choice.finish_reason:
                self.finishes.append(choice.finish_reason)
            for delta in choice.delta.tool_calls or []:
                call = self.calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                if delta.id:
                    call["id"] = delta.id
                if delta.function and delta.function.name:
                    call["name"] = delta.function.name
                if delta.function and delta.function.arguments:
                    call["arguments"] += delta.function.arguments
                    self.fragments += 1
        return self

    @property
    def ordered(self) -> list[dict[str, str]]:
        return [self.calls[i] for i in sorted(self.calls)]


def answered(calls: list[dict[str, str]], outputs: list[str]) -> list[ChatCompletionMessageParam]:
    """``ASK`` followed by the assistant's tool calls and one tool message per call."""
    messages: list[ChatCompletionMessageParam] = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": c["name"], "arguments": c["arguments"]},
                }
                for c in calls
            ],
        },
    ]
    for call, output in zip(calls, outputs, strict=True):
        messages.append({"role": "tool", "tool_call_id": call["id"], "content": output})
    return messages


# -- scripted tool calls ------------------------------------------------------------------------------------


async def test_non_streaming_tool_call(emulator: OpenAIEmulator) -> None:
    emulator.set_script([CHECK])
    result = await oai(emulator).chat.completions.create(model="gpt-4o", messages=ASK, tools=TOOLS)
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.role == "assistant" and choice.message.content is None
    assert len(function_calls(result)) == 1
    call = function_calls(result)[0]
    assert call.type == "function" and call.id.startswith("call_") and len(call.id) == 29
    assert call.function.name == "check_availability"
    assert call.function.arguments == CHECK_ARGS and json.loads(call.function.arguments) == {"day": "Tuesday"}
    assert result.usage is not None and result.usage.completion_tokens == len(tokenize(CHECK_ARGS))
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    seen = emulator.requests[-1]
    assert seen.status == 200 and seen.tools == ["check_availability", "book_table"]
    assert seen.tool_calls == [{"id": call.id, "name": "check_availability", "arguments": CHECK_ARGS}]
    async with httpx.AsyncClient() as http:
        raw = await http.post(
            f"{emulator.openai_base_url}/chat/completions",
            headers={"authorization": f"Bearer {KEY}"},
            json={"model": "m", "messages": ASK, "tools": TOOLS},
        )
    message = raw.json()["choices"][0]["message"]
    assert message["content"] is None and "content" in message
    assert set(message["tool_calls"][0]) == {"id", "type", "function"}


async def test_streaming_tool_call_with_usage(emulator: OpenAIEmulator) -> None:
    emulator.set_script([CHECK])
    stream = await oai(emulator).chat.completions.create(
        model="gpt-4o", messages=ASK, tools=TOOLS, stream=True, stream_options={"include_usage": True}
    )
    got = await Streamed().read(stream)
    assert len(got.ordered) == 1
    call = got.ordered[0]
    assert call["id"].startswith("call_") and call["name"] == "check_availability"
    assert json.loads(call["arguments"]) == {"day": "Tuesday"}
    first = got.chunks[0].choices[0].delta
    assert first.role == "assistant" and first.content is None
    assert first.tool_calls is not None and first.tool_calls[0].function is not None
    assert first.tool_calls[0].function.arguments == ""
    assert got.fragments == len(tokenize(CHECK_ARGS)) > 1
    assert got.finishes == ["tool_calls"]
    last_choice = [c for c in got.chunks if c.choices][-1].choices[0]
    assert last_choice.finish_reason == "tool_calls" and last_choice.delta.tool_calls is None
    assert got.chunks[-1].choices == [] and got.usage is not None
    assert got.usage.completion_tokens == len(tokenize(CHECK_ARGS))
    assert emulator.requests[-1].tool_calls[0]["id"] == call["id"]


async def test_words_said_alongside_a_tool_call_come_first_as_content(emulator: OpenAIEmulator) -> None:
    """A model may say something with its calls: its content streams before the calls (the role on its first
    chunk), and the whole message has both; both count as completion tokens."""
    words = "Let me check the calendar."
    emulator.set_script([{**CHECK, "content": words}, {**CHECK, "content": words}])
    whole = await oai(emulator).chat.completions.create(model="gpt-4o", messages=ASK, tools=TOOLS)
    assert whole.choices[0].message.content == words and len(function_calls(whole)) == 1
    assert whole.usage is not None
    assert whole.usage.completion_tokens == len(tokenize(words)) + len(tokenize(CHECK_ARGS))
    stream = await oai(emulator).chat.completions.create(
        model="gpt-4o", messages=ASK, tools=TOOLS, stream=True
    )
    got = await Streamed().read(stream)
    first = got.chunks[0].choices[0].delta
    assert first.role == "assistant" and first.content == "" and first.tool_calls is None
    said = "".join(c.choices[0].delta.content or "" for c in got.chunks if c.choices)
    assert said == words
    assert [call["arguments"] for call in got.ordered] == [CHECK_ARGS]
    assert emulator.replies.script[0]["content"] == words  # type: ignore[index]


async def test_azure_streaming_tool_call_keeps_the_filter_chunk(emulator: OpenAIEmulator) -> None:
    emulator.set_script([CHECK])
    stream = await azure(emulator).chat.completions.create(
        model="my-deploy", messages=ASK, tools=TOOLS, stream=True
    )
    got = await Streamed().read(stream)
    assert got.chunks[0].choices == []
    assert [(c["name"], json.loads(c["arguments"])) for c in got.ordered] == [
        ("check_availability", {"day": "Tuesday"})
    ]
    assert got.finishes == ["tool_calls"]
    result = await azure(emulator).chat.completions.create(model="my-deploy", messages=ASK, tools=TOOLS)
    assert result.choices[0].finish_reason == "tool_calls"
    assert result.choices[0].message.tool_calls is not None
    assert emulator.requests[-1].api == "azure"


async def test_two_call_entry(emulator: OpenAIEmulator) -> None:
    two = {
        "tool_calls": [
            {"name": "check_availability", "arguments": {"day": "Tuesday"}},
            {"name": "book_table", "arguments": '{"day": "Tuesday", "people": 2}'},
        ]
    }
    emulator.set_script([two])
    client = oai(emulator)
    result = await client.chat.completions.create(model="m", messages=ASK, tools=TOOLS)
    calls = function_calls(result)
    assert [(c.function.name, c.function.arguments) for c in calls] == [
        ("check_availability", CHECK_ARGS),
        ("book_table", '{"day": "Tuesday", "people": 2}'),
    ]
    assert calls[0].id != calls[1].id
    stream = await client.chat.completions.create(model="m", messages=ASK, tools=TOOLS, stream=True)
    got = await Streamed().read(stream)
    assert sorted(got.calls) == [0, 1]
    assert [(c["name"], c["arguments"]) for c in got.ordered] == [
        ("check_availability", CHECK_ARGS),
        ("book_table", '{"day": "Tuesday", "people": 2}'),
    ]
    assert got.ordered[0]["id"] != got.ordered[1]["id"]
    headers = [
        c.choices[0].delta.tool_calls[0]
        for c in got.chunks
        if c.choices and c.choices[0].delta.tool_calls and c.choices[0].delta.tool_calls[0].id
    ]
    assert [h.index for h in headers] == [0, 1]  # the second call gets its own header chunk
    assert got.finishes == ["tool_calls"]


async def test_follow_up_with_tool_output_is_substituted(emulator: OpenAIEmulator) -> None:
    emulator.set_script([CHECK, "Tuesday works: {tool_output} Shall I book it?"])
    client = oai(emulator)
    first = await client.chat.completions.create(model="m", messages=ASK, tools=TOOLS)
    call = function_calls(first)[0]
    calls = [{"id": call.id, "name": call.function.name, "arguments": call.function.arguments}]
    follow_up = answered(calls, ["Two tables free at 7pm."])
    second = await client.chat.completions.create(model="m", messages=follow_up, tools=TOOLS)
    assert second.choices[0].message.content == "Tuesday works: Two tables free at 7pm. Shall I book it?"
    assert second.choices[0].finish_reason == "stop"
    seen = emulator.requests[-1]
    assert seen.tool_messages == [{"index": 3, "tool_call_id": call.id, "content": "Two tables free at 7pm."}]
    assert seen.tool_calls == []


async def test_placeholder_without_tool_messages_is_empty(emulator: OpenAIEmulator) -> None:
    emulator.set_script(["Result: [{tool_output}]"])
    result = await oai(emulator).chat.completions.create(model="m", messages=ASK)
    assert result.choices[0].message.content == "Result: []"


async def test_default_reply_reads_the_tool_output_back(emulator: OpenAIEmulator) -> None:
    calls = [{"id": "call_abc", "name": "check_availability", "arguments": CHECK_ARGS}]
    result = await oai(emulator).chat.completions.create(
        model="m", messages=answered(calls, ["Two tables free at 7pm."]), tools=TOOLS
    )
    assert result.choices[0].message.content == "Here's what I found: Two tables free at 7pm."


async def test_tool_not_offered_falls_back_to_text(emulator: OpenAIEmulator) -> None:
    emulator.set_script([CHECK])
    client = oai(emulator)
    only_booking = [TOOLS[1]]
    result = await client.chat.completions.create(model="m", messages=ASK, tools=only_booking)
    assert result.choices[0].message.content == TOOL_UNAVAILABLE_REPLY == "Sorry, I can't do that right now."
    assert result.choices[0].finish_reason == "stop" and result.choices[0].message.tool_calls is None
    no_tools = await client.chat.completions.create(model="m", messages=ASK)
    assert no_tools.choices[0].message.content == TOOL_UNAVAILABLE_REPLY
    assert emulator.requests[-1].tool_calls == []


async def test_tool_choice_none_answers_in_text(emulator: OpenAIEmulator) -> None:
    emulator.set_script([CHECK])
    client = oai(emulator)
    stream = await client.chat.completions.create(
        model="m", messages=ASK, tools=TOOLS, tool_choice="none", stream=True
    )
    text = ""
    async for chunk in stream:
        if chunk.choices:
            assert chunk.choices[0].delta.tool_calls is None
            text += chunk.choices[0].delta.content or ""
    assert text == TOOL_UNAVAILABLE_REPLY
    for choice in ("auto", "required"):
        result = await client.chat.completions.create(
            model="m", messages=ASK, tools=TOOLS, tool_choice=choice
        )
        assert result.choices[0].finish_reason == "tool_calls"
    named = await client.chat.completions.create(
        model="m",
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "check_availability"}},
    )
    assert named.choices[0].finish_reason == "tool_calls"


async def test_max_tokens_cuts_tool_arguments(emulator: OpenAIEmulator) -> None:
    emulator.set_script([CHECK])
    result = await oai(emulator).chat.completions.create(model="m", messages=ASK, tools=TOOLS, max_tokens=2)
    assert result.choices[0].finish_reason == "length"
    assert function_calls(result)[0].function.arguments == "".join(tokenize(CHECK_ARGS)[:2])
    assert result.usage is not None and result.usage.completion_tokens == 2


# -- faults on tool-call responses ------------------------------------------------------------------------


async def test_mid_stream_error_breaks_a_tool_call_stream(emulator: OpenAIEmulator) -> None:
    emulator.set_script([CHECK])
    emulator.set_faults(midstream_error_next=1, midstream_error_after=2)
    stream = await oai(emulator).chat.completions.create(model="m", messages=ASK, tools=TOOLS, stream=True)
    got = Streamed()
    with pytest.raises(openai.APIError):
        await got.read(stream)
    assert got.fragments == 2 and got.calls[0]["arguments"] == "".join(tokenize(CHECK_ARGS)[:2])
    assert got.finishes == []


async def test_rate_limit_then_the_tool_call(emulator: OpenAIEmulator) -> None:
    emulator.set_script([CHECK, "After the call."])
    emulator.set_faults(rate_limit_next=1, retry_after_s=2)
    client = oai(emulator)
    with pytest.raises(openai.RateLimitError):
        await client.chat.completions.create(model="m", messages=ASK, tools=TOOLS)
    result = await client.chat.completions.create(model="m", messages=ASK, tools=TOOLS)
    assert result.choices[0].finish_reason == "tool_calls"  # the 429 did not use up the script entry


async def test_latency_knobs_apply_to_tool_calls(emulator: OpenAIEmulator) -> None:
    emulator.set_script([CHECK])
    emulator.set_faults(first_token_delay_s=5)
    with pytest.raises(openai.APITimeoutError):
        await oai(emulator, timeout=0.3).chat.completions.create(model="m", messages=ASK, tools=TOOLS)
    emulator.set_faults(first_token_delay_s=0, token_delay_s=0.05)
    started = time.monotonic()
    stream = await oai(emulator).chat.completions.create(model="m", messages=ASK, tools=TOOLS, stream=True)
    got = await Streamed().read(stream)
    assert got.fragments == len(tokenize(CHECK_ARGS))
    assert time.monotonic() - started >= 0.05 * (got.fragments - 1) * 0.9


# -- validation ------------------------------------------------------------------------------------------

TOOL_CALL_X: ChatCompletionMessageParam = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {"id": "call_x", "type": "function", "function": {"name": "check_availability", "arguments": "{}"}}
    ],
}
TWO_CALLS: ChatCompletionMessageParam = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {"id": "call_x", "type": "function", "function": {"name": "check_availability", "arguments": "{}"}},
        {"id": "call_y", "type": "function", "function": {"name": "book_table", "arguments": "{}"}},
    ],
}
USER: ChatCompletionMessageParam = {"role": "user", "content": "Hello?"}


def tool_msg(call_id: str) -> ChatCompletionMessageParam:
    return {"role": "tool", "tool_call_id": call_id, "content": "ok"}


UNANSWERED = (
    "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
    "'tool_call_id'. The following tool_call_ids did not have response messages: "
)
NOT_A_RESPONSE = "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'."


def named_tool(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name}}


BAD_REQUESTS: dict[str, tuple[dict[str, Any], str, str]] = {
    "tools not an array": ({"tools": {"type": "function"}}, "tools", "Invalid type for 'tools'"),
    "tools empty": ({"tools": []}, "tools", "Invalid 'tools': empty array."),
    "tool type": ({"tools": [{"type": "retrieval"}]}, "tools[0].type", 'Invalid value: "retrieval"'),
    "tool name missing": (
        {"tools": [{"type": "function", "function": {"parameters": {}}}]},
        "tools[0].function.name",
        "Missing required parameter: 'tools[0].function.name'.",
    ),
    "tool name pattern": (
        {"tools": [TOOLS[0], named_tool("check availability")]},
        "tools[1].function.name",
        "string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
    ),
    "tool name too long": (
        {"tools": [named_tool("a" * 65)]},
        "tools[0].function.name",
        "string too long. Expected a string with maximum length 64",
    ),
    "parameters not an object": (
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": "day"}}]},
        "tools[0].function.parameters",
        "expected an object, but got a string instead.",
    ),
    "tool_choice value": (
        {"tools": TOOLS, "tool_choice": "sometimes"},
        "tool_choice",
        "Supported values are: 'none', 'auto', and 'required'.",
    ),
    "tool_choice names an unoffered tool": (
        {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "cancel_booking"}}},
        "tool_choice",
        "function 'cancel_booking'",
    ),
    "tool_choice without tools": (
        {"tool_choice": "auto"},
        "tool_choice",
        "'tool_choice' is only allowed when 'tools' are specified.",
    ),
    "tool call followed by a user message": (
        {"messages": [*ASK, TOOL_CALL_X, USER]},
        "messages.[2].role",
        UNANSWERED + "call_x",
    ),
    "tool call at the end": ({"messages": [*ASK, TOOL_CALL_X]}, "messages.[2].role", UNANSWERED + "call_x"),
    "one of two calls answered": (
        {"messages": [*ASK, TWO_CALLS, tool_msg("call_x"), USER]},
        "messages.[2].role",
        UNANSWERED + "call_y",
    ),
    "tool message without a call": (
        {"messages": [*ASK, tool_msg("call_x")]},
        "messages.[2].role",
        NOT_A_RESPONSE,
    ),
    "tool message after the run ended": (
        {"messages": [*ASK, TOOL_CALL_X, tool_msg("call_x"), USER, tool_msg("call_x")]},
        "messages.[5].role",
        NOT_A_RESPONSE,
    ),
    "tool message answers an unknown id": (
        {"messages": [*ASK, TOOL_CALL_X, tool_msg("call_x"), tool_msg("call_z")]},
        "messages.[4].tool_call_id",
        "Invalid parameter: 'tool_call_id' of 'call_z' not found in 'tool_calls' of previous message.",
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
async def test_invalid_tool_requests_are_400(emulator: OpenAIEmulator, case: str) -> None:
    fields, param, message = BAD_REQUESTS[case]
    emulator.set_script([CHECK])
    emulator.set_faults(rate_limit_next=1)
    messages = cast(list[ChatCompletionMessageParam], fields.get("messages", ASK))
    extra = {k: v for k, v in fields.items() if k != "messages"}
    for client in (oai(emulator), azure(emulator)):
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="m", messages=messages, extra_body=extra)
        assert caught.value.status_code == 400
        assert caught.value.param == param
        assert caught.value.type == "invalid_request_error"
        assert message in caught.value.message
        body = caught.value.response.json()
        assert set(body["error"]) == {"message", "type", "param", "code"}
    assert emulator.requests[-1].status == 400
    assert emulator.knobs.snapshot().rate_limit_next == 1  # refused before any fault was used up


async def test_valid_tool_sequences_are_accepted(emulator: OpenAIEmulator) -> None:
    client = oai(emulator)
    ok = [*ASK, TWO_CALLS, tool_msg("call_y"), tool_msg("call_x"), USER]
    result = await client.chat.completions.create(model="m", messages=ok, tools=TOOLS, tool_choice="none")
    assert result.choices[0].message.content
    assert [m["tool_call_id"] for m in emulator.requests[-1].tool_messages] == ["call_y", "call_x"]


# -- script plumbing -------------------------------------------------------------------------------------


async def test_control_endpoint_takes_tool_call_entries(emulator: OpenAIEmulator) -> None:
    async with httpx.AsyncClient(base_url=emulator.url) as http:
        response = await http.post("/_emulator/faults", json={"script": [CHECK, "Done: {tool_output}"]})
        assert response.status_code == 200
        assert response.json()["script"] == [
            {"tool_calls": [{"name": "check_availability", "arguments": CHECK_ARGS}]},
            "Done: {tool_output}",
        ]
        bad: Any
        for bad in ([{"tool_calls": []}], [{"tool_calls": [{"name": "bad name"}]}], [7], "text"):
            refused = await http.post("/_emulator/faults", json={"script": bad, "rate_limit_next": 3})
            assert refused.status_code == 400, bad
        assert emulator.knobs.snapshot().rate_limit_next == 0
    result = await oai(emulator).chat.completions.create(model="m", messages=ASK, tools=TOOLS)
    assert result.choices[0].finish_reason == "tool_calls"


def test_set_script_refuses_a_malformed_entry(emulator: OpenAIEmulator) -> None:
    emulator.set_script(["kept"])
    with pytest.raises(ValueError):
        emulator.set_script([{"tool_calls": [{"name": "f", "arguments": 3}]}])
    assert emulator.replies.script == ["kept"]


def test_cli_keeps_script_and_script_json_in_order() -> None:
    args = parse_args(
        ["--script", "Hello.", "--script-json", json.dumps(CHECK), "--script", "Bye {tool_output}"]
    )
    assert args.script == ["Hello.", CHECK, "Bye {tool_output}"]
    with pytest.raises(SystemExit):
        parse_args(["--script-json", "{not json"])
    with pytest.raises(SystemExit):
        parse_args(["--script-json", '{"tool_calls": "check_availability"}'])


async def test_a_policy_answers_each_conversation_from_where_it_is(emulator: OpenAIEmulator) -> None:
    """Two conversations interleaved: each gets its own tool call, then its own read-back (a shared script
    would have handed the second conversation the first one's read-back)."""

    def policy(messages: Any) -> Any:
        if messages[-1]["role"] == "tool":
            return "Free: {tool_output}"
        return CHECK if sum(m["role"] == "user" for m in messages) == 1 else None

    emulator.replies.set_policy(policy)
    client = oai(emulator)
    first = await client.chat.completions.create(model="m", messages=ASK, tools=TOOLS)
    second = await client.chat.completions.create(model="m", messages=ASK, tools=TOOLS)
    for answer, output in ((first, '{"slots": 2}'), (second, '{"slots": 5}')):
        [call] = function_calls(answer)
        assert (call.function.name, call.function.arguments) == ("check_availability", CHECK_ARGS)
        follow_up: list[ChatCompletionMessageParam] = [
            *ASK,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.function.name, "arguments": call.function.arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.id, "content": output},
        ]
        spoken = await client.chat.completions.create(model="m", messages=follow_up, tools=TOOLS)
        assert spoken.choices[0].message.content == f"Free: {output}"
    # A later turn of the conversation: the policy declines, the default reply answers.
    later: list[ChatCompletionMessageParam] = [
        *ASK,
        {"role": "assistant", "content": "Free: 2"},
        {"role": "user", "content": "Thanks"},
    ]
    answer = await client.chat.completions.create(model="m", messages=later, tools=TOOLS)
    assert "You said: Thanks" in (answer.choices[0].message.content or "")
    await client.close()


@pytest.mark.parametrize(
    ("tool_choice", "called"),
    [
        ("required", "check_availability"),
        ({"type": "function", "function": {"name": "book_table"}}, "book_table"),
    ],
)
async def test_a_forcing_tool_choice_makes_a_text_reply_a_call(
    emulator: OpenAIEmulator, tool_choice: Any, called: str
) -> None:
    """As in production, a model made to call a tool calls one: a client that keeps "required" on after
    the tools answered gets another call, not the text."""
    emulator.set_script(["Plain words."])
    client = oai(emulator)
    forced = await client.chat.completions.create(
        model="m", messages=ASK, tools=TOOLS, tool_choice=tool_choice
    )
    [call] = function_calls(forced)
    assert (call.function.name, call.function.arguments) == (called, "{}")
    assert forced.choices[0].finish_reason == "tool_calls"
    spoken = await client.chat.completions.create(model="m", messages=ASK, tools=TOOLS, tool_choice="auto")
    assert spoken.choices[0].message.content == "Plain words."
    await client.close()
