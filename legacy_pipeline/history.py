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

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from router.observability import Metrics
from router.store.base import StateStore, StoreUnavailable

log = logging.getLogger("legacy_pipeline.history")

COUNTERS_TTL_S = 86_400.0
WRITE_TIMEOUT_S = 1.0
"""The history and counter writes run after the turn's deadline (once its reply is uploaded, the caller hears
it): each is bounded, so a degraded store cannot hold the answer past Twilio's 15 s webhook timeout."""


@dataclass
class TurnCounters:
    last_turn: int = 0  # 0 = the greeting; a caller's utterance is last_turn + 1
    empty_turns: int = 0
    greeted: bool = True  # the call began with the profile's greeting, which the history leaves implied
    # A call moved from realtime: its last realtime turn is written when its stream ends, which may be after
    # the resume read the turns, so the caller's first turn here reads them again before numbering itself.
    recount: bool = False


def counters_key(call_sid: str) -> str:
    return f"legacy:call:{call_sid}"


def well_formed(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stored messages the chat API accepts as history: user and assistant words, and tool exchanges
    whole. The cap cuts the oldest messages by count, so it can leave the answers of a tool exchange whose
    call it cut off (or, from a damaged store, a call without its answers): the API refuses either, and the
    whole turn would fail, so the broken part is left out."""
    messages = [m for m in messages if isinstance(m, dict)]
    out: list[dict[str, Any]] = []
    i = 0
    while i < len(messages):
        message = messages[i]
        role = message.get("role")
        if role == "assistant" and message.get("tool_calls"):
            answers = []
            for answer in messages[i + 1 :]:
                if answer.get("role") != "tool":
                    break
                answers.append(answer)
            i += 1 + len(answers)
            answered = [
                a["tool_call_id"]
                for a in answers
                if isinstance(a.get("tool_call_id"), str) and isinstance(a.get("content"), str)
            ]
            if len(answered) == len(answers) and sorted(answered) == _tool_call_ids(message):
                out.append(message)
                out.extend(answers)
            continue
        if role in ("user", "assistant") and isinstance(message.get("content"), str):
            out.append(message)
        i += 1
    return out


def _tool_call_ids(message: dict[str, Any]) -> list[str] | None:
    """The sorted ids of an assistant message's function calls, or ``None`` if they are not well formed."""
    calls = message.get("tool_calls")
    if not isinstance(calls, list):
        return None
    ids = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not (
            isinstance(function, dict)
            and isinstance(call.get("id"), str)
            and isinstance(function.get("name"), str)
            and isinstance(function.get("arguments"), str)
        ):
            return None
        ids.append(call["id"])
    return sorted(ids)


class ConversationState:
    """Reads and writes one call's history and counters; a store outage degrades to a fresh conversation."""

    def __init__(
        self,
        store: StateStore,
        metrics: Metrics,
        *,
        cap: int,
        greeting: str,
        write_timeout_s: float = WRITE_TIMEOUT_S,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._cap = cap
        self._write_timeout_s = write_timeout_s
        self._greeting = [{"role": "assistant", "content": greeting}] if greeting else []

    async def history(self, call_sid: str, counters: TurnCounters) -> list[dict[str, Any]]:
        """What the model sees of the conversation so far: the implied greeting, then what was stored."""
        try:
            messages = await self._store.get_history(call_sid)
        except StoreUnavailable:
            self._store_failed("get_history", call_sid)
            messages = []
        if not counters.greeted:
            return well_formed(messages)
        return well_formed([*self._greeting, *messages][-self._cap :]) if self._cap > 0 else []

    async def append(self, call_sid: str, messages: list[dict[str, Any]]) -> None:
        await self._write(
            "append_history", call_sid, self._store.append_history(call_sid, messages, self._cap)
        )

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
            recount=bool(doc.get("recount", False)),
        )

    async def save_counters(self, call_sid: str, counters: TurnCounters) -> None:
        document = {
            "last_turn": counters.last_turn,
            "empty_turns": counters.empty_turns,
            "greeted": counters.greeted,
            "recount": counters.recount,
        }
        await self._write(
            "set_value", call_sid, self._store.set_value(counters_key(call_sid), document, ttl=COUNTERS_TTL_S)
        )

    async def _write(self, operation: str, call_sid: str, write: Awaitable[None]) -> None:
        """A write the caller's answer waits on: a failure of any kind, or one slower than the bound, is counted
        and logged, never raised (the reply is uploaded: the caller hears it whatever the store does)."""
        try:
            async with asyncio.timeout(self._write_timeout_s):
                await write
        except StoreUnavailable:
            self._store_failed(operation, call_sid)
        except TimeoutError:
            self._store_failed(f"{operation}_timeout", call_sid)
        except Exception:
            self._metrics.store_errors.labels(operation).inc()
            log.exception("state store write failed: %s", operation, extra={"call_sid": call_sid})

    def _store_failed(self, operation: str, call_sid: str) -> None:
        self._metrics.store_errors.labels(operation).inc()
        log.warning("state store unavailable during %s", operation, extra={"call_sid": call_sid})
