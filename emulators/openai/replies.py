"""What the emulated model says, and how that text is cut into tokens.

Tokens are a cheap stand-in for BPE: an optional run of whitespace followed by up to four non-space
characters, so ``"".join(tokens) == text`` and a token is about four characters long, which keeps the
``usage`` numbers, ``max_tokens`` truncation and the streamed chunks consistent with each other.

A reply is either text or, for a tool-call script entry, a :class:`~emulators.openai.tools.ToolCallReply`.
Text may carry ``{tool_output}``, replaced by the newest ``tool`` message of the request, so a script can
show that the client sent its tool's result back.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Collection, Sequence
from typing import Any

from emulators.openai.tools import (
    TOOL_OUTPUT,
    TOOL_UNAVAILABLE_REPLY,
    ScriptEntry,
    ToolCallReply,
    parse_script_entry,
    public_entry,
)

_TOKEN = re.compile(r"\s*\S{1,4}|\s+")

ReplyFunction = Callable[[str], str]
ReplyPolicy = Callable[[Sequence[Any]], ScriptEntry | None]
"""A model's behaviour over the whole request (all its messages): a script entry, or None for the default.
Unlike the shared script, it answers each conversation from where that conversation is, so many calls at
once each get their own tool call and its read-back (the demo's model)."""


def tokenize(text: str) -> list[str]:
    """Split ``text`` into ~4-character tokens that concatenate back to ``text``."""
    return _TOKEN.findall(text)


def count_tokens(text: str) -> int:
    return len(tokenize(text))


def default_reply(last_user_message: str) -> str:
    """A deterministic, phone-friendly answer to the caller's last utterance."""
    said = " ".join(last_user_message.split())
    if not said:
        return "Hello! How can I help you today?"
    return f"Sure, I can help with that. You said: {said} Is there anything else?"


def tool_result_reply(outputs: Sequence[str]) -> str:
    """The default answer once the client has run the tools: it reads their results back to the caller."""
    found = " ".join(" ".join(output.split()) for output in outputs if output.strip())
    return f"Here's what I found: {found}" if found else "I couldn't find anything."


def message_text(message: Any) -> str:
    """The text of one chat message, whether ``content`` is a string or a list of content parts."""
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def last_user_message(messages: Sequence[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return message_text(message)
    return ""


def tool_messages(messages: Sequence[Any]) -> list[dict[str, Any]]:
    """The ``tool`` messages of a request as ``{"index", "tool_call_id", "content"}``, in order."""
    return [
        {"index": i, "tool_call_id": m.get("tool_call_id"), "content": message_text(m)}
        for i, m in enumerate(messages)
        if isinstance(m, dict) and m.get("role") == "tool"
    ]


def newest_tool_output(messages: Sequence[Any]) -> str:
    """Content of the last ``tool`` message (what ``{tool_output}`` stands for); empty if there is none."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "tool":
            return message_text(message)
    return ""


def _trailing_tool_outputs(messages: Sequence[Any]) -> list[str] | None:
    """Outputs of the ``tool`` messages ending the request, or ``None`` if it does not end with one."""
    outputs: list[str] = []
    for message in reversed(messages):
        if not (isinstance(message, dict) and message.get("role") == "tool"):
            break
        outputs.append(message_text(message))
    return outputs[::-1] or None


def prompt_tokens(messages: Sequence[Any]) -> int:
    """OpenAI's documented chat overhead: 3 tokens per message plus 3 to prime the reply."""
    return sum(count_tokens(message_text(m)) + 3 for m in messages) + 3


class ReplySource:
    """Either a script (a list of replies used in turn, cycling) or a function of the last user message.

    A script entry is reply text or ``{"tool_calls": [{"name": …, "arguments": {…} or "json"}, …]}``. A
    tool-call entry is answered as tool calls only when the request offers every tool it names and
    ``tool_choice`` is not ``"none"``; otherwise it says :data:`TOOL_UNAVAILABLE_REPLY`. Without a script,
    a request ending in ``tool`` messages is answered by reading their results back (unless a custom
    ``function`` was given, which keeps answering the last user message).
    """

    def __init__(
        self,
        script: Sequence[ScriptEntry] | None = None,
        function: ReplyFunction | None = None,
        policy: ReplyPolicy | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._policy = policy
        self._script = _parse_script(script)
        self._next = 0
        self._function = function or default_reply
        self._custom_function = function is not None

    @property
    def script(self) -> list[ScriptEntry]:
        with self._lock:
            return [public_entry(entry) for entry in self._script]

    @staticmethod
    def check_script(script: Sequence[ScriptEntry] | None) -> None:
        """Raise ``ValueError`` if ``script`` has a malformed entry (without changing anything)."""
        _parse_script(script)

    def set_policy(self, policy: ReplyPolicy | None) -> None:
        """Answer requests the script does not (no script set) with ``policy`` first."""
        with self._lock:
            self._policy = policy

    def set_script(self, script: Sequence[ScriptEntry] | None) -> None:
        """Replace the script (``ValueError`` if an entry is malformed, leaving the old one in place)."""
        parsed = _parse_script(script)
        with self._lock:
            self._script = parsed
            self._next = 0

    def reply_to(
        self, messages: Sequence[Any], *, offered: Collection[str] = (), tools_allowed: bool = True
    ) -> str | ToolCallReply:
        """The next reply: text (with ``{tool_output}`` filled in) or the tool calls to make."""
        with self._lock:
            entry = self._script[self._next % len(self._script)] if self._script else None
            if entry is not None:
                self._next += 1
            policy = self._policy
        if entry is None and policy is not None:
            chosen = policy(messages)
            entry = None if chosen is None else parse_script_entry(chosen)
        if isinstance(entry, ToolCallReply):
            if tools_allowed and all(name in offered for name in entry.names):
                return entry
            entry = TOOL_UNAVAILABLE_REPLY
        if entry is None:
            outputs = None if self._custom_function else _trailing_tool_outputs(messages)
            entry = (
                tool_result_reply(outputs)
                if outputs is not None
                else self._function(last_user_message(messages))
            )
        return entry.replace(TOOL_OUTPUT, newest_tool_output(messages))


def _parse_script(script: Sequence[ScriptEntry] | None) -> list[str | ToolCallReply]:
    if script is not None and (isinstance(script, str | bytes) or not isinstance(script, Sequence)):
        raise ValueError("script must be a list of entries")
    return [parse_script_entry(entry) for entry in script or []]
