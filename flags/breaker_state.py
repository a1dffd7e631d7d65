"""What the circuit breaker keeps in the shared state store, and the narrow interface it needs from it.

The breaker logic (``flags/breaker.py``) is a state machine over a :class:`BreakerDocument` that is
read, changed and written back with compare-and-set on ``version``, plus a time-based window of
per-second outcome buckets. Keeping the store's side this small lets SQLite (one replica), Redis (many
replicas) and an in-memory fake (unit tests) all implement it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"  # operator: realtime off until an operator says otherwise
    FORCED_CLOSED = "forced_closed"  # operator: ignore failures (outcomes are still counted)


@dataclass
class HalfOpenTally:
    permits: int = 0  # trial calls admitted so far
    successes: int = 0
    failures: int = 0
    slow: int = 0
    last_permit_at: float = 0.0  # wall clock of the newest permit: stale trials are timed from it


# Fields a newer release may add are ignored, not fatal: during a rolling deploy old replicas read the
# document the new ones write.
_TALLY_COUNTS = frozenset(HalfOpenTally.__dataclass_fields__) - {"last_permit_at"}


def _tally(data: dict[str, Any]) -> HalfOpenTally:
    tally = HalfOpenTally(**{key: int(value) for key, value in data.items() if key in _TALLY_COUNTS})
    tally.last_permit_at = float(data.get("last_permit_at", 0.0))
    return tally


@dataclass
class BreakerDocument:
    state: BreakerState = BreakerState.CLOSED
    since: float = 0.0  # wall-clock epoch seconds of the last transition
    reason: str = ""
    version: int = 0
    consecutive_connect_failures: int = 0
    half_open: HalfOpenTally = field(default_factory=HalfOpenTally)
    # Counts half-open rounds (each entry to HALF_OPEN and each restart after stale trials were released);
    # a trial permit carries the round it was taken in, so a late report or release from an earlier round
    # cannot take the place of a trial of this one.
    trial_round: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BreakerDocument:
        return cls(
            state=BreakerState(data.get("state", BreakerState.CLOSED)),
            since=float(data.get("since", 0.0)),
            reason=str(data.get("reason", "")),
            version=int(data.get("version", 0)),
            consecutive_connect_failures=int(data.get("consecutive_connect_failures", 0)),
            half_open=_tally(data.get("half_open", {})),
            trial_round=int(data.get("trial_round", 0)),
        )


@dataclass(frozen=True)
class BreakerTransition:
    """A change the breaker announces (a transition, or an operator's action): the backend writes its audit
    entry, and clears the window when asked, in the same atomic step as the new document."""

    before: BreakerDocument
    cause: str
    actor: str
    clear_window: bool = False  # forget every bucket too (resilience4j resets its metrics on a transition)


@dataclass(frozen=True)
class WindowTotals:
    calls: int = 0
    failures: int = 0
    slow: int = 0


class BreakerBackend(Protocol):
    """Storage the breaker needs. Every method is safe to call from several replicas at once."""

    async def breaker_load(self) -> BreakerDocument | None:
        """The current document, or None before the first write."""
        ...

    async def breaker_swap(
        self, expected_version: int | None, new: BreakerDocument, transition: BreakerTransition | None = None
    ) -> bool:
        """Write ``new`` iff the stored version is ``expected_version`` (None: nothing stored yet). With
        ``transition``, its audit entry and the window clear it asks for are part of the same atomic write:
        all of it is stored or none (a stale version, or a failure, changes nothing)."""
        ...

    async def breaker_add_outcome(self, second: int, *, failed: bool, slow: bool) -> None:
        """Count one finished call in the bucket of epoch second ``second``."""
        ...

    async def breaker_window(self, first_second: int, last_second: int) -> WindowTotals:
        """Sum of the buckets from ``first_second`` to ``last_second`` inclusive."""
        ...

    async def breaker_clear_window(self) -> None:
        """Forget every bucket (on a transition, as resilience4j resets its metrics)."""
        ...
