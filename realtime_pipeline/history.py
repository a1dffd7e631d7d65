"""The conversation so far, in the order it happened: what a new Voice Live session is given
(``conversation.item.create`` items) when a lost or aged session is replaced mid-call, and what the legacy
pipeline goes on from when the call is moved (chat messages)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from router.tool_calls import ToolCall, chat_exchange

FUNCTION_CALL = "function_call"

Replayed = tuple[str, str] | tuple[ToolCall, str]
"""(role, text) of a message, or (the call, the tool's answer) of a function call that was answered."""


@dataclass(slots=True)
class _Entry:
    role: str  # "user", "assistant" or FUNCTION_CALL
    item_id: str  # the item's id; a function call's key is its call id
    text: str = ""
    heard_fraction: float = 1.0  # < 1 when the caller interrupted this assistant item
    call: ToolCall | None = None  # a function call's name and arguments
    output: str | None = None  # a function call's answer, once Voice Live was given it


class ConversationHistory:
    __slots__ = ("_by_item", "_entries", "_max_items")

    def __init__(self, max_items: int = 60) -> None:
        self._entries: list[_Entry] = []
        self._by_item: dict[str, _Entry] = {}
        self._max_items = max_items

    def add(self, role: str, item_id: str) -> None:
        """Reserve the place of an item (its transcript may arrive later)."""
        if item_id in self._by_item:
            return
        self._append(_Entry(role, item_id))

    def _append(self, entry: _Entry) -> None:
        self._entries.append(entry)
        self._by_item[entry.item_id] = entry
        if len(self._entries) > 2 * self._max_items:
            dropped = self._entries[: len(self._entries) - self._max_items]
            self._entries = self._entries[len(dropped) :]
            for old in dropped:
                self._by_item.pop(old.item_id, None)

    def set_text(self, role: str, item_id: str, text: str) -> None:
        self.add(role, item_id)
        self._by_item[item_id].text = text

    def add_function_call(self, call: ToolCall) -> None:
        """A function the model called; replayed only once its answer is in (``set_function_output``), since
        a new session given a call without its output would wait for an answer no one sends."""
        key = f"call:{call.call_id}"
        if key not in self._by_item:
            self._append(_Entry(FUNCTION_CALL, key, call=call))

    def set_function_output(self, call_id: str, output: str) -> None:
        entry = self._by_item.get(f"call:{call_id}")
        if entry is not None:
            entry.output = output

    def cut(self, item_id: str, heard_fraction: float) -> None:
        entry = self._by_item.get(item_id)
        if entry is not None:
            entry.heard_fraction = max(0.0, min(1.0, heard_fraction))

    def last_question_unknown(self) -> bool:
        """True when the caller's newest words have no transcript yet: a new session could not know them."""
        for entry in reversed(self._entries):
            if entry.role == "user":
                return not entry.text.strip()
        return False

    def chat_messages(self) -> list[dict[str, Any]]:
        """The conversation as chat messages, for the legacy pipeline when the call moves over: what was
        heard, and in its place each function call that was answered, as its tool exchange (so the legacy
        model knows what a tool did, e.g. the booking it made, not only what was said of it)."""
        out: list[dict[str, Any]] = []
        for first, second in self.replay_items():
            if isinstance(first, ToolCall):
                out.extend(chat_exchange([(first, second)]))
            else:
                out.append({"role": first, "content": second})
        return out

    def replay_items(self) -> list[Replayed]:
        """The conversation for a new Voice Live session: the messages said (interrupted replies only as far
        as they were heard) and, in their place, the function calls that were answered (so the new session
        knows what the tools said)."""
        out: list[Replayed] = []
        for entry in self._entries:
            if entry.call is not None:
                if entry.output is not None:
                    out.append((entry.call, entry.output))
            elif text := self._heard_text(entry):
                out.append((entry.role, text))
        return out[-self._max_items :]

    @staticmethod
    def _heard_text(entry: _Entry) -> str:
        text = entry.text.strip()
        if entry.heard_fraction < 1.0 and text:
            words = text.split()
            text = " ".join(words[: int(len(words) * entry.heard_fraction)])
        return text
