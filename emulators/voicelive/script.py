"""The reply script: each entry is a spoken text or a set of scripted function (tool) calls.

Public forms of an entry (``VoiceLiveEmulatorConfig.replies``, CLI ``--reply`` / ``--reply-json``):

* ``"Some text"``: the assistant speaks it. ``{tool_output}`` in it is replaced, when the response starts,
  by the ``output`` of the newest ``function_call_output`` item in the conversation ("" if there is none).
* ``{"tool_calls": [{"name": "check_availability", "arguments": {"day": "Tuesday"}}, ...]}``: the response
  calls these functions (``arguments`` a JSON object as a dict, or a JSON string), one output item each.

The emulator's choice (nothing documents what a model does instead): if a scripted call names a function the
response does not offer, or ``tool_choice`` is ``"none"`` (or forces another function), the response speaks
``TOOL_FALLBACK_TEXT`` instead. A text entry under a ``tool_choice`` that forces a call (``"required"``, or a
named function) becomes that call (:func:`forced_call`).

With ``follow_say_exactly`` on (the demo), a ``response.create`` whose own ``instructions`` ask for words
verbatim ("… say exactly this …: <words>", as a client asks for a greeting, a wait phrase or a reprompt)
speaks those words and leaves the script where it was: a model told so would say them (:func:`said_exactly`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

TOOL_OUTPUT_PLACEHOLDER = "{tool_output}"
TOOL_FALLBACK_TEXT = "Sorry, I can't do that right now."
_SAY_EXACTLY = re.compile(r"\bsay(?:ing)? exactly this\b[^:]*:\s*(\S.*)", re.IGNORECASE | re.DOTALL)

ReplyEntry = str | Mapping[str, Any]


@dataclass(frozen=True)
class ScriptedCall:
    """One function call the model makes: the function's name and its arguments as a JSON string."""

    name: str
    arguments: str


def parse_entry(entry: Any) -> str | tuple[ScriptedCall, ...]:
    """A script entry as text or as its calls; ``ValueError`` for anything else (caught at config time)."""
    if isinstance(entry, str):
        return entry
    if not isinstance(entry, Mapping):
        raise ValueError(f"a reply is a text or a {{'tool_calls': [...]}} mapping, not {entry!r}")
    unknown = set(entry) - {"tool_calls"}
    if unknown:
        raise ValueError(f"unknown reply fields: {sorted(unknown)}")
    calls = entry.get("tool_calls")
    if not isinstance(calls, list | tuple) or not calls:
        raise ValueError("'tool_calls' must be a non-empty list")
    return tuple(_call(call, index) for index, call in enumerate(calls))


def _call(call: Any, index: int) -> ScriptedCall:
    where = f"tool_calls[{index}]"
    if not isinstance(call, Mapping):
        raise ValueError(f"{where} must be a mapping with 'name' and 'arguments'")
    unknown = set(call) - {"name", "arguments"}
    if unknown:
        raise ValueError(f"{where}: unknown fields {sorted(unknown)}")
    name = call.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}.name must be a non-empty string")
    arguments = call.get("arguments", {})
    if isinstance(arguments, Mapping):
        return ScriptedCall(name, orjson.dumps(dict(arguments)).decode())
    if isinstance(arguments, str):
        try:
            orjson.loads(arguments)
        except orjson.JSONDecodeError:
            raise ValueError(f"{where}.arguments is not valid JSON: {arguments!r}") from None
        return ScriptedCall(name, arguments)
    raise ValueError(f"{where}.arguments must be a dict or a JSON string")


def offered_functions(tools: Any, tool_choice: Any) -> frozenset[str]:
    """Names of the functions the model may call under ``tools`` and ``tool_choice``."""
    if tool_choice == "none" or not isinstance(tools, list):
        return frozenset()
    names = frozenset(
        tool["name"]
        for tool in tools
        if isinstance(tool, dict) and tool.get("type") == "function" and isinstance(tool.get("name"), str)
    )
    if isinstance(tool_choice, dict):  # {"type": "function", "name": X} forces X
        forced = tool_choice.get("name")
        return names & {forced} if isinstance(forced, str) else frozenset()
    return names


def forced_call(tools: Any, tool_choice: Any) -> ScriptedCall | None:
    """The call a text entry becomes when ``tool_choice`` forces one (``"required"``: the first function
    offered; ``{"type": "function", "name": X}``: X), with ``{}`` arguments. A model made to call a tool
    always calls one, so a client that forgets to lift ``required`` after the answers loops here as it would
    against the service."""
    if tool_choice != "required" and not isinstance(tool_choice, dict):
        return None
    offered = offered_functions(tools, tool_choice)
    if not offered:
        return None
    first = next(t["name"] for t in tools if isinstance(t, dict) and t.get("name") in offered)
    return ScriptedCall(first, "{}")


def all_offered(calls: Iterable[ScriptedCall], offered: frozenset[str]) -> bool:
    return all(call.name in offered for call in calls)


def fill_tool_output(text: str, output: str) -> str:
    """``text`` with every ``{tool_output}`` replaced (other braces are left alone)."""
    return text.replace(TOOL_OUTPUT_PLACEHOLDER, output)


def said_exactly(instructions: Any) -> str | None:
    """The words ``instructions`` ask to be said verbatim ("Say exactly this, and nothing else: <words>"),
    or ``None`` when they ask for none."""
    if not isinstance(instructions, str):
        return None
    match = _SAY_EXACTLY.search(instructions)
    return match.group(1).strip() if match else None
