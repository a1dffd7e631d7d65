"""Latency and fault knobs of the Azure Speech emulator: thread-safe, changeable while it serves.

Fault counters mean "the next N requests" (a TTS ``ssml`` request or an STT recognition turn, or a
handshake for ``refuse_handshakes_next``); ``-1`` means "every one until changed".
"""

from __future__ import annotations

from dataclasses import dataclass

from emulators.close_codes import SENDABLE_CLOSE_CODES, sendable_close_code
from emulators.control import KnobStore, take


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
    """…after this many TTS audio frames (0: before ``turn.start``; more than a reply has: after its last)."""
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


def _check(knobs: SpeechKnobs) -> None:
    if not sendable_close_code(knobs.close_code):
        raise ValueError(f"close_code must be a code a close frame can carry ({SENDABLE_CLOSE_CODES})")
    if knobs.tts_chunk_ms <= 0:
        raise ValueError("tts_chunk_ms must be positive")


class SpeechKnobStore(KnobStore[SpeechKnobs]):
    """The knobs of one emulator; fault counters are consumed per request or handshake."""

    def __init__(self, knobs: SpeechKnobs | None = None) -> None:
        super().__init__(knobs or SpeechKnobs(), check=_check)

    def take_fault(self) -> Fault:
        with self.locked() as k:
            if take(k, "close_next"):
                return Fault("close", k.close_code, k.close_reason, k.close_after_chunks)
            if take(k, "stall_next"):
                return Fault("stall")
            return NO_FAULT

    def take_refusal(self) -> int | None:
        """The HTTP status to refuse this handshake with, or ``None`` to accept it."""
        with self.locked() as k:
            return k.refuse_status if take(k, "refuse_handshakes_next") else None
