"""The conversation so far, as text, in the order it happened: what a new Voice Live session is given
(``conversation.item.create`` items) when a lost or aged session is replaced mid-call."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class _Entry:
    role: str
    item_id: str
    text: str = ""
    heard_fraction: float = 1.0  # < 1 when the caller interrupted this assistant item


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
        entry = _Entry(role, item_id)
        self._entries.append(entry)
        self._by_item[item_id] = entry
        if len(self._entries) > 2 * self._max_items:
            dropped = self._entries[: len(self._entries) - self._max_items]
            self._entries = self._entries[len(dropped) :]
            for old in dropped:
                self._by_item.pop(old.item_id, None)

    def set_text(self, role: str, item_id: str, text: str) -> None:
        self.add(role, item_id)
        self._by_item[item_id].text = text

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

    def replay(self) -> list[tuple[str, str]]:
        """(role, text) pairs to recreate the conversation; interrupted replies keep only what was heard."""
        out: list[tuple[str, str]] = []
        for entry in self._entries:
            text = entry.text.strip()
            if entry.heard_fraction < 1.0 and text:
                words = text.split()
                text = " ".join(words[: int(len(words) * entry.heard_fraction)])
            if text:
                out.append((entry.role, text))
        return out[-self._max_items :]
