"""One representative call of every StateStore method, for the "backend unavailable" tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from flags.breaker_state import BreakerBackend, BreakerDocument
from router.store.base import AuditEntry, StateStore

T0 = 1_700_000_000

StoreCall = Callable[[StateStore], Awaitable[Any]]

EVERY_METHOD: dict[str, StoreCall] = {
    "ping": lambda s: s.ping(),
    "get_rollout": lambda s: s.get_rollout(),
    "swap_rollout": lambda s: s.swap_rollout(None, {"version": 1}),
    "breaker_load": lambda s: s.breaker_load(),
    "breaker_swap": lambda s: s.breaker_swap(None, BreakerDocument(version=1)),
    "breaker_add_outcome": lambda s: s.breaker_add_outcome(T0, failed=True, slow=False),
    "breaker_window": lambda s: s.breaker_window(T0, T0 + 300),
    "breaker_clear_window": lambda s: s.breaker_clear_window(),
    "append_audit": lambda s: s.append_audit(AuditEntry(T0, "a", "x", "", None, None)),
    "list_audit": lambda s: s.list_audit(),
    "put_call": lambda s: s.put_call({"call_sid": "CA1", "started_at": T0}),
    "put_calls": lambda s: s.put_calls([{"call_sid": "CA1", "started_at": T0}]),
    "merge_call": lambda s: s.merge_call("CA1", {"status": "completed"}),
    "append_call_event": lambda s: s.append_call_event("CA1", {"event": "x"}),
    "get_call": lambda s: s.get_call("CA1"),
    "list_calls": lambda s: s.list_calls(),
    "append_turn": lambda s: s.append_turn({"call_sid": "CA1", "at": T0}),
    "append_turns": lambda s: s.append_turns([{"call_sid": "CA1", "at": T0}]),
    "list_turns": lambda s: s.list_turns(),
    "prune_records": lambda s: s.prune_records(T0),
    "get_history": lambda s: s.get_history("CA1"),
    "append_history": lambda s: s.append_history("CA1", [{"content": "x"}], cap=3),
    "get_value": lambda s: s.get_value("k"),
    "set_value": lambda s: s.set_value("k", {"v": 1}),
    "webhook_claim": lambda s: s.webhook_claim("CA1:tok", "owner", 10.0),
    "webhook_answer": lambda s: s.webhook_answer("CA1:tok", {"status": 200}, 20.0),
    "webhook_release": lambda s: s.webhook_release("CA1:tok", "owner"),
}


def protocol_methods() -> set[str]:
    """Every method the protocol declares (except open/close), so EVERY_METHOD cannot fall behind."""
    declared = {
        name for cls in (StateStore, BreakerBackend) for name in vars(cls) if not name.startswith("_")
    }
    return declared - {"open", "close"}
