"""The rollout configuration operators change: percent, mode, stickiness and per-caller overrides."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any


class Mode(StrEnum):
    SPLIT = "split"
    LEGACY_ONLY = "legacy_only"  # kill switch: every call to legacy, whatever else is set
    REALTIME_ONLY = "realtime_only"  # force: every call to realtime (only the kill switch outranks it)


class Stickiness(StrEnum):
    FROM = "from"  # the caller's number: the same person gets the same pipeline on every call
    CALL_SID = "call_sid"  # per call: spreads one heavy caller across both arms


@dataclass(frozen=True)
class RolloutConfig:
    """One version of the rollout. ``percent_bp`` is basis points (0..10000) so 12.34% is exact."""

    percent_bp: int = 0
    mode: Mode = Mode.SPLIT
    stickiness: Stickiness = Stickiness.FROM
    allow: frozenset[str] = field(default_factory=frozenset)
    deny: frozenset[str] = field(default_factory=frozenset)
    salt: str = "voice-router-realtime"
    version: int = 0
    updated_at: str = ""
    updated_by: str = ""

    @property
    def percent(self) -> float:
        return self.percent_bp / 100

    def with_changes(self, **changes: Any) -> RolloutConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The admin API's JSON shape (and the stored shape)."""
        return {
            "percent": self.percent,
            "percent_bp": self.percent_bp,
            "mode": self.mode.value,
            "stickiness": self.stickiness.value,
            "allow": sorted(self.allow),
            "deny": sorted(self.deny),
            "salt": self.salt,
            "version": self.version,
            "updated_at": self.updated_at,
            "updated_by": self.updated_by,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RolloutConfig:
        return cls(
            percent_bp=int(data.get("percent_bp", round(float(data.get("percent", 0)) * 100))),
            mode=Mode(data.get("mode", Mode.SPLIT)),
            stickiness=Stickiness(data.get("stickiness", Stickiness.FROM)),
            allow=frozenset(data.get("allow", ())),
            deny=frozenset(data.get("deny", ())),
            salt=str(data.get("salt", "voice-router-realtime")),
            version=int(data.get("version", 0)),
            updated_at=str(data.get("updated_at", "")),
            updated_by=str(data.get("updated_by", "")),
        )
