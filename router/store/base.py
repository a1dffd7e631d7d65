"""The one interface both state backends (SQLite, Redis) implement.

Documents are JSON-serialisable dicts at this boundary; typed models (``RolloutConfig``,
``CallRecord``, ``TurnRecord``, ``BreakerDocument``) convert at the edges. Every method raises
:class:`StoreUnavailable` when the backend cannot be reached, so callers have one thing to catch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

from flags.breaker_state import BreakerBackend, BreakerDocument, BreakerTransition


class StoreUnavailable(Exception):
    """The backend did not answer (connection refused, timeout, disk error)."""


class StoreOutcomeUnknown(StoreUnavailable):
    """A write the backend did not confirm in time: it may have been made. (Redis only: SQLite always knows.)"""


@dataclass(frozen=True)
class AuditEntry:
    at: float  # epoch seconds
    actor: str
    action: (
        str  # e.g. "rollout.set", "rollout.mode", "rollout.allow.add", "breaker.open", "breaker.transition"
    )
    reason: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    id: int | None = None  # assigned by the store

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def breaker_audit_entry(transition: BreakerTransition, after: BreakerDocument) -> AuditEntry:
    """The audit entry a breaker transition is stored with (``breaker.<cause>``, before and after)."""
    return AuditEntry(
        at=after.since,
        actor=transition.actor,
        action=f"breaker.{transition.cause}" if transition.cause else "breaker.transition",
        reason=after.reason or transition.cause,
        before=transition.before.to_dict(),
        after=after.to_dict(),
    )


@dataclass(frozen=True)
class WebhookClaim:
    """What ``webhook_claim`` found for a Twilio request: the claim is ours now (do the work), or the answer an
    earlier attempt stored, or neither (another attempt holds a live claim and has not answered yet)."""

    claimed: bool = False
    answer: dict[str, Any] | None = None


@runtime_checkable
class StateStore(BreakerBackend, Protocol):
    """Everything the router and the pipelines keep outside the process."""

    async def open(self) -> None:
        """Connect / create tables. Called once by the app's lifespan."""
        ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the backend answers now (used by /readyz)."""
        ...

    # Rollout -----------------------------------------------------------------
    async def get_rollout(self) -> dict[str, Any] | None: ...

    async def swap_rollout(
        self, expected_version: int | None, new: dict[str, Any], audit: AuditEntry | None = None
    ) -> bool:
        """Write ``new`` iff the stored version equals ``expected_version`` (None: none stored). With
        ``audit``, the entry is appended in the same atomic step: the change and its audit entry are
        both stored or neither is, so a change is never live without its audit trail."""
        ...

    # Audit -------------------------------------------------------------------
    async def append_audit(self, entry: AuditEntry) -> AuditEntry:
        """Store the entry; returns it with its ``id``."""
        ...

    async def list_audit(self, limit: int = 50) -> list[AuditEntry]:
        """Newest first."""
        ...

    # Calls and turns -----------------------------------------------------------
    async def put_call(self, record: dict[str, Any]) -> None:
        """Create or replace the call document keyed by ``record["call_sid"]``; its events are replaced
        when ``record`` has an ``events`` key and kept as they are when it has none."""
        ...

    async def put_calls(self, records: list[dict[str, Any]]) -> None:
        """``put_call`` for several documents in one round trip (the webhook's write-behind batches)."""
        ...

    async def merge_call(self, call_sid: str, fields: dict[str, Any]) -> None:
        """Shallow-merge ``fields`` into the call document (creating ``{"call_sid": …}`` if absent)."""
        ...

    async def append_call_event(self, call_sid: str, event: dict[str, Any]) -> None:
        """Append to the call's ``events`` list without a read-modify-write race."""
        ...

    async def get_call(self, call_sid: str) -> dict[str, Any] | None: ...

    async def list_calls(self, limit: int = 50, since: float | None = None) -> list[dict[str, Any]]:
        """Newest first by ``started_at``."""
        ...

    async def append_turn(self, turn: dict[str, Any]) -> None:
        """Store one turn record (``call_sid``, ``pipeline``, ``turn``, ``at`` …)."""
        ...

    async def append_turns(self, turns: list[dict[str, Any]]) -> None:
        """``append_turn`` for several records in one round trip, in order (the legacy write-behind)."""
        ...

    async def list_turns(
        self, since: float | None = None, call_sid: str | None = None, limit: int = 100_000
    ) -> list[dict[str, Any]]:
        """Oldest first by ``at``."""
        ...

    async def prune_records(self, before: float) -> int:
        """Delete calls that started before ``before`` (with their events and turns) and turns older than
        it; returns the number of calls deleted. Keeps call and turn records from growing forever."""
        ...

    # Legacy conversation history ---------------------------------------------
    async def get_history(self, call_sid: str) -> list[dict[str, Any]]: ...

    async def append_history(self, call_sid: str, messages: list[dict[str, Any]], cap: int) -> None:
        """Append chat messages and keep only the newest ``cap`` (expires with the call, ~1 day)."""
        ...

    async def get_value(self, key: str) -> dict[str, Any] | None:
        """Small shared key-value documents (e.g. per-call counters). Expire after ``ttl`` seconds."""
        ...

    async def set_value(self, key: str, value: dict[str, Any], ttl: float = 86_400) -> None: ...

    # Twilio webhook retries across workers (router/shared_replay.py) ------------------------------
    async def webhook_claim(self, key: str, owner: str, ttl: float) -> WebhookClaim:
        """In one atomic step: the answer stored for ``key``, if any; else a claim on ``key`` for ``owner``
        lasting ``ttl`` seconds, unless another owner holds one that has not expired (then neither). A claim
        ``owner`` already holds counts as claimed and now lasts ``ttl`` seconds from now: a live attempt
        renews its lease this way, so a dead one's expires soon."""
        ...

    async def webhook_answer(self, key: str, answer: dict[str, Any], ttl: float) -> None:
        """Store ``key``'s answer for ``ttl`` seconds in place of its claim, unless an answer is stored
        already: the first answer stays, so every later retry gets the same one."""
        ...

    async def webhook_release(self, key: str, owner: str) -> None:
        """Drop ``owner``'s unanswered claim on ``key`` (its attempt failed), so a retry takes over at once."""
        ...
