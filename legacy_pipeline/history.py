"""Per-call conversation state in the shared store, so whichever replica gets the next turn can serve it.

Two things per call: the chat history (``get_history``/``append_history``, capped by the store) and a
small counter document (the last turn number and the run of empty turns).

The greeting writes neither. Every legacy call starts with the profile's greeting, so it is implied: the
model sees ``[greeting, *stored history]`` (cut to the cap, exactly as if it had been stored), and a call
with no counter document is at turn 0. That keeps the answer to ``POST /twilio/voice`` free of store
round trips. A call that did not start with our greeting (one moved over from realtime, whose history
already holds what was said) has ``greeted: false`` in its counters.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from router.observability import Metrics
from router.store.base import StateStore, StoreUnavailable

log = logging.getLogger("legacy_pipeline.history")

COUNTERS_TTL_S = 86_400.0


@dataclass
class TurnCounters:
    last_turn: int = 0  # 0 = the greeting; a caller's utterance is last_turn + 1
    empty_turns: int = 0
    greeted: bool = True  # the call began with the profile's greeting, which the history leaves implied


def counters_key(call_sid: str) -> str:
    return f"legacy:call:{call_sid}"


class ConversationState:
    """Reads and writes one call's history and counters; a store outage degrades to a fresh conversation."""

    def __init__(self, store: StateStore, metrics: Metrics, *, cap: int, greeting: str) -> None:
        self._store = store
        self._metrics = metrics
        self._cap = cap
        self._greeting = [{"role": "assistant", "content": greeting}] if greeting else []

    async def history(self, call_sid: str, counters: TurnCounters) -> list[dict[str, Any]]:
        """What the model sees of the conversation so far: the implied greeting, then what was stored."""
        try:
            messages = await self._store.get_history(call_sid)
        except StoreUnavailable:
            self._store_failed("get_history", call_sid)
            messages = []
        stored = [
            m
            for m in messages
            if m.get("role") in ("user", "assistant") and isinstance(m.get("content"), str)
        ]
        if not counters.greeted:
            return stored
        return [*self._greeting, *stored][-self._cap :] if self._cap > 0 else []

    async def append(self, call_sid: str, messages: list[dict[str, Any]]) -> None:
        try:
            await self._store.append_history(call_sid, messages, self._cap)
        except StoreUnavailable:
            self._store_failed("append_history", call_sid)

    async def counters(self, call_sid: str) -> TurnCounters:
        try:
            doc = await self._store.get_value(counters_key(call_sid))
        except StoreUnavailable:
            self._store_failed("get_value", call_sid)
            return TurnCounters()
        if not doc:
            return TurnCounters()
        return TurnCounters(
            last_turn=int(doc.get("last_turn", 0)),
            empty_turns=int(doc.get("empty_turns", 0)),
            greeted=bool(doc.get("greeted", True)),
        )

    async def save_counters(self, call_sid: str, counters: TurnCounters) -> None:
        try:
            await self._store.set_value(
                counters_key(call_sid),
                {
                    "last_turn": counters.last_turn,
                    "empty_turns": counters.empty_turns,
                    "greeted": counters.greeted,
                },
                ttl=COUNTERS_TTL_S,
            )
        except StoreUnavailable:
            self._store_failed("set_value", call_sid)

    def _store_failed(self, operation: str, call_sid: str) -> None:
        self._metrics.store_errors.labels(operation).inc()
        log.warning("state store unavailable during %s", operation, extra={"call_sid": call_sid})
