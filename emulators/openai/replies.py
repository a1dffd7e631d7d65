"""What the emulated model says, and how that text is cut into tokens.

Tokens are a cheap stand-in for BPE: an optional run of whitespace followed by up to four non-space
characters, so ``"".join(tokens) == text`` and a token is about four characters long, which keeps the
``usage`` numbers, ``max_tokens`` truncation and the streamed chunks consistent with each other.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

_TOKEN = re.compile(r"\s*\S{1,4}|\s+")

ReplyFunction = Callable[[str], str]


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


def prompt_tokens(messages: Sequence[Any]) -> int:
    """OpenAI's documented chat overhead: 3 tokens per message plus 3 to prime the reply."""
    return sum(count_tokens(message_text(m)) + 3 for m in messages) + 3


class ReplySource:
    """Either a script (a list of replies used in turn, cycling) or a function of the last user message."""

    def __init__(self, script: Sequence[str] | None = None, function: ReplyFunction | None = None) -> None:
        self._lock = threading.Lock()
        self._script: list[str] = list(script or [])
        self._next = 0
        self._function = function or default_reply

    @property
    def script(self) -> list[str]:
        with self._lock:
            return list(self._script)

    def set_script(self, script: Sequence[str] | None) -> None:
        with self._lock:
            self._script = list(script or [])
            self._next = 0

    def reply_to(self, messages: Sequence[Any]) -> str:
        with self._lock:
            if self._script:
                reply = self._script[self._next % len(self._script)]
                self._next += 1
                return reply
        return self._function(last_user_message(messages))
