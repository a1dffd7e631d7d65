"""What a simulated caller does: say things, pause, interrupt the bot, hang up.

A script is a list of steps consumed in order by whichever pipeline is serving the call at the time, so a
call that moves from realtime to legacy mid-call carries on with the same caller. Each utterance has its
μ-law audio (streamed on ``<Connect><Stream>``, recorded by ``<Record>``) and its transcript (what Twilio's
``<Gather input="speech">`` hands back as ``SpeechResult``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from importlib import resources

import orjson

from emulators.speechlike import speechlike_ulaw

# An average speaking rate of ~150 words a minute is ~14 characters a second: ~70 ms a character.
MS_PER_CHARACTER = 70


@dataclass(frozen=True)
class Utterance:
    text: str
    audio: bytes  # 8 kHz μ-law
    confidence: float = 0.92

    @property
    def duration_ms(self) -> int:
        return len(self.audio) // 8

    @classmethod
    def speechlike(cls, text: str, *, duration_ms: int | None = None, seed: int = 0) -> Utterance:
        """Speech-like audio as long as ``text`` takes to say (or ``duration_ms``)."""
        length = duration_ms if duration_ms is not None else max(400, MS_PER_CHARACTER * len(text))
        return cls(text=text, audio=speechlike_ulaw(length, seed=seed))


@dataclass(frozen=True)
class Say:
    """Speak when it is the caller's turn (the bot's reply has finished, or a ``<Gather>`` listens)."""

    utterance: Utterance


@dataclass(frozen=True)
class BargeIn:
    """Start speaking ``after_ms`` into the bot's next reply (or into a ``<Gather>``'s prompt)."""

    utterance: Utterance
    after_ms: int = 500


@dataclass(frozen=True)
class Pause:
    """Stay silent for ``ms``; at a ``<Gather>`` a long enough pause is Twilio's empty result."""

    ms: int


@dataclass(frozen=True)
class HangUp:
    """Hang up now (a caller who leaves mid-reply)."""


Step = Say | BargeIn | Pause | HangUp


@dataclass
class CallScript:
    steps: list[Step]
    from_: str = "+15005550006"
    to: str = "+15005550001"
    # With no step left the caller hangs up once the bot has finished its reply.
    hang_up_when_done: bool = True
    think_ms: int = 250  # silence before answering: a caller does not start speaking instantly
    label: str = ""
    tags: dict[str, str] = field(default_factory=dict)


@functools.cache
def fixture_utterances() -> tuple[Utterance, ...]:
    """The shipped utterances (``emulators/fixtures/utterances.json`` + ``*.ulaw``)."""
    folder = resources.files("emulators") / "fixtures"
    index = orjson.loads((folder / "utterances.json").read_bytes())
    return tuple(Utterance(text=item["text"], audio=(folder / item["file"]).read_bytes()) for item in index)


def conversation(
    turns: int,
    *,
    from_: str = "+15005550006",
    barge_in_at: int | None = None,
    barge_in_after_ms: int = 600,
    seed: int = 0,
) -> CallScript:
    """A caller who says ``turns`` things from the fixtures, interrupting reply ``barge_in_at`` if set."""
    utterances = fixture_utterances()
    steps: list[Step] = []
    for index in range(turns):
        utterance = utterances[(index + seed) % len(utterances)]
        if barge_in_at is not None and index == barge_in_at:
            steps.append(BargeIn(utterance, after_ms=barge_in_after_ms))
        else:
            steps.append(Say(utterance))
    return CallScript(steps=steps, from_=from_)
