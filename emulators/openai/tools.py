"""Function tools in chat completions: request validation, scripted tool calls, tool outputs.

The checks mirror what OpenAI answers with HTTP 400 so a client's tool loop fails against the emulator
where it would fail in production. Messages marked *verbatim* were seen in real OpenAI responses; the
others follow OpenAI's usual wording ("Invalid type for …", "Missing required parameter: …") but were
not checked against the live service and are marked *guess*.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")
TOOL_NAME_MAX = 64
TOOL_CHOICES = ("none", "auto", "required")
TOOL_UNAVAILABLE_REPLY = "Sorry, I can't do that right now."
"""What a tool-call script entry says instead when a tool it names is not offered (or ``tool_choice`` is
``"none"``): the emulator's choice, a polite phone-friendly refusal rather than an error."""
TOOL_OUTPUT = "{tool_output}"
"""Placeholder in a text reply, replaced by the content of the newest ``tool`` message of the request."""

_ID_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class ToolCall:
    """One function call the emulated model makes; ``arguments`` is the JSON text sent on the wire."""

    name: str
    arguments: str


@dataclass(frozen=True)
class ToolCallReply:
    """A script entry that answers with tool calls (in order) instead of text, and the words (``content``) a
    model may say alongside them."""

    calls: tuple[ToolCall, ...]
    content: str = ""

    @property
    def names(self) -> list[str]:
        return [call.name for call in self.calls]


ScriptEntry = str | Mapping[str, Any]
"""A script entry as callers give it: reply text, or ``{"tool_calls": [{"name", "arguments"}, …]}`` with an
optional ``"content"`` (words said alongside the calls)."""


def parse_script_entry(entry: object) -> str | ToolCallReply:
    """Check one script entry and turn it into what the app answers with; ``ValueError`` if malformed."""
    if isinstance(entry, str):
        return entry
    if not isinstance(entry, Mapping):
        raise ValueError("a script entry must be a string or an object with 'tool_calls'")
    if "tool_calls" not in entry or not set(entry) <= {"tool_calls", "content"}:
        raise ValueError("a tool-call script entry has 'tool_calls' and, optionally, 'content'")
    content = entry.get("content", "")
    if not isinstance(content, str):
        raise ValueError("'content' must be a string")
    raw_calls = entry["tool_calls"]
    if not isinstance(raw_calls, list) or not raw_calls:
        raise ValueError("'tool_calls' must be a non-empty list")
    calls: list[ToolCall] = []
    for raw in raw_calls:
        if not isinstance(raw, Mapping) or not set(raw) <= {"name", "arguments"}:
            raise ValueError("each scripted tool call is an object with 'name' and optional 'arguments'")
        name = raw.get("name")
        if not isinstance(name, str) or not TOOL_NAME.match(name) or len(name) > TOOL_NAME_MAX:
            raise ValueError(f"scripted tool name {name!r} must match ^[a-zA-Z0-9_-]{{1,64}}$")
        arguments = raw.get("arguments", {})
        if isinstance(arguments, Mapping):
            text = orjson.dumps(dict(arguments)).decode()
        elif isinstance(arguments, str):
            text = arguments  # sent verbatim, so a drill can hand the client malformed JSON on purpose
        else:
            raise ValueError(f"arguments of {name!r} must be an object or a JSON string")
        calls.append(ToolCall(name, text))
    return ToolCallReply(tuple(calls), content)


def public_entry(entry: str | ToolCallReply) -> ScriptEntry:
    """The JSON form of a parsed entry (what ``GET /_emulator/state`` shows)."""
    if isinstance(entry, str):
        return entry
    calls = {"tool_calls": [{"name": c.name, "arguments": c.arguments} for c in entry.calls]}
    return {**calls, "content": entry.content} if entry.content else calls


def new_call_id() -> str:
    """``call_`` and 24 letters and digits, the shape of OpenAI's tool call ids."""
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def offered_tools(body: Mapping[str, Any]) -> list[str]:
    """Names of the function tools a (possibly malformed) request offers, in order."""
    tools = body.get("tools")
    if not isinstance(tools, list):
        return []
    names: list[str] = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            names.append(function["name"])
    return names


