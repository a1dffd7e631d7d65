"""The caller's ears: per-turn latency and silence, measured on the caller's side of the line.

Both pipelines are measured the same way, on one monotonic clock: a turn opens when the caller stops
speaking (turn 0, the greeting, when the call is answered) and its latency is the time until the first bot
audio produced for it starts playing to the caller — realtime: the first outbound media frame received
after the utterance ended, at the moment the playout clock reaches it; legacy: the ``<Say>``/``<Play>`` that
starts after the ``<Gather>`` action POST returned (after Twilio fetched the audio). A *silence* is any
stretch in which neither side made a sound and that ended with the bot speaking (or the caller giving up):
the longest one is what "dead air" means to the caller.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TurnMeasurement:
    call_sid: str
    pipeline: str  # the call's pipeline as the router answered it (X-Voice-Router-Pipeline)
    turn: int  # 0 = greeting, 1 = the caller's first utterance, …
    speech_end_at: float  # wall-clock epoch seconds
    turn_pipeline: str = ""  # what served this turn (realtime stream or legacy TwiML) — differs after a move
    latency_ms: float | None = None  # speech end → first bot audio heard
    silence_ms: float = 0.0  # longest dead air in this turn
    barge_in: bool = False  # this utterance interrupted the bot
    interrupted_audio_ms: float | None = (
        None  # bot audio still heard after the caller started talking over it
    )
    error: str | None = None  # "no_reply" | "call_ended"
    time_scale: float = 1.0
    _opened: float = field(default=0.0, repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("_opened")
        return data


class CallerEars:
    """Everything the caller heard and said, as timestamps; one per call."""

    def __init__(
        self,
        call_sid: str,
        *,
        time_scale: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.call_sid = call_sid
        self.pipeline = ""
        self.time_scale = time_scale
        self._monotonic = monotonic
        self._wall_offset = wall() - monotonic()
        self.turns: list[TurnMeasurement] = []
        self.open_turn: TurnMeasurement | None = None
        self.playing = False
        self.speaking = False
        self.pausing = False
        self.quiet_since = monotonic()
        self.last_audio_end = 0.0
        self.speech_end = 0.0
        self.max_silence_ms = 0.0
        self.heard_ms = 0.0
        self._audio_started_at = 0.0
        self._barge_started_at: float | None = None

    def now(self) -> float:
        return self._monotonic()

    def wall(self, monotonic_at: float) -> float:
        return self._wall_offset + monotonic_at

    # Turns ---------------------------------------------------------------------------------------------
    def _open(self, at: float, *, barge_in: bool = False) -> TurnMeasurement:
        self._close_unanswered("call_ended")
        turn = TurnMeasurement(
            call_sid=self.call_sid,
            pipeline=self.pipeline,
            turn=len(self.turns),
            speech_end_at=self.wall(at),
            barge_in=barge_in,
            time_scale=self.time_scale,
            _opened=at,
        )
        self.turns.append(turn)
        self.open_turn = turn
        self.speech_end = at
        return turn

    def _close_unanswered(self, error: str) -> None:
        turn = self.open_turn
        if turn is not None and turn.latency_ms is None and turn.error is None:
            turn.error = error
        self.open_turn = None

    def answered(self, at: float) -> None:
        """The call connected: the greeting turn (0) starts now."""
        self.quiet_since = at
        self._open(at)

    @property
    def waiting_for_reply(self) -> bool:
        turn = self.open_turn
        return turn is not None and turn.latency_ms is None and turn.error is None

    @property
    def reply_started(self) -> bool:
        turn = self.open_turn
        return turn is not None and (turn.latency_ms is not None or turn.error is not None)

    # Caller ----------------------------------------------------------------------------------------------
    def caller_started(self, at: float) -> None:
        self.speaking = True
        if self.playing:
            self._barge_started_at = at

    def caller_stopped(self, at: float, *, barge_in: bool = False) -> None:
        self.speaking = False
        self.quiet_since = at
        turn = self._open(at, barge_in=barge_in)
        if self._barge_started_at is not None:
            stop = self.last_audio_end if not self.playing else at
            turn.interrupted_audio_ms = max(0.0, (stop - self._barge_started_at) * 1000.0)
            self._barge_started_at = None

    def pause_began(self) -> None:
        self.pausing = True

    def caller_paused(self, until: float) -> None:
        """A deliberate pause is the caller's silence, not dead air (nor is it when the bot speaks up during
        it, as an agent checking on a quiet caller does)."""
        self.pausing = False
        self.quiet_since = max(self.quiet_since, until)

    # Bot audio -------------------------------------------------------------------------------------------
    def audio_started(self, at: float, *, fresh: bool, mode: str) -> None:
        """Bot audio begins playing (``fresh``: produced after the open turn began)."""
        if not self.playing:
            self.playing = True
            self._audio_started_at = at
            if not self.speaking and not self.pausing:
                self._silence(at - max(self.quiet_since, self.last_audio_end))
        turn = self.open_turn
        if fresh and turn is not None and turn.latency_ms is None and turn.error is None:
            turn.latency_ms = (at - turn._opened) * 1000.0
            turn.turn_pipeline = mode

    def audio_stopped(self, at: float) -> None:
        if self.playing:
            self.playing = False
            self.heard_ms += max(0.0, at - self._audio_started_at) * 1000.0
            self.last_audio_end = at

    def no_reply(self, at: float) -> None:
        """The caller waited and heard nothing; the wait counts as dead air."""
        turn = self.open_turn
        if turn is not None and turn.latency_ms is None and turn.error is None:
            turn.error = "no_reply"
            self._silence(at - max(self.quiet_since, self.last_audio_end))

    def _silence(self, seconds: float) -> None:
        ms = max(0.0, seconds * 1000.0)
        self.max_silence_ms = max(self.max_silence_ms, ms)
        turn = self.open_turn or (self.turns[-1] if self.turns else None)
        if turn is not None:
            turn.silence_ms = max(turn.silence_ms, ms)

    def hung_up(self, at: float) -> None:
        if self.playing:
            self.audio_stopped(at)
        turn = self.open_turn
        # Still waiting when the line went dead: reported as "call_ended", not as a slow reply.
        if turn is not None and turn.latency_ms is None and turn.error is None:
            turn.error = "call_ended"
        self.open_turn = None

    def measurements(self) -> list[dict[str, Any]]:
        for turn in self.turns:
            turn.pipeline = turn.pipeline or self.pipeline
        return [turn.to_dict() for turn in self.turns]
