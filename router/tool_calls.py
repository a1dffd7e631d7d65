"""The agent's tools, run for both pipelines: the model asks for a function, the router POSTs the call to the
tool's URL and gives the model the answer.

A tool call never raises into a turn or a bridge. Bad arguments (not JSON, or not matching the tool's
``parameters`` schema: the model is told why and can call again), an unknown name, a timeout, a refused
connection, an HTTP error (a 4xx's own reason is passed on) or an oversized answer each become a small JSON
``{"error": …}`` output, so the model can tell the caller it could not do it instead of the caller hearing
silence or an apology for the whole turn. The request the tool's backend receives::

    POST <url>  {"tool": name, "call_id": …, "call_sid": …, "pipeline": "legacy"|"realtime", "turn": N,
                 "arguments": {…}}

The answer's body (JSON or text, at most ``max_output_bytes``) is what the model reads. ``call_id`` is the
model's and changes if a turn is run again (a Twilio retry during a state-store outage, a session that
asks afresh after a reconnect); ``call_sid`` and ``turn`` do not, so a backend whose tool must not act twice
(a booking) can key on them with its arguments.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for

from router.agent_profile import AgentTool
from router.observability import Metrics

logger = logging.getLogger(__name__)

MAX_OUTPUT_BYTES = 16 * 1024
"""An answer the model reads aloud in one or two sentences needs far less; more is refused, not cut, so the
model never reads half a JSON document."""
MAX_ARGUMENT_CHARS = 16 * 1024
"""Arguments a model writes for a phone call's tool are a few fields; a runaway generation is not forwarded."""
MAX_REFUSAL_CHARS = 300
"""The most of a backend's 4xx error message, or of why the arguments miss the schema, passed on to the model
(enough for "day is required")."""
VALIDATE_ON_LOOP_CHARS = 1024
"""Arguments longer than this are checked against the schema in a thread: some schemas cost time that grows
fast with the value (``uniqueItems`` over objects is quadratic: ~2 s for 1,600 objects within the 16 KiB
cap), and the event loop carries every call of the worker. A few fields, the usual case, stay on the loop."""
MAX_CALLS_PER_ANSWER = 8
"""Calls of one model answer run at once; beyond this many the rest are answered with an error, so one
confused answer cannot open dozens of requests to the business's backend."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call the model asked for."""

    call_id: str
    name: str
    arguments: str
    """The model's arguments, a JSON string as both APIs send them."""


@dataclass(frozen=True, slots=True)
class ToolResult:
    call_id: str
    name: str
    output: str
    """What the model is given: the tool's answer, or ``{"error": …}``."""
    ok: bool
    ms: float
    error: str | None = None
    """Why it failed, for records and metrics: ``unknown_tool``, ``bad_arguments``, ``timeout``,
    ``unreachable``, ``http_<status>``, ``too_large``."""

    def record(self) -> dict[str, Any]:
        """The turn record's entry for this call."""
        entry: dict[str, Any] = {"name": self.name, "ms": round(self.ms, 1), "ok": self.ok}
        if self.error is not None:
            entry["error"] = self.error
        return entry


