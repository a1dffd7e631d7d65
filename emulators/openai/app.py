"""The OpenAI / Azure OpenAI chat-completions wire protocol, as a Starlette app.

Two routes share one handler: ``POST /v1/chat/completions`` (OpenAI: ``Authorization: Bearer``) and
``POST /openai/deployments/{deployment}/chat/completions?api-version=…`` (Azure: ``api-key`` header; Azure
also sends an empty first stream chunk carrying ``prompt_filter_results``). Error bodies use the shapes the
real services send so the ``openai`` SDK raises the same exception classes.

Function tools: ``tools``/``tool_choice`` and the pairing of assistant ``tool_calls`` with ``tool`` messages
are validated as OpenAI does (HTTP 400, see :mod:`emulators.openai.tools`), and a tool-call script entry is
answered the way the real service calls tools: ``finish_reason: "tool_calls"``, ``content: null`` and, when
streaming, a header chunk per call (id, name, empty arguments) followed by argument fragments.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncIterator, Collection
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from emulators.control import control_routes
from emulators.openai.knobs import OpenAIKnobStore, RequestPlan
from emulators.openai.replies import ReplySource, prompt_tokens, tokenize, tool_messages
from emulators.openai.tools import (
    ToolCallReply,
    forced_call,
    new_call_id,
    offered_tools,
    validate_messages,
    validate_stream_options,
    validate_tool_messages,
    validate_tools,
)

RECORDED_HEADERS = ("authorization", "api-key", "content-type", "user-agent", "x-stainless-retry-count")


@dataclass
class RecordedRequest:
    """One chat-completions request as the emulator received it (for test assertions)."""

    api: str  # "openai" or "azure"
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    deployment: str | None = None
    status: int = 0
    tools: list[str] = field(default_factory=list)
    """Names of the function tools the request offered."""
    tool_messages: list[dict[str, Any]] = field(default_factory=list)
    """The request's ``tool`` messages: ``{"index", "tool_call_id", "content"}``."""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    """The tool calls the emulator answered with: ``{"id", "name", "arguments"}`` (to correlate ids)."""
    received_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RequestLog:
    """Thread-safe list of :class:`RecordedRequest`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[RecordedRequest] = []

    def add(self, item: RecordedRequest) -> None:
        with self._lock:
            self._items.append(item)

    def all(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def openai_error(
    status: int, message: str, type_: str, code: str | None = None, param: str | None = None
) -> Response:
    return _json({"error": {"message": message, "type": type_, "param": param, "code": code}}, status)


def _sse(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


_FILTER_OK = {
    name: {"filtered": False, "severity": "safe"} for name in ("hate", "self_harm", "sexual", "violence")
}
_PROMPT_FILTER = [{"prompt_index": 0, "content_filter_results": _FILTER_OK}]


class ChatCompletionsApp:
    """Builds the Starlette app; state (knobs, replies, log) is owned by the caller and shared."""

    def __init__(
        self,
        *,
        knobs: OpenAIKnobStore,
        replies: ReplySource,
        log: RequestLog,
        api_key: str | None,
        deployments: Collection[str] | None,
    ) -> None:
        self.knobs = knobs
        self.replies = replies
        self.log = log
        self.api_key = api_key
        self.deployments = set(deployments) if deployments is not None else None
        self._ids = itertools.count(1)

    def build(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self.openai_chat, methods=["POST"]),
                Route("/openai/deployments/{deployment}/chat/completions", self.azure_chat, methods=["POST"]),
                *control_routes(apply=self.apply_control, state=self.state_dict),
            ]
        )

    # -- control ---------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        requests = self.log.all()
        return {
            "knobs": asdict(self.knobs.snapshot()),
            "script": self.replies.script,
            "requests": len(requests),
            "recent": [r.to_dict() for r in requests[-20:]],
        }

    def apply_control(self, changes: dict[str, Any]) -> None:
        """A ``POST /_emulator/faults`` body: knobs plus ``script`` and ``clear_requests``."""
        script = changes.pop("script", None)
        clear = bool(changes.pop("clear_requests", False))
        if script is not None and not isinstance(script, list):
            raise ValueError("script must be a list of strings or {'tool_calls': [...]} objects")
        self.replies.check_script(script)  # refuse a bad script before any knob changes
        self.knobs.update(**changes)
        if script is not None:
            self.replies.set_script(script)
        if clear:
            self.log.clear()

    # -- chat completions -------------------------------------------------------------------------------

    async def openai_chat(self, request: Request) -> Response:
        record = self._record(request, "openai", None)
        auth = request.headers.get("authorization", "")
        key = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if not key:
            return self._finish(
                record,
                openai_error(
                    401,
                    "You didn't provide an API key. You need to provide your API key in an Authorization header "
                    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                    "invalid_request_error",
                ),
            )
        if self.api_key is not None and key != self.api_key:
            return self._finish(
                record,
                openai_error(
                    401,
                    f"Incorrect API key provided: {key[:3]}***{key[-4:]}. You can find your API key at "
                    "https://platform.openai.com/account/api-keys.",
                    "invalid_request_error",
                    "invalid_api_key",
                ),
            )
        return await self._chat(request, record, azure=False)

    async def azure_chat(self, request: Request) -> Response:
        deployment = str(request.path_params["deployment"])
        record = self._record(request, "azure", deployment)
        key = request.headers.get("api-key", "")
        auth = request.headers.get("authorization", "")
        if not key and auth.lower().startswith("bearer "):
            key = auth[7:].strip()
        if not key or (self.api_key is not None and key != self.api_key):
            return self._finish(
                record,
                _json(
                    {
                        "error": {
                            "code": "401",
                            "message": "Access denied due to invalid subscription key or wrong API endpoint. "
                            "Make sure to provide a valid key for an active subscription and use a correct "
                            "regional API endpoint for your resource.",
                        }
                    },
                    401,
                ),
            )
        if "api-version" not in request.query_params:
            return self._finish(
                record, _json({"error": {"code": "404", "message": "Resource not found"}}, 404)
            )
        if self.deployments is not None and deployment not in self.deployments:
            return self._finish(
                record,
                _json(
                    {
                        "error": {
                            "code": "DeploymentNotFound",
                            "message": "The API deployment for this resource does not exist. If you created "
                            "the deployment within the last 5 minutes, please wait a moment and try again.",
                        }
                    },
                    404,
                ),
            )
        return await self._chat(request, record, azure=True)

    def _record(self, request: Request, api: str, deployment: str | None) -> RecordedRequest:
        return RecordedRequest(
            api=api,
            path=request.url.path,
            query=dict(request.query_params),
            headers={h: request.headers[h] for h in RECORDED_HEADERS if h in request.headers},
            body=None,
            deployment=deployment,
        )

    def _finish(self, record: RecordedRequest, response: Response) -> Response:
        record.status = response.status_code
        self.log.add(record)
        return response

    async def _chat(self, request: Request, record: RecordedRequest, *, azure: bool) -> Response:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return self._finish(
                record,
                openai_error(
                    400,
                    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
                    "your HTTP library correctly. The OpenAI API expects a JSON payload.)",
                    "invalid_request_error",
                ),
            )
        record.body = body
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
            return self._finish(
                record,
                openai_error(
                    400,
                    "Missing required parameter: 'messages'.",
                    "invalid_request_error",
                    "missing_required_parameter",
                    "messages",
                ),
            )
        messages: list[Any] = body["messages"]
        record.tools = offered_tools(body)
        record.tool_messages = tool_messages(messages)
        invalid = (
            validate_messages(messages)
            or validate_stream_options(body)
            or validate_tools(body)
            or validate_tool_messages(messages)
        )
        if invalid is not None:
            return self._finish(
                record,
                openai_error(400, invalid.message, "invalid_request_error", invalid.code, invalid.param),
            )
        streaming = bool(body.get("stream"))
        plan = self.knobs.plan(streaming=streaming)
        if plan.stall_s > 0 and await _stall(request, plan.stall_s):
            return self._finish(record, Response(status_code=499))
        if plan.status == 429:
            retry_s = max(1, round(plan.retry_after_s))
            if azure:
                # Azure's own shape: {"error": {"code": "429", "message": …}}, no type or param.
                response = _json(
                    {
                        "error": {
                            "code": "429",
                            "message": "Requests to the ChatCompletions_Create Operation under Azure OpenAI "
                            f"API version {request.query_params.get('api-version', '')} have exceeded token "
                            "rate limit of your current AIServices S0 pricing tier. Please retry after "
                            f"{retry_s} seconds. Please go here: https://aka.ms/oai/quotaincrease if you "
                            "would like to further increase the default rate limit.",
                        }
                    },
                    429,
                )
            else:
                response = openai_error(
                    429,
                    "Rate limit reached for requests. Please try again in "
                    f"{plan.retry_after_s:g}s. Visit https://platform.openai.com/account/rate-limits to learn "
                    "more.",
                    "rate_limit_error",
                    "rate_limit_exceeded",
                )
            response.headers["retry-after"] = str(max(0, round(plan.retry_after_s)))
            response.headers["retry-after-ms"] = str(round(plan.retry_after_s * 1000))
            return self._finish(record, response)
        if plan.status == 500:
            return self._finish(
                record,
                openai_error(
                    500,
                    "The server had an error while processing your request. Sorry about that!",
                    "server_error",
                ),
            )

        reply = self.replies.reply_to(
            messages, offered=record.tools, tools_allowed=body.get("tool_choice") != "none"
        )
        if isinstance(reply, str) and (forced := forced_call(body)) is not None:
            reply = forced
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        if not (isinstance(limit, int) and not isinstance(limit, bool) and limit > 0):
            limit = None
        if isinstance(reply, ToolCallReply):
            calls, finish_reason = _tool_call_tokens(reply, limit)
            record.tool_calls = [
                {"id": call_id, "name": name, "arguments": "".join(tokens)} for call_id, name, tokens in calls
            ]
            reply_tokens = tokenize(reply.content)  # words said alongside the calls, streamed before them
            n_completion = len(reply_tokens) + sum(len(tokens) for _, _, tokens in calls)
        else:
            reply_tokens = tokenize(reply)
            finish_reason = "stop"
            if limit is not None and limit < len(reply_tokens):
                reply_tokens = reply_tokens[:limit]
                finish_reason = "length"
            n_completion = len(reply_tokens)
        n_prompt = prompt_tokens(messages)
        usage = {
            "prompt_tokens": n_prompt,
            "completion_tokens": n_completion,
            "total_tokens": n_prompt + n_completion,
        }
        base: dict[str, Any] = {
            "id": f"chatcmpl-emu{next(self._ids):08d}",
            "created": int(time.time()),
            "model": str(body.get("model") or record.deployment or "gpt-4o"),
            "system_fingerprint": "fp_emulator",
        }
        record.status = 200
        self.log.add(record)
        if streaming:
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            out = _ChunkWriter(base, include_usage, azure=azure)
            if isinstance(reply, ToolCallReply):
                stream = self._stream_tool_calls(out, reply_tokens, calls, finish_reason, usage, plan)
            else:
                stream = self._stream(out, reply_tokens, finish_reason, usage, plan)
            return StreamingResponse(
                stream, media_type="text/event-stream", headers={"cache-control": "no-cache"}
            )

        generation_s = plan.first_token_delay_s + plan.token_delay_s * max(0, n_completion - 1)
        if generation_s > 0 and await _stall(request, generation_s):
            return Response(status_code=499)  # the client gave up while the "model" was generating
        message: dict[str, Any]
        if isinstance(reply, ToolCallReply):
            message = {
                "role": "assistant",
                "content": "".join(reply_tokens) or None,
                "refusal": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": "".join(tokens)},
                    }
                    for call_id, name, tokens in calls
                ],
            }
        else:
            message = {"role": "assistant", "content": "".join(reply_tokens), "refusal": None}
        choice: dict[str, Any] = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": finish_reason,
        }
        result: dict[str, Any] = {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
        if azure:
            choice["content_filter_results"] = _FILTER_OK
            result["prompt_filter_results"] = _PROMPT_FILTER
        return _json(result)

    async def _stream(
        self,
        out: _ChunkWriter,
        tokens: list[str],
        finish_reason: str,
        usage: dict[str, int],
        plan: RequestPlan,
    ) -> AsyncIterator[bytes]:
        if out.azure:
            yield _AZURE_FILTER_CHUNK
        await asyncio.sleep(plan.first_token_delay_s)
        yield out.chunk({"role": "assistant", "content": "", "refusal": None})
        cut = (
            len(tokens)
            if plan.midstream_error_after is None
            else min(plan.midstream_error_after, len(tokens))
        )
        for index, token in enumerate(tokens[:cut]):
            if index:
                await asyncio.sleep(plan.token_delay_s)
            yield out.chunk({"content": token})
        if plan.midstream_error_after is not None:
            yield _MIDSTREAM_ERROR
            return
        for event in out.end(finish_reason, usage):
            yield event

    async def _stream_tool_calls(
        self,
        out: _ChunkWriter,
        text_tokens: list[str],
        calls: list[tuple[str, str, list[str]]],
        finish_reason: str,
        usage: dict[str, int],
        plan: RequestPlan,
    ) -> AsyncIterator[bytes]:
        """Each call as OpenAI streams it: a header (index, id, name, ``""``), then argument fragments.

        The first header also carries ``role`` and ``content: null``; words said alongside the calls come first,
        as content chunks (then the role is on the first of them). Latency knobs treat fragments as tokens,
        and a mid-stream error counts them as the content chunks it breaks after.
        """
        if out.azure:
            yield _AZURE_FILTER_CHUNK
        await asyncio.sleep(plan.first_token_delay_s)
        if text_tokens:
            yield out.chunk({"role": "assistant", "content": "", "refusal": None})
            for token in text_tokens:
                yield out.chunk({"content": token})
        sent = 0
        for index, (call_id, name, fragments) in enumerate(calls):
            header = {
                "index": index,
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }
            if index == 0 and not text_tokens:
                yield out.chunk(
                    {"role": "assistant", "content": None, "refusal": None, "tool_calls": [header]}
                )
            else:
                yield out.chunk({"tool_calls": [header]})
            for fragment in fragments:
                if plan.midstream_error_after is not None and sent >= plan.midstream_error_after:
                    yield _MIDSTREAM_ERROR
                    return
                if sent:
                    await asyncio.sleep(plan.token_delay_s)
                yield out.chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})
                sent += 1
        if plan.midstream_error_after is not None:
            yield _MIDSTREAM_ERROR
            return
        for event in out.end(finish_reason, usage):
            yield event


class _ChunkWriter:
    """``chat.completion.chunk`` events of one streamed response (shared by text and tool-call streams)."""

    def __init__(self, base: dict[str, Any], include_usage: bool, *, azure: bool) -> None:
        self.base = base
        self.include_usage = include_usage
        self.azure = azure
        self._extra: dict[str, Any] = {"usage": None} if include_usage else {}

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        if self.azure and delta.get("content"):
            choice["content_filter_results"] = _FILTER_OK
        return _sse({**self.base, "object": "chat.completion.chunk", "choices": [choice], **self._extra})

    def end(self, finish_reason: str, usage: dict[str, int]) -> list[bytes]:
        """The empty-delta chunk with ``finish_reason``, the usage chunk if asked for, and ``[DONE]``."""
        events = [self.chunk({}, finish_reason)]
        if self.include_usage:
            events.append(
                _sse({**self.base, "object": "chat.completion.chunk", "choices": [], "usage": usage})
            )
        events.append(b"data: [DONE]\n\n")
        return events


_AZURE_FILTER_CHUNK = _sse(
    {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": _PROMPT_FILTER,
    }
)
_MIDSTREAM_ERROR = _sse(
    {
        "error": {
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }
)


def _tool_call_tokens(
    reply: ToolCallReply, limit: int | None
) -> tuple[list[tuple[str, str, list[str]]], str]:
    """``(id, name, argument tokens)`` per call, cut to ``limit`` completion tokens like text is.

    A call whose arguments would not start within the limit is dropped, as a truncated model never
    reaches it; the finish reason is then ``"length"`` rather than ``"tool_calls"``.
    """
    calls: list[tuple[str, str, list[str]]] = []
    left = limit
    for call in reply.calls:
        tokens = tokenize(call.arguments)
        if left is not None:
            if left <= 0 and calls:
                return calls, "length"
            if len(tokens) > left:
                calls.append((new_call_id(), call.name, tokens[: max(left, 0)]))
                return calls, "length"
            left -= len(tokens)
        calls.append((new_call_id(), call.name, tokens))
    return calls, "tool_calls"


async def _stall(request: Request, seconds: float) -> bool:
    """Wait without sending a byte; ``True`` if the client gave up meanwhile (so shutdown is not held up)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = await asyncio.wait_for(request.receive(), timeout=min(left, 0.25))
        except TimeoutError:
            continue
        if message["type"] == "http.disconnect":
            return True
    return False
