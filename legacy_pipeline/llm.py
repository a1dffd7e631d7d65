"""The legacy turn's language model: one streamed chat completion through the ``openai`` SDK.

Azure OpenAI (``AsyncAzureOpenAI``, deployment + api-version) or OpenAI-compatible (``AsyncOpenAI``,
base URL) behind the same small interface, so the turn loop and the tests do not care which.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from openai import AsyncAzureOpenAI, AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from router.tool_calls import ToolCall

ChatMessage = dict[str, Any]


@dataclass
class ChatReply:
    text: str
    first_token_ms: float | None
    total_ms: float
    usage: dict[str, int] = field(default_factory=dict)
    tool_calls: list[ToolCall] = field(default_factory=list)
    """Functions the model asked for instead of (or before) answering; empty for a spoken answer."""


class ChatModel(Protocol):
    async def reply(
        self,
        messages: Sequence[ChatMessage],
        *,
        temperature: float,
        max_tokens: int,
        tools: Sequence[dict[str, Any]] = (),
        tool_choice: str = "auto",
    ) -> ChatReply: ...

    async def aclose(self) -> None: ...


class OpenAIChatModel:
    """Streams a chat completion; measures time to first content token and the whole response."""

    def __init__(self, client: AsyncOpenAI, *, model: str) -> None:
        self._client = client
        self._model = model

    async def reply(
        self,
        messages: Sequence[ChatMessage],
        *,
        temperature: float,
        max_tokens: int,
        tools: Sequence[dict[str, Any]] = (),
        tool_choice: str = "auto",
    ) -> ChatReply:
        started = time.perf_counter()
        first_token_ms: float | None = None
        parts: list[str] = []
        usage: dict[str, int] = {}
        calls: dict[int, _PartialCall] = {}
        extra: dict[str, Any] = {}
        if tools:
            extra["tools"] = cast(list[ChatCompletionToolParam], list(tools))
            extra["tool_choice"] = tool_choice
        stream = await self._client.chat.completions.create(
            model=self._model,
            messages=cast(list[ChatCompletionMessageParam], list(messages)),
            temperature=temperature,
            max_tokens=max_tokens,
            stream=True,
            stream_options={"include_usage": True},
            **extra,
        )
        async for chunk in stream:
            if chunk.usage is not None:
                usage = {
                    "prompt_tokens": chunk.usage.prompt_tokens,
                    "completion_tokens": chunk.usage.completion_tokens,
                    "total_tokens": chunk.usage.total_tokens,
                }
            if not chunk.choices:  # Azure's prompt_filter_results chunk, and the usage chunk
                continue
            delta = chunk.choices[0].delta
            if delta is None:  # Azure's asynchronous content filter: an annotation chunk, no words
                continue
            if delta.content:
                if first_token_ms is None:
                    first_token_ms = (time.perf_counter() - started) * 1000.0
                parts.append(delta.content)
            # A streamed tool call arrives in pieces keyed by ``index``: id and name first, then fragments of
            # the arguments' JSON.
            for piece in delta.tool_calls or ():
                partial = calls.setdefault(piece.index, _PartialCall())
                if piece.id:
                    partial.call_id = piece.id
                if piece.function is not None:
                    if piece.function.name:
                        partial.name += piece.function.name
                    if piece.function.arguments:
                        partial.arguments.append(piece.function.arguments)
        total_ms = (time.perf_counter() - started) * 1000.0
        tool_calls = [
            ToolCall(call_id=p.call_id, name=p.name, arguments="".join(p.arguments))
            for _, p in sorted(calls.items())
        ]
        return ChatReply(
            text="".join(parts),
            first_token_ms=first_token_ms,
            total_ms=total_ms,
            usage=usage,
            tool_calls=tool_calls,
        )

    async def aclose(self) -> None:
        await self._client.close()


@dataclass
class _PartialCall:
    call_id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


def openai_chat_model(
    *,
    azure_endpoint: str = "",
    azure_api_key: str = "",
    azure_deployment: str = "",
    azure_api_version: str = "",
    openai_api_key: str = "",
    openai_base_url: str = "",
    openai_model: str = "",
    timeout_s: float = 10.0,
    max_retries: int = 0,
) -> OpenAIChatModel:
    """Azure OpenAI when an Azure endpoint is configured, otherwise OpenAI (or any compatible base URL).

    Retries are off by default: the turn has a hard deadline and answers with an apology instead.
    """
    client: AsyncOpenAI
    if azure_endpoint:
        client = AsyncAzureOpenAI(
            azure_endpoint=azure_endpoint,
            api_key=azure_api_key or "unused",
            azure_deployment=azure_deployment,
            api_version=azure_api_version,
            timeout=timeout_s,
            max_retries=max_retries,
        )
        return OpenAIChatModel(client, model=azure_deployment)
    client = AsyncOpenAI(
        api_key=openai_api_key or "unused",
        base_url=openai_base_url or None,
        timeout=timeout_s,
        max_retries=max_retries,
    )
    return OpenAIChatModel(client, model=openai_model)