def chat_exchange(answered: Sequence[tuple[ToolCall, str]], text: str | None = None) -> list[dict[str, Any]]:
    """One model answer's tool calls and what each returned, as chat messages: the assistant message with
    ``tool_calls`` (and any words it said with them), then one ``tool`` message per call in the same order.
    The chat API refuses a history in which either half is missing or the two are apart."""
    calls = [
        {"id": call.call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
        for call, _ in answered
    ]
    return [
        {"role": "assistant", "content": text or None, "tool_calls": calls},
        *({"role": "tool", "tool_call_id": call.call_id, "content": output} for call, output in answered),
    ]


def _error_output(message: str) -> str:
    return orjson.dumps({"error": message}).decode()


def unavailable_tool(call: ToolCall, ms: float = 0.0) -> ToolResult:
    """The answer to a call of a tool the profile does not have (a model may invent one)."""
    message = f"there is no tool named {call.name!r}"
    return ToolResult(call.call_id, call.name, _error_output(message), False, ms, "unknown_tool")


class ToolRunner:
    """The profile's tools behind one HTTP client (its transport is swappable, as httpx's always is)."""

    def __init__(
        self,
        tools: Sequence[AgentTool],
        client: httpx.AsyncClient,
        *,
        metrics: Metrics | None = None,
        max_output_bytes: int = MAX_OUTPUT_BYTES,
    ) -> None:
        self._tools = {tool.name: tool for tool in tools}
        self._validators: dict[str, Validator] = {
            tool.name: validator_for(tool.parameters, default=Draft202012Validator)(tool.parameters)
            for tool in tools
            if tool.validate_arguments
        }
        self._client = client
        self._metrics = metrics
        self._max_output_bytes = max_output_bytes

    def __bool__(self) -> bool:
        return bool(self._tools)

    async def aclose(self) -> None:
        """Close the HTTP client (the app's lifespan does, on the loop that used it)."""
        await self._client.aclose()

    def chat_tools(self) -> list[dict[str, Any]]:
        """The tools in the chat completions request shape (legacy)."""
        return [
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
            }
            for t in self._tools.values()
        ]

    def session_tools(self) -> list[dict[str, Any]]:
        """The tools in Voice Live's ``session.tools`` shape (flat, OpenAI realtime beta)."""
        return [
            {"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters}
            for t in self._tools.values()
        ]

    async def run_all(
        self, calls: Sequence[ToolCall], *, call_sid: str, pipeline: str, turn: int | None = None
    ) -> list[ToolResult]:
        """Run the calls of one model answer side by side (at most ``MAX_CALLS_PER_ANSWER``; the rest get an
        error output); results in the order asked."""
        if len(calls) == 1:
            return [await self.run(calls[0], call_sid=call_sid, pipeline=pipeline, turn=turn)]
        run, refused = calls[:MAX_CALLS_PER_ANSWER], calls[MAX_CALLS_PER_ANSWER:]
        results = list(
            await asyncio.gather(*(self.run(c, call_sid=call_sid, pipeline=pipeline, turn=turn) for c in run))
        )
        message = f"at most {MAX_CALLS_PER_ANSWER} tools can be called at once"
        results.extend(
            ToolResult(c.call_id, c.name, _error_output(message), False, 0.0, "too_many_calls")
            for c in refused
        )
        return results

    async def run(
        self, call: ToolCall, *, call_sid: str, pipeline: str, turn: int | None = None
    ) -> ToolResult:
        started = time.perf_counter()
        try:
            result = await self._run(call, call_sid=call_sid, pipeline=pipeline, turn=turn, started=started)
        # A bug, or an input httpx refuses: still an answer, so the model is not left waiting for one.
        except Exception:
            logger.exception("tool %s failed unexpectedly", call.name)
            ms = (time.perf_counter() - started) * 1000.0
            result = ToolResult(call.call_id, call.name, _error_output("the tool failed"), False, ms, "error")
        if self._metrics is not None:
            outcome = "ok" if result.ok else (result.error or "error")
            # The model names the tool: only the profile's names become label values (no unbounded series).
            name = result.name if result.name in self._tools else "unknown"
            self._metrics.tool_calls.labels(pipeline, name, outcome).observe(result.ms / 1000.0)
        if result.ok:
            logger.info("tool %s answered in %.0f ms", call.name, result.ms)
        else:
            logger.warning("tool %s failed (%s) after %.0f ms", call.name, result.error, result.ms)
        return result

    async def _run(
        self, call: ToolCall, *, call_sid: str, pipeline: str, turn: int | None, started: float
    ) -> ToolResult:
        def failed(error: str, message: str) -> ToolResult:
            ms = (time.perf_counter() - started) * 1000.0
            return ToolResult(call.call_id, call.name, _error_output(message), False, ms, error)

        tool = self._tools.get(call.name)
        if tool is None:
            return unavailable_tool(call, (time.perf_counter() - started) * 1000.0)
        if len(call.arguments) > MAX_ARGUMENT_CHARS:
            return failed("bad_arguments", "the arguments are too long")
        try:
            arguments = orjson.loads(call.arguments or "{}")
        except orjson.JSONDecodeError:
            return failed("bad_arguments", "the arguments are not valid JSON")
        if not isinstance(arguments, dict):
            return failed("bad_arguments", "the arguments must be a JSON object")
        validator = self._validators.get(call.name)
        if validator is not None:
            try:
                if len(call.arguments) > VALIDATE_ON_LOOP_CHARS:
                    mismatch = await asyncio.to_thread(_first_mismatch, validator, arguments)
                else:
                    mismatch = _first_mismatch(validator, arguments)
            except RecursionError:
                return failed("bad_arguments", "the arguments are nested too deeply")
            if mismatch is not None:
                return failed(
                    "bad_arguments", f"the arguments do not match the tool's parameters ({mismatch})"
                )
        body = orjson.dumps(
            {
                "tool": call.name,
                "call_id": call.call_id,
                "call_sid": call_sid,
                "pipeline": pipeline,
                "turn": turn,
                "arguments": arguments,
            }
        )
        headers = {"content-type": "application/json", **tool.headers}
        try:
            async with asyncio.timeout(tool.timeout_seconds):
                async with self._client.stream("POST", tool.url, content=body, headers=headers) as response:
                    output = await self._read_limited(response)
        except TimeoutError:
            return failed("timeout", f"the tool did not answer within {tool.timeout_seconds:g} s")
        except _TooLarge:
            return failed("too_large", "the tool's answer was too long")
        except httpx.HTTPError as exc:
            logger.debug("tool %s: %r", call.name, exc)
            return failed("unreachable", "the tool could not be reached")
        status = response.status_code
        if 400 <= status < 500 and (reason := _refusal_reason(output)):
            # The backend refused these arguments and said why: the model can correct them or tell the caller.
            return failed(f"http_{status}", f"the tool refused the call (HTTP {status}): {reason}")
        if not 200 <= status < 300:  # a redirect is not followed: its body is not an answer
            return failed(f"http_{status}", f"the tool failed (HTTP {status})")
        ms = (time.perf_counter() - started) * 1000.0
        return ToolResult(call.call_id, call.name, output, True, ms)

    async def _read_limited(self, response: httpx.Response) -> str:
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max_output_bytes:
            raise _TooLarge
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self._max_output_bytes:
                raise _TooLarge
            chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", errors="replace")


def _refusal_reason(body: str) -> str:
    """The message of a 4xx answer shaped ``{"error": "…"}`` or ``{"message": "…"}``, cut short; "" for any
    other body (an HTML error page is not read to the model)."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(document, dict):
        return ""
    for key in ("error", "message", "detail"):
        reason = document.get(key)
        if isinstance(reason, str) and reason.strip():
            return reason.strip()[:MAX_REFUSAL_CHARS]
    return ""


def _first_mismatch(validator: Validator, arguments: dict[str, Any]) -> str | None:
    """Why ``arguments`` miss the schema, shortened; None when they match."""
    mismatch = best_match(validator.iter_errors(arguments))
    if mismatch is None:
        return None
    where = "/".join(str(part) for part in mismatch.absolute_path)
    return _shortened(f"{where}: {mismatch.message}" if where else mismatch.message)


def _shortened(text: str) -> str:
    """``text`` at most about ``MAX_REFUSAL_CHARS`` long: jsonschema's message quotes the offending value whole
    (``'…' is too long``), and its verdict is at the end, so the middle is what goes."""
    if len(text) <= MAX_REFUSAL_CHARS:
        return text
    half = MAX_REFUSAL_CHARS // 2
    return f"{text[:half]} … {text[-half:]}"


class _TooLarge(Exception):
    pass
