"""Call and turn records: what each pipeline writes so the two can be compared on the same callers.

Both pipelines use the same turn numbering (0 is the greeting, 1 the caller's first utterance, …) and
the same stage names for what they share, so a comparison can line them up:

* ``response_ms`` — caller's speech end → first reply audio sent to Twilio (server's view)
* ``heard_ms``    — caller's speech end → first reply audio played to the caller, where observable
  (realtime: the first mark echo; legacy: not observable, so never set)

The two arms' server-side "speech end" differ (``router.comparison.SERVER_ANCHORS_NOTE``): realtime's is Voice
Live's ``speech_stopped``; legacy's is the ``<Gather>`` result's arrival, after Twilio's recognition.
* ``stages``      — per-stage milliseconds; realtime: ``session_connect``, ``session_ready``,
  ``first_audio``; legacy: ``stt``, ``llm_first_token``, ``llm_total``, ``tts``, ``upload``,
  ``server_total``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from flags.breaker import TrialPermit


class Pipeline(StrEnum):
    LEGACY = "legacy"
    REALTIME = "realtime"


# Why a call meant for realtime went to legacy because the worker already serves its limit of realtime
# calls: the webhook's decision reason and the bridge's move reason (realtime_pipeline.admission).
REALTIME_FULL = "realtime_full"


@dataclass
class TurnRecord:
    call_sid: str
    pipeline: Pipeline
    turn: int
    at: float  # wall-clock epoch seconds when the turn's reply started (or failed)
    response_ms: float | None = None
    heard_ms: float | None = None
    stages: dict[str, float] = field(default_factory=dict)
    user_text: str = ""
    assistant_text: str = ""
    interrupted: bool = False
    # Realtime: this turn's utterance cut the agent off and held no words (a false barge-in: noise, a cough);
    # None when it was no barge-in or its words are unknown (no transcription).
    false_interrupt: bool | None = None
    # Realtime: silences of at least 100 ms in mid-reply, when Twilio had played all it had been sent.
    playback_gaps: int = 0
    playback_gap_ms: float = 0.0
    error: str | None = None
    error_stage: str | None = None
    usage: dict[str, int] = field(default_factory=dict)  # tokens, tts_chars, audio seconds …
    # Agent tools the turn ran before answering: {"name", "ms", "ok", "error"?} each, in the order asked.
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    stt_confidence: float | None = None  # legacy <Gather>: Twilio's Confidence (0-1) in what it recognised

    def to_dict(self) -> dict[str, Any]:
        # Written on every turn: a plain copy is several times cheaper than ``dataclasses.asdict``.
        data = dict(self.__dict__)
        data["pipeline"] = self.pipeline.value
        data["stages"] = dict(self.stages)
        data["usage"] = dict(self.usage)
        data["tool_calls"] = list(self.tool_calls)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TurnRecord:
        values = dict(data)
        values["pipeline"] = Pipeline(values["pipeline"])
        return cls(**values)


@dataclass
class CallRecord:
    """One call, written when the router decides and completed as the call goes on and ends."""

    call_sid: str
    pipeline: Pipeline
    reason: str
    bucket: int | None
    percent: float
    caller_hash: str  # keyed hash of ``From``; the number itself is never stored
    started_at: float
    ended_at: float | None = None
    status: str = "in-progress"
    duration_s: float | None = None
    moved_to_legacy: bool = False
    move_reason: str | None = None
    breaker_trial: bool = False  # admitted as a half-open trial: its outcome decides the breaker
    breaker_trial_round: int | None = None  # the half-open round of its trial permit (flags.breaker)
    breaker_outcome: str | None = None  # success | failure | slow | connect_failure
    # The breaker state the router read when deciding (closed, open, half_open, forced_open, forced_closed),
    # so a report can slice by it; None when it was not read (store_unavailable, breaker_conflict).
    breaker_state: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        # Written on every incoming call: a plain copy is several times cheaper than ``dataclasses.asdict``.
        # No ``events`` key when there are none: a stored call's events are then left as they are (a re-sent
        # webhook does not wipe what was appended), and writing a new call never touches the events table.
        data = dict(self.__dict__)
        data["pipeline"] = self.pipeline.value
        if self.events:
            data["events"] = [dict(event) for event in self.events]
        else:
            del data["events"]
        return data

    @staticmethod
    def trial_permit(data: Mapping[str, Any] | None) -> TrialPermit | None:
        """The half-open trial permit a stored call was admitted with, or None. A trial record without a
        round (written before rounds existed) gives none: the breaker's stale-trial timeout frees it."""
        if not data or not data.get("breaker_trial"):
            return None
        trial_round = data.get("breaker_trial_round")
        return TrialPermit(trial_round) if isinstance(trial_round, int) else None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CallRecord:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values["pipeline"] = Pipeline(values["pipeline"])
        return cls(**values)
