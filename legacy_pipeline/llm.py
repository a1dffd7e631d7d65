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
from openai.types.chat import ChatCompletionMessageParam

ChatMessage = dict[str, Any]


@dataclass
class ChatReply:
    text: str
    first_token_ms: float | None
    total_ms: float
    usage: dict[str, int] = field(default_factory=dict)


class ChatModel(Protocol):
    async def reply(
        self, messages: Sequence[ChatMessage], *, temperature: float, max_tokens: int
    ) -> ChatReply: ...

    async def aclose(self) -> None: ...


class OpenAIChatModel:
    """Streams a chat completion; measures time to first content token and the whole response."""

    def __init__(self, client: AsyncOpenAI, *, model: str) -> None:
        self._client = client
        self._model = model

    async def reply(
        self, messages: Sequence[ChatMessage], *, temperature: float, max_tokens: int
    ) -> ChatReply:
        started = time.perf_counter()
        first_token_ms: float | None = None
        parts: list[str] = []
        usage: dict[str, int] = {}
        stream = await self._client.chat.completions.create(
            model=self._model,
            messages=cast(list[ChatCompletionMessageParam], list(messages)),
            temperature=temperature,
            max_tokens=max_tokens,
            stream=True,
            stream_options={"include_usage": True},
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
            content = chunk.choices[0].delta.content
            if content:
                if first_token_ms is None:
                    first_token_ms = (time.perf_counter() - started) * 1000.0
                parts.append(content)
        total_ms = (time.perf_counter() - started) * 1000.0
        return ChatReply(text="".join(parts), first_token_ms=first_token_ms, total_ms=total_ms, usage=usage)

    async def aclose(self) -> None:
        await self._client.close()


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
