"""Guardrails read from a call record: session reconnects and renewals, the move to legacy, and how Voice Live
failed (the WebSocket close code or the upgrade's HTTP status: D.4's "WS error codes").

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
FAILED_AT_START = (
    "voicelive_failed"  # reason: voicelive_unreachable | _handshake_failed | _session_not_ready | …
)
LOST_MID_CALL = "voicelive_lost"  # cause: lost | error | session_expired


@dataclass(frozen=True, slots=True)
class CallGuardrails:
    reconnects: int = 0  # sessions replaced after a loss or a session_expired
    renewals: int = 0  # sessions replaced ahead of the service's age limit, between turns
    move: str | None = None  # "ok" (Twilio took the redirect) | "failed" | None (no move tried)
    # One key per Voice Live failure: "unreachable", "handshake_failed 503", "lost 1006", "error server_error"…
    voicelive_failures: tuple[str, ...] = ()


def failure_key(kind: str, code: Any) -> str:
    """``kind`` without its ``voicelive_`` prefix, and the code when there is one."""
    kind = kind.removeprefix("voicelive_")
    return (
        f"{kind} {code}"
        if isinstance(code, int | str) and not isinstance(code, bool) and code != ""
        else kind
    )


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def call_guardrails(call: Mapping[str, Any]) -> CallGuardrails:
    reconnects = renewals = 0
    move: str | None = None
    failures: list[str] = []
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
        elif kind == FAILED_AT_START:
            failures.append(failure_key(str(event.get("reason") or "failed"), event.get("code")))
        elif kind == LOST_MID_CALL:
            failures.append(failure_key(str(event.get("cause") or "lost"), event.get("code")))
    stats = call.get("realtime")
    if isinstance(stats, Mapping):
        reconnects = max(reconnects, _count(stats.get("reconnects")))
        renewals = max(renewals, _count(stats.get("renewals")))
    if move is None:  # no event (lost, or not written yet): the record's own fields
        if call.get("move_failed"):
            move = "failed"
        elif call.get("moved_to_legacy"):
            move = "ok"
    return CallGuardrails(reconnects, renewals, move, tuple(failures))