def forced_call(body: Mapping[str, Any]) -> ToolCallReply | None:
    """The call a text reply becomes when ``tool_choice`` forces one: ``"required"`` calls the first tool
    offered, ``{"type": "function", "function": {"name": X}}`` calls X, with ``{}`` arguments. A model made
    to call a tool always calls one, so a client that never lifts ``required`` loops here as in production."""
    choice = body.get("tool_choice")
    offered = offered_tools(body)
    if choice == "required" and offered:
        return ToolCallReply(calls=(ToolCall(offered[0], "{}"),))
    if isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str) and name in offered:
            return ToolCallReply(calls=(ToolCall(name, "{}"),))
    return None


@dataclass(frozen=True)
class RequestError:
    """A 400 ``invalid_request_error`` to send back (``message``, ``param``, ``code`` as OpenAI fills them)."""

    message: str
    param: str | None
    code: str | None


def _kind(value: object) -> str:
    """JSON type name with its article, as OpenAI words "but got … instead"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _wrong_type(param: str, expected: str, value: object) -> RequestError:
    # guess: the wording of OpenAI's schema errors for other parameters
    return RequestError(
        f"Invalid type for '{param}': expected {expected}, but got {_kind(value)} instead.",
        param,
        "invalid_type",
    )


def _missing(param: str) -> RequestError:
    return RequestError(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def validate_stream_options(body: Mapping[str, Any]) -> RequestError | None:
    """``stream_options``, which the app reads as an object and OpenAI allows only with ``stream``; ``None``
    if absent or acceptable."""
    options = body.get("stream_options")
    if options is None:
        return None
    if not isinstance(options, dict):
        return _wrong_type("stream_options", "an object", options)
    if not body.get("stream"):
        # verbatim
        return RequestError(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options", None
        )
    return None


MESSAGE_ROLES = ("system", "assistant", "user", "function", "tool", "developer")


def validate_messages(messages: Sequence[Any]) -> RequestError | None:
    """Each message an object with a known role; ``None`` if they are."""
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return _wrong_type(f"messages[{i}]", "an object", message)
        role = message.get("role")
        if role is None:
            return _missing(f"messages[{i}].role")
        if role not in MESSAGE_ROLES:
            # the shape of OpenAI's enum errors
            return RequestError(
                f"Invalid value: {role!r}. Supported values are: 'system', 'assistant', 'user', 'function', "
                "'tool', and 'developer'.",
                f"messages[{i}].role",
                "invalid_value",
            )
    return None


def validate_tools(body: Mapping[str, Any]) -> RequestError | None:
    """``tools`` and ``tool_choice`` of a chat-completions body; ``None`` if they are acceptable."""
    tools = body.get("tools")
    names: list[str] = []
    if tools is not None:
        if not isinstance(tools, list):
            return _wrong_type("tools", "an array", tools)
        if not tools:
            # verbatim
            return RequestError(
                "Invalid 'tools': empty array. Expected an array with minimum length 1, but got an empty "
                "array instead.",
                "tools",
                "empty_array",
            )
        for i, tool in enumerate(tools):
            error = _check_tool(i, tool)
            if error is not None:
                return error
            names.append(tool["function"]["name"])
    return _check_tool_choice(body.get("tool_choice"), names, tools is not None)


def _check_tool(i: int, tool: object) -> RequestError | None:
    where = f"tools[{i}]"
    if not isinstance(tool, dict):
        return _wrong_type(where, "an object", tool)
    if "type" not in tool:
        return _missing(f"{where}.type")
    if tool["type"] != "function":
        # guess: OpenAI lists every tool type it knows; the emulator serves function tools only
        return RequestError(
            f"Invalid value: {orjson.dumps(tool['type']).decode()}. Supported values are: 'function'.",
            f"{where}.type",
            "invalid_value",
        )
    function = tool.get("function")
    if function is None:
        return _missing(f"{where}.function")
    if not isinstance(function, dict):
        return _wrong_type(f"{where}.function", "an object", function)
    name = function.get("name")
    param = f"{where}.function.name"
    if name is None:
        return _missing(param)
    if not isinstance(name, str):
        return _wrong_type(param, "a string", name)
    if not name:
        # guess: OpenAI's wording for other empty strings
        return RequestError(
            f"Invalid '{param}': string too short. Expected a string with minimum length 1, but got an empty "
            "string instead.",
            param,
            "empty_string",
        )
    if len(name) > TOOL_NAME_MAX:
        # guess: OpenAI's wording for other over-long strings (seen for tools[i].function.description)
        return RequestError(
            f"Invalid '{param}': string too long. Expected a string with maximum length {TOOL_NAME_MAX}, but "
            f"got a string with length {len(name)} instead.",
            param,
            "string_above_max_length",
        )
    if not TOOL_NAME.match(name):
        # verbatim
        return RequestError(
            f"Invalid '{param}': string does not match pattern. Expected a string that matches the pattern "
            "'^[a-zA-Z0-9_-]+$'.",
            param,
            "invalid_value",
        )
    description = function.get("description")
    if description is not None and not isinstance(description, str):
        return _wrong_type(f"{where}.function.description", "a string", description)
    parameters = function.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        return _wrong_type(f"{where}.function.parameters", "an object", parameters)
    return None


def _check_tool_choice(choice: object, names: list[str], has_tools: bool) -> RequestError | None:
    if choice is None:
        return None
    if not has_tools:
        # verbatim (message); param and code are guesses
        return RequestError(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
            "tool_choice",
            None,
        )
    if isinstance(choice, str):
        if choice in TOOL_CHOICES:
            return None
        # guess: OpenAI's wording for other enum parameters
        return RequestError(
            f"Invalid value: '{choice}'. Supported values are: 'none', 'auto', and 'required'.",
            "tool_choice",
            "invalid_value",
        )
    if not isinstance(choice, dict):
        return _wrong_type("tool_choice", "one of a string or an object", choice)
    if choice.get("type") != "function":
        # guess
        return RequestError(
            f"Invalid value: {orjson.dumps(choice.get('type')).decode()}. Supported values are: 'function'.",
            "tool_choice.type",
            "invalid_value",
        )
    function = choice.get("function")
    if function is None:
        return _missing("tool_choice.function")
    if not isinstance(function, dict):
        return _wrong_type("tool_choice.function", "an object", function)
    name = function.get("name")
    if name is None:
        return _missing("tool_choice.function.name")
    if not isinstance(name, str):
        return _wrong_type("tool_choice.function.name", "a string", name)
    if name not in names:
        # guess: OpenAI refuses a named tool_choice that matches no offered tool; exact wording unverified
        return RequestError(
            f"Invalid value for 'tool_choice': function '{name}' was not found in 'tools'.",
            "tool_choice",
            "invalid_value",
        )
    return None


def validate_tool_messages(messages: Sequence[Any]) -> RequestError | None:
    """The assistant ``tool_calls`` / ``tool`` message pairing rules; ``None`` if the sequence is valid.

    Every assistant message with ``tool_calls`` must be followed directly by ``tool`` messages answering
    each id, and a ``tool`` message must answer a call of the assistant message just before its run.
    """
    open_at: int | None = None  # index of the assistant message whose calls the current tool run answers
    call_ids: list[str] = []
    unanswered: list[str] = []
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role == "tool":
            assert isinstance(message, dict)
            if open_at is None:
                # verbatim (including OpenAI's spelling of "preceeding")
                return RequestError(
                    "Invalid parameter: messages with role 'tool' must be a response to a preceeding message "
                    "with 'tool_calls'.",
                    f"messages.[{i}].role",
                    None,
                )
            call_id = message.get("tool_call_id")
            if call_id is None:
                return _missing(f"messages[{i}].tool_call_id")
            if not isinstance(call_id, str):
                return _wrong_type(f"messages[{i}].tool_call_id", "a string", call_id)
            if call_id not in call_ids:
                # verbatim (message); the param is a guess
                return RequestError(
                    f"Invalid parameter: 'tool_call_id' of '{call_id}' not found in 'tool_calls' of previous "
                    "message.",
                    f"messages.[{i}].tool_call_id",
                    None,
                )
            if call_id in unanswered:
                unanswered.remove(call_id)
            continue
        if open_at is not None and unanswered:
            return _unanswered(open_at, unanswered)
        open_at, call_ids, unanswered = None, [], []
        calls = message.get("tool_calls") if role == "assistant" and isinstance(message, dict) else None
        if calls:
            if not isinstance(calls, list):
                return _wrong_type(f"messages[{i}].tool_calls", "an array", calls)
            for j, call in enumerate(calls):
                call_id = call.get("id") if isinstance(call, dict) else None
                if not isinstance(call_id, str):
                    return _missing(f"messages[{i}].tool_calls[{j}].id")
                call_ids.append(call_id)
            open_at, unanswered = i, list(call_ids)
    if open_at is not None and unanswered:
        return _unanswered(open_at, unanswered)
    return None


def _unanswered(at: int, ids: list[str]) -> RequestError:
    # verbatim message; which index OpenAI puts in the param is a guess (the assistant message here)
    return RequestError(
        "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
        f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(ids)}",
        f"messages.[{at}].role",
        None,
    )
