"""Latency and fault knobs of the Azure Speech emulator: thread-safe, changeable while it serves.

Fault counters mean "the next N requests" (a TTS ``ssml`` request or an STT recognition turn, or a
handshake for ``refuse_handshakes_next``); ``-1`` means "every one until changed".
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import Any


@dataclass
class SpeechKnobs:
    # TTS
    tts_first_chunk_delay_s: float = 0.0
    """Delay between the ``ssml`` request and the first audio frame."""
    tts_chunk_delay_s: float = 0.0
    """Delay between audio frames."""
    tts_chunk_ms: int = 100
    """Audio per binary frame."""
    tts_ms_per_char: float = 65.0
    """Spoken duration per character of text (after SSML tags are stripped)."""
    # STT
    stt_latency_s: float = 0.0
    """Delay between end of speech and ``speech.endDetected``/``speech.phrase``."""
    stt_end_silence_ms: int = 600
    """Trailing silence after speech that ends the utterance."""
    stt_initial_silence_ms: int = 5000
    """Audio without speech after which the turn ends with ``InitialSilenceTimeout``."""
    stt_max_audio_ms: int = 30000
    """Answer after this much audio even if the speaker has not paused."""
    stt_threshold_dbfs: float = -45.0
    """A 10 ms frame louder than this counts as speech."""
    stt_hypothesis_every_ms: int = 400
    """Send a ``speech.hypothesis`` after this much more speech."""
    # Faults
    close_next: int = 0
    """Close the WebSocket instead of answering the next N requests…"""
    close_code: int = 1011
    """…with this close code (1007 → the SDK reports BadRequest, 1011 → ServiceError)…"""
    close_reason: str = "Internal service error."
    """…and this reason (the SDK puts it in the error details)…"""
    close_after_chunks: int = 0
    """…after this many TTS audio frames (0: before ``turn.start``)."""
    stall_next: int = 0
    """Never answer the next N requests (the TTS first-chunk timeout fires; STT hangs)."""
    refuse_handshakes_next: int = 0
    """Reject the next N WebSocket handshakes with ``refuse_status``."""
    refuse_status: int = 503


@dataclass(frozen=True)
class Fault:
    """What happens to one request, decided atomically when it arrives."""

    kind: str  # "none", "close", "stall"
    close_code: int = 1011
    close_reason: str = ""
    close_after_chunks: int = 0


NO_FAULT = Fault("none")
_FIELDS = {f.name: f for f in dataclasses.fields(SpeechKnobs)}


class SpeechKnobStore:
    def __init__(self, knobs: SpeechKnobs | None = None) -> None:
        self._lock = threading.Lock()
        self._knobs = knobs or SpeechKnobs()

    def snapshot(self) -> SpeechKnobs:
        with self._lock:
            return dataclasses.replace(self._knobs)

    def update(self, **changes: Any) -> SpeechKnobs:
        """Change some knobs; unknown names or wrong types raise ``ValueError``."""
        unknown = set(changes) - set(_FIELDS)
        if unknown:
            raise ValueError(f"unknown knob(s): {', '.join(sorted(unknown))}")
        with self._lock:
            current = dataclasses.asdict(self._knobs)
            for name, value in changes.items():
                expected = type(current[name])
                if expected is str:
                    if not isinstance(value, str):
                        raise ValueError(f"knob {name} must be a string")
                elif isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"knob {name} must be a number")
                elif expected is int and not float(value).is_integer():
                    raise ValueError(f"knob {name} must be an integer")
                current[name] = expected(value)
            if current["close_code"] not in range(1000, 5000):
                raise ValueError("close_code must be a WebSocket close code (1000-4999)")
            if current["tts_chunk_ms"] <= 0:
                raise ValueError("tts_chunk_ms must be positive")
            self._knobs = SpeechKnobs(**current)
            return dataclasses.replace(self._knobs)

    def take_fault(self) -> Fault:
        with self._lock:
            k = self._knobs
            if _take(k, "close_next"):
                return Fault("close", k.close_code, k.close_reason, k.close_after_chunks)
            if _take(k, "stall_next"):
                return Fault("stall")
            return NO_FAULT

    def take_refusal(self) -> int | None:
        """The HTTP status to refuse this handshake with, or ``None`` to accept it."""
        with self._lock:
            return self._knobs.refuse_status if _take(self._knobs, "refuse_handshakes_next") else None


def _take(knobs: SpeechKnobs, counter: str) -> bool:
    remaining: int = getattr(knobs, counter)
    if remaining == 0:
        return False
    if remaining > 0:
        setattr(knobs, counter, remaining - 1)
    return True
