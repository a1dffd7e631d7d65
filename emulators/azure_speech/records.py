"""What the Speech emulator saw, kept for test assertions and the ``/_emulator/state`` endpoint."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class HandshakeRecord:
    path: str
    query: str
    connection_id: str
    subscription_key: str | None
    user_agent: str
    status: int  # 101 accepted, else the HTTP status it was refused with
    at: float = field(default_factory=time.time)


@dataclass
class SynthesisRecord:
    request_id: str
    connection_id: str
    output_format: str
    voice: str | None = None
    text: str = ""
    ssml: str = ""
    audio_bytes: int = 0
    duration_ms: int = 0
    outcome: str = "pending"  # completed, closed:<code>, stalled, rejected:<code>, disconnected
    at: float = field(default_factory=time.time)


@dataclass
class RecognitionRecord:
    request_id: str
    connection_id: str
    mode: str
    language: str
    audio_format: dict[str, int] = field(default_factory=dict)
    audio_ms: int = 0
    speech_start_ms: int | None = None
    speech_end_ms: int | None = None
    status: str = "pending"  # Success, InitialSilenceTimeout, closed:<code>, stalled, disconnected
    text: str = ""
    at: float = field(default_factory=time.time)


class SpeechLog:
    """Thread-safe record lists (records are mutated in place as a request progresses)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.handshakes: list[HandshakeRecord] = []
        self.syntheses: list[SynthesisRecord] = []
        self.recognitions: list[RecognitionRecord] = []

    def add_handshake(self, record: HandshakeRecord) -> None:
        with self._lock:
            self.handshakes.append(record)

    def add_synthesis(self, record: SynthesisRecord) -> None:
        with self._lock:
            self.syntheses.append(record)

    def add_recognition(self, record: RecognitionRecord) -> None:
        with self._lock:
            self.recognitions.append(record)

    def snapshot(self) -> tuple[list[HandshakeRecord], list[SynthesisRecord], list[RecognitionRecord]]:
        with self._lock:
            return list(self.handshakes), list(self.syntheses), list(self.recognitions)

    def clear(self) -> None:
        with self._lock:
            self.handshakes.clear()
            self.syntheses.clear()
            self.recognitions.clear()

    def to_dict(self, recent: int = 20) -> dict[str, Any]:
        handshakes, syntheses, recognitions = self.snapshot()
        return {
            "handshakes": len(handshakes),
            "syntheses": len(syntheses),
            "recognitions": len(recognitions),
            "recent_handshakes": [asdict(r) for r in handshakes[-recent:]],
            "recent_syntheses": [asdict(r) for r in syntheses[-recent:]],
            "recent_recognitions": [asdict(r) for r in recognitions[-recent:]],
        }
