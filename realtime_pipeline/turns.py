"""Per-turn latency and transcripts, with the same anchors the legacy pipeline uses.

Turn 0 is the greeting (anchored at the stream's ``start``); turn N ≥ 1 starts at the caller's speech end,
i.e. when Voice Live's ``speech_stopped`` for that utterance is received. ``response_ms`` ends when the
first reply audio is sent to Twilio, ``heard_ms`` when Twilio echoes the mark after that first chunk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from router.records import Pipeline, TurnRecord

LATE_TRANSCRIPT_TURNS = 2
"""Finished turns a caller transcript still reaches (Voice Live transcribes asynchronously: an utterance's words
can come after the caller's next utterance has ended)."""


@dataclass(slots=True)
class Turn:
    index: int
    anchor: float  # monotonic seconds: caller's speech end (or stream start for the greeting)
    at: float  # wall-clock epoch seconds of the anchor
    user_item_id: str = ""
    response_ms: float | None = None
    heard_ms: float | None = None
    stages: dict[str, float] = field(default_factory=dict)
    user_text: str = ""
    assistant_text: list[str] = field(default_factory=list)
    assistant_items: set[str] = field(default_factory=set)
    interrupted: bool = False  # the caller cut this turn's reply off
    interrupting: bool = False  # this turn's utterance cut the previous reply off (a barge-in)
    user_transcribed: bool = False  # Voice Live's transcription of the utterance arrived (maybe empty)
    playback_gaps: int = 0  # mid-reply silences of at least 100 ms (playback_gaps.py)
    playback_gap_ms: float = 0.0
    error: str | None = None
    error_stage: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # ToolResult.record() of each tool run

    def fail(self, stage: str, error: str) -> None:
        """The reply this turn was owed was lost (first failure wins: it is the cause)."""
        if self.error is None:
            self.error, self.error_stage = error[:300], stage

    @property
    def false_interrupt(self) -> bool | None:
        """A barge-in with no words in it (line noise, a cough, an echo: pain point P9); None when this turn
        was no barge-in or its transcription never came (transcription off or failed), so it is unknown."""
        if not self.interrupting or not self.user_transcribed:
            return None
        return not self.user_text.strip()

    def record(self, call_sid: str) -> TurnRecord:
        return TurnRecord(
            call_sid=call_sid,
            pipeline=Pipeline.REALTIME,
            turn=self.index,
            at=self.at,
            response_ms=self.response_ms,
            heard_ms=self.heard_ms,
            stages=dict(self.stages),
            user_text=self.user_text,
            assistant_text=" ".join(t for t in self.assistant_text if t),
            interrupted=self.interrupted,
            false_interrupt=self.false_interrupt,
            playback_gaps=self.playback_gaps,
            playback_gap_ms=round(self.playback_gap_ms, 1),
            error=self.error,
            error_stage=(self.error_stage or "realtime") if self.error else None,
            usage=dict(self.usage),
            tool_calls=list(self.tool_calls),
        )


class TurnTracker:
    __slots__ = ("_by_user_item", "_earlier_items", "_interrupting_item", "_next_index", "current")

    def __init__(self) -> None:
        self.current: Turn | None = None
        self._by_user_item: dict[str, Turn] = {}
        self._next_index = 0
        self._interrupting_item: str | None = None
        # The previous turn's reply items: a reply the caller spoke over without cutting it off (the profile's
        # interrupt_response false) ends after their turn began, and is not that turn's reply.
        self._earlier_items: set[str] = set()

    def interrupting(self, user_item_id: str) -> None:
        """The caller's utterance ``user_item_id`` (its turn begins when it ends) cut the agent off."""
        self._interrupting_item = user_item_id or None

    def begin(self, anchor: float, at: float, user_item_id: str = "") -> Turn | None:
        """Start a new turn; returns the previous one, now finished, for writing."""
        finished = self.current
        turn = Turn(index=self._next_index, anchor=anchor, at=at, user_item_id=user_item_id)
        if user_item_id and user_item_id == self._interrupting_item:
            turn.interrupting = True
            self._interrupting_item = None
        self._next_index += 1
        self.current = turn
        self._earlier_items = finished.assistant_items if finished is not None else set()
        if user_item_id:
            self._by_user_item[user_item_id] = turn
        if finished is not None and finished.user_item_id:
            # Keep the mapping a little longer: transcripts can arrive after the next turns start.
            oldest = finished.index - LATE_TRANSCRIPT_TURNS + 1
            self._by_user_item = {k: v for k, v in self._by_user_item.items() if v.index >= oldest}
        return finished

    def skip_greeting(self) -> None:
        """No greeting: the caller's first utterance is turn 1, as in the legacy pipeline."""
        if self._next_index == 0:
            self._next_index = 1

    def first_audio(self, item_id: str, now: float, *, reply: bool = True) -> float | None:
        """First audio of ``item_id`` sent; returns the turn's ``response_ms`` if this set it. Audio that is
        not a ``reply`` to the turn (a silence prompt) sets no latency."""
        turn = self.current
        if turn is None:
            return None
        turn.assistant_items.add(item_id)
        if turn.response_ms is not None or not reply:
            return None
        turn.response_ms = (now - turn.anchor) * 1000.0
        return turn.response_ms

    def first_heard(self, item_id: str, now: float) -> float | None:
        turn = self.current
        if (
            turn is None
            or item_id not in turn.assistant_items
            or turn.response_ms is None  # no reply yet: what was heard was not one (a silence prompt)
            or turn.heard_ms is not None
        ):
            return None
        turn.heard_ms = (now - turn.anchor) * 1000.0
        return turn.heard_ms

    def user_transcript(self, item_id: str, text: str) -> None:
        turn = self._by_user_item.get(item_id)
        if turn is not None:
            turn.user_text = text
            turn.user_transcribed = True

    def assistant_transcript(self, item_id: str, text: str) -> None:
        turn = self.current
        if item_id in self._earlier_items:
            return  # its turn's record is written already
        if turn is not None and (item_id in turn.assistant_items or not turn.assistant_items):
            turn.assistant_text.append(text)

    def add_usage(self, usage: dict[str, int]) -> None:
        turn = self.current
        if turn is None:
            return
        for key, value in usage.items():
            turn.usage[key] = turn.usage.get(key, 0) + value

    def finish(self) -> Turn | None:
        finished, self.current = self.current, None
        return finished
