"""Guardrails read from a call record: session reconnects and renewals, and the move to legacy.

The realtime bridge writes them twice (``realtime_pipeline/bridge.py``): as call events the moment they happen
(``voicelive_session_replaced`` with ``reason`` ``renewal`` or the loss's cause, ``moved_to_legacy`` with
``accepted``) and as fields merged into the record (``realtime.reconnects`` / ``realtime.renewals`` when the
stream ends, ``moved_to_legacy`` and ``move_failed``). Either can be short: the events of a call whose write
queue overflowed, the stream stats of a call still live. Each is a lower bound, so the larger is counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SESSION_REPLACED = "voicelive_session_replaced"
MOVED = "moved_to_legacy"
RENEWAL = "renewal"


@dataclass(frozen=True, slots=True)
class CallGuardrails:
    reconnects: int = 0  # sessions replaced after a loss or a session_expired
    renewals: int = 0  # sessions replaced ahead of the service's age limit, between turns
    move: str | None = None  # "ok" (Twilio took the redirect) | "failed" | None (no move tried)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def call_guardrails(call: Mapping[str, Any]) -> CallGuardrails:
    reconnects = renewals = 0
    move: str | None = None
    for event in call.get("events") or ():
        if not isinstance(event, Mapping):
            continue
        kind = event.get("type")
        if kind == SESSION_REPLACED:
            if event.get("reason") == RENEWAL:
                renewals += 1
            else:
                reconnects += 1
        elif kind == MOVED:
            move = "ok" if event.get("accepted") else "failed"
    stats = call.get("realtime")
    if isinstance(stats, Mapping):
        reconnects = max(reconnects, _count(stats.get("reconnects")))
        renewals = max(renewals, _count(stats.get("renewals")))
    if move is None:  # no event (lost, or not written yet): the record's own fields
        if call.get("move_failed"):
            move = "failed"
        elif call.get("moved_to_legacy"):
            move = "ok"
    return CallGuardrails(reconnects, renewals, move)
