"""What a legacy answer waits on in the store: the greeting waits on nothing, caller turns only on their
conversation state; turn records are written behind the answer and survive a slow or failing store."""

from __future__ import annotations

import asyncio
from typing import Any

from router.store.base import StateStore, StoreUnavailable
from tests.legacy.conftest import HarnessFactory

CALL = "CA" + "7" * 32


class HeldWrites:
    """Delegates to a real store, but holds every batched record write until released (or fails them)."""

    def __init__(self, inner: StateStore) -> None:
        self._inner = inner
        self.release = asyncio.Event()  # set from the server's loop via call_soon_threadsafe
        self.fail = False
        self.writes_started = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def append_turns(self, turns: list[dict[str, Any]]) -> None:
        await self._held()
        await self._inner.append_turns(turns)

    async def put_calls(self, records: list[dict[str, Any]]) -> None:
        await self._held()
        await self._inner.put_calls(records)

    async def _held(self) -> None:
        self.writes_started += 1
        if self.fail:
            raise StoreUnavailable("store down (test)")
        await self.release.wait()


async def test_the_greeting_is_answered_while_the_store_holds_every_write(legacy: HarnessFactory) -> None:
    held: list[HeldWrites] = []

    def wrap(store: StateStore) -> StateStore:
        held.append(HeldWrites(store))
        return held[0]

    h = await legacy(wrap_store=wrap)
    greeting = await asyncio.wait_for(h.twilio.incoming_call(CALL), timeout=10)
    assert greeting.status == 200 and len(greeting.plays) == 1 and greeting.gather is not None
    # Nothing of this call is in the store yet: no history, no counters, no turn record.
    assert await h.store.get_history(CALL) == []
    assert await h.store.get_value(f"legacy:call:{CALL}") is None
    assert await h.store.list_turns(call_sid=CALL) == []

    # A caller turn still works (history and counters are read, never waited behind held records)...
    reply = await asyncio.wait_for(h.twilio.say(greeting, CALL, "What are your hours?"), timeout=10)
    assert reply.status == 200 and len(reply.plays) == 1
    assert [m["role"] for m in h.openai.requests[-1].body["messages"]] == ["system", "assistant", "user"]

    # ...and once the store takes writes again, both turn records land, in order.
    assert h.server.loop is not None
    h.server.loop.call_soon_threadsafe(held[0].release.set)
    turns = await h.list_turns(CALL)
    assert [(t["turn"], t["assistant_text"] == h.profile.greeting) for t in turns] == [(0, True), (1, False)]


async def test_a_failing_store_loses_the_records_not_the_answers(legacy: HarnessFactory) -> None:
    held: list[HeldWrites] = []

    def wrap(store: StateStore) -> StateStore:
        held.append(HeldWrites(store))
        held[0].fail = True
        return held[0]

    h = await legacy(wrap_store=wrap)
    greeting = await h.twilio.incoming_call(CALL)
    assert greeting.status == 200 and len(greeting.plays) == 1
    reply = await h.twilio.say(greeting, CALL, "Can I book for Tuesday?")
    assert reply.status == 200 and len(reply.plays) == 1
    assert await h.list_turns(CALL) == []
    assert held[0].writes_started >= 1
    assert h.sample("voice_router_store_errors_total", operation="append_turn") == 2
