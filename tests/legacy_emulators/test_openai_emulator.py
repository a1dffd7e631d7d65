"""The OpenAI emulator driven by the real ``openai`` SDK over loopback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncAzureOpenAI, AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from emulators.openai import OpenAIEmulator, tokenize

KEY = "sk-test-key"
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You are a receptionist."},
    {"role": "user", "content": "Can I book a table for two?"},
]


@pytest.fixture
def emulator() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator(api_key=KEY) as emu:
        yield emu


def oai(emu: OpenAIEmulator, key: str = KEY) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=emu.openai_base_url, api_key=key, max_retries=0, timeout=10)


def azure(emu: OpenAIEmulator, key: str = KEY) -> AsyncAzureOpenAI:
    return AsyncAzureOpenAI(
        azure_endpoint=emu.url, api_key=key, api_version="2024-10-21", max_retries=0, timeout=10
    )


async def test_non_streaming_reply_is_a_function_of_the_last_user_message(emulator: OpenAIEmulator) -> None:
    result = await oai(emulator).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    text = result.choices[0].message.content
    assert text is not None and "Can I book a table for two?" in text
    assert result.choices[0].finish_reason == "stop"
    assert result.usage is not None
    assert result.usage.completion_tokens == len(tokenize(text))
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    assert result.usage.prompt_tokens > len("Can I book a table for two?") // 4
    seen = emulator.requests[-1]
    assert seen.api == "openai" and seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert seen.body["messages"] == MESSAGES


async def test_streaming_with_usage_chunk(emulator: OpenAIEmulator) -> None:
    emulator.set_script(["Sure, I can help you book that."])
    stream = await oai(emulator).chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces: list[str] = []
    roles: list[str | None] = []
    finish: list[str] = []
    usage = None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.choices:
            roles.append(chunk.choices[0].delta.role)
            pieces.append(chunk.choices[0].delta.content or "")
            if chunk.choices[0].finish_reason:
                finish.append(chunk.choices[0].finish_reason)
    assert "".join(pieces) == "Sure, I can help you book that."
    assert roles[0] == "assistant"
    assert len([p for p in pieces if p]) == len(tokenize("Sure, I can help you book that.")) > 3
    assert finish == ["stop"]
    assert usage is not None and usage.completion_tokens == len(tokenize("Sure, I can help you book that."))


async def test_script_cycles(emulator: OpenAIEmulator) -> None:
    emulator.set_script(["One.", "Two."])
    client = oai(emulator)
    replies = [
        (await client.chat.completions.create(model="m", messages=MESSAGES)).choices[0].message.content
        for _ in range(3)
    ]
    assert replies == ["One.", "Two.", "One."]


async def test_azure_streaming_skips_the_empty_filter_chunk(emulator: OpenAIEmulator) -> None:
    emulator.set_script(["Your table is booked."])
    stream = await azure(emulator).chat.completions.create(
        model="my-deploy",
        messages=MESSAGES,
        stream=True,
    )
    first = True
    empty_first = False
    text = ""
    async for chunk in stream:
        if first:
            empty_first = chunk.choices == []
            first = False
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
    assert empty_first
    assert text == "Your table is booked."
    seen = emulator.requests[-1]
    assert seen.api == "azure" and seen.deployment == "my-deploy"
    assert seen.path == "/openai/deployments/my-deploy/chat/completions"
    assert seen.query == {"api-version": "2024-10-21"}
    assert seen.headers["api-key"] == KEY


async def test_azure_non_streaming(emulator: OpenAIEmulator) -> None:
    emulator.set_script(["Done."])
    result = await azure(emulator).chat.completions.create(model="dep", messages=MESSAGES)
    assert result.choices[0].message.content == "Done."


async def test_wrong_key_is_401(emulator: OpenAIEmulator) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        await oai(emulator, key="sk-wrong").chat.completions.create(model="m", messages=MESSAGES)
    assert caught.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        await azure(emulator, key="wrong").chat.completions.create(model="m", messages=MESSAGES)


async def test_unknown_azure_deployment_is_404() -> None:
    with OpenAIEmulator(api_key=KEY, deployments=["gpt-4o"]) as emu:
        with pytest.raises(openai.NotFoundError):
            await azure(emu).chat.completions.create(model="other", messages=MESSAGES)
        result = await azure(emu).chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert result.choices[0].message.content


async def test_rate_limit_then_recovers(emulator: OpenAIEmulator) -> None:
    emulator.set_faults(rate_limit_next=1, retry_after_s=3)
    client = oai(emulator)
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="m", messages=MESSAGES)
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after"] == "3"
    assert (await client.chat.completions.create(model="m", messages=MESSAGES)).choices


async def test_azure_rate_limit_has_azures_error_shape(emulator: OpenAIEmulator) -> None:
    emulator.set_faults(rate_limit_next=1, retry_after_s=2)
    with pytest.raises(openai.RateLimitError) as caught:
        await azure(emulator).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    body = caught.value.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == "429" and caught.value.code == "429"
    assert "Please retry after 2 seconds" in body["error"]["message"]
    assert caught.value.response.headers["retry-after"] == "2"


async def test_server_error_is_internal_server_error(emulator: OpenAIEmulator) -> None:
    emulator.set_faults(server_error_next=2)
    client = azure(emulator)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="d", messages=MESSAGES, stream=True)
    assert (await client.chat.completions.create(model="d", messages=MESSAGES)).choices


async def test_persistent_outage_until_cleared(emulator: OpenAIEmulator) -> None:
    emulator.set_faults(server_error_next=-1)
    client = oai(emulator)
    for _ in range(3):
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="m", messages=MESSAGES)
    emulator.set_faults(server_error_next=0)
    assert (await client.chat.completions.create(model="m", messages=MESSAGES)).choices


async def test_mid_stream_error_after_earlier_chunks(emulator: OpenAIEmulator) -> None:
    emulator.set_script(["Sure, I can help you book that."])
    emulator.set_faults(midstream_error_next=1, midstream_error_after=3)
    stream = await oai(emulator).chat.completions.create(model="m", messages=MESSAGES, stream=True)
    received: list[str] = []
    with pytest.raises(openai.APIError):
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert "".join(received) == "".join(tokenize("Sure, I can help you book that.")[:3])


async def test_max_tokens_truncates(emulator: OpenAIEmulator) -> None:
    reply = "This reply is rather long and will not fit in five tokens."
    emulator.set_script([reply])
    client = oai(emulator)
    result = await client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=5)
    assert result.choices[0].finish_reason == "length"
    assert result.choices[0].message.content == "".join(tokenize(reply)[:5])
    assert result.usage is not None and result.usage.completion_tokens == 5
    stream = await client.chat.completions.create(
        model="m", messages=MESSAGES, stream=True, max_completion_tokens=5
    )
    text = ""
    finishes: list[str] = []
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            if chunk.choices[0].finish_reason:
                finishes.append(chunk.choices[0].finish_reason)
    assert finishes == ["length"]
    assert text == "".join(tokenize(reply)[:5])
    untruncated = await client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=500)
    assert untruncated.choices[0].finish_reason == "stop"
    assert untruncated.choices[0].message.content == reply


async def test_stall_hits_the_client_timeout(emulator: OpenAIEmulator) -> None:
    emulator.set_faults(stall_next=1, stall_s=30)
    client = AsyncOpenAI(base_url=emulator.openai_base_url, api_key=KEY, max_retries=0, timeout=0.5)
    with pytest.raises(openai.APITimeoutError):
        await client.chat.completions.create(model="m", messages=MESSAGES)
    assert (await client.chat.completions.create(model="m", messages=MESSAGES)).choices


async def test_control_endpoint(emulator: OpenAIEmulator) -> None:
    async with httpx.AsyncClient(base_url=emulator.url) as http:
        response = await http.post("/_emulator/faults", json={"rate_limit_next": 1, "script": ["Scripted."]})
        assert response.status_code == 200
        assert response.json()["knobs"]["rate_limit_next"] == 1
        bad = await http.post("/_emulator/faults", json={"no_such_knob": 1})
        assert bad.status_code == 400 and "no_such_knob" in bad.json()["error"]
        client = oai(emulator)
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(model="m", messages=MESSAGES)
        result = await client.chat.completions.create(model="m", messages=MESSAGES)
        assert result.choices[0].message.content == "Scripted."
        state = (await http.get("/_emulator/state")).json()
        assert state["requests"] == 2 and [r["status"] for r in state["recent"]] == [429, 200]


async def test_latency_knobs_apply(emulator: OpenAIEmulator) -> None:
    emulator.set_faults(first_token_delay_s=5)
    client = AsyncOpenAI(base_url=emulator.openai_base_url, api_key=KEY, max_retries=0, timeout=0.3)
    with pytest.raises(openai.APITimeoutError):
        await client.chat.completions.create(model="m", messages=MESSAGES)
    emulator.set_faults(first_token_delay_s=0.01, token_delay_s=0.001)
    stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    assert [c async for c in stream]


async def test_stream_options_of_the_wrong_type_is_a_400_not_a_crash(emulator: OpenAIEmulator) -> None:
    for client in (oai(emulator), azure(emulator)):
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(
                model="m", messages=MESSAGES, stream=True, extra_body={"stream_options": "usage"}
            )
        assert caught.value.param == "stream_options"
        assert caught.value.code == "invalid_type"
        assert "Invalid type for 'stream_options'" in caught.value.message
    assert emulator.requests[-1].status == 400


async def test_messages_that_are_not_chat_messages_and_stream_options_without_stream_are_400s(
    emulator: OpenAIEmulator,
) -> None:
    """Accepted before (a reply came back), where OpenAI refuses them: a client bug the emulator hid."""
    client = oai(emulator)
    cases: list[tuple[list[Any], dict[str, Any], str, str | None]] = [
        (["hi"], {}, "messages[0]", "invalid_type"),
        ([{"content": "hi"}], {}, "messages[0].role", "missing_required_parameter"),
        ([{"role": "robot", "content": "hi"}], {}, "messages[0].role", "invalid_value"),
        (MESSAGES, {"stream_options": {"include_usage": True}}, "stream_options", None),
    ]
    for messages, extra, param, code in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="m", messages=messages, extra_body=extra)
        assert (caught.value.param, caught.value.code) == (param, code), caught.value.message
    assert [r.status for r in emulator.requests] == [400] * len(cases)
