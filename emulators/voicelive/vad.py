"""Energy-based server VAD in appended-audio time.

``threshold`` (0..1) maps linearly onto a frame RMS level between -60 dBFS (0.0) and -10 dBFS (1.0), so the
default 0.5 means -35 dBFS: ``speechlike`` audio (every 10 ms frame ≥ about -30 dBFS) is speech, μ-law
digital silence (-120 dBFS) and low line hiss are not. Times are milliseconds of audio appended since the
session started, as the service reports them, never wall-clock time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FLOOR_DBFS = -60.0
CEILING_DBFS = -10.0


def threshold_to_rms(threshold: float) -> float:
    """Linear RMS (int16 units) that a frame must exceed to count as voiced."""
    dbfs = FLOOR_DBFS + (CEILING_DBFS - FLOOR_DBFS) * min(1.0, max(0.0, threshold))
    return float(32768.0 * 10.0 ** (dbfs / 20.0))


@dataclass(frozen=True)
class SpeechStarted:
    audio_start_ms: int


@dataclass(frozen=True)
class SpeechStopped:
    audio_end_ms: int


VadEvent = SpeechStarted | SpeechStopped


class EnergyVad:
    """Frame-by-frame speech detector; ``feed`` returns the transitions found in the new audio.

    Speech starts once ``speech_duration_ms`` of consecutive voiced audio has been heard (so a click is not a
    turn); it is reported from the first voiced frame of that run, ``prefix_padding_ms`` earlier (clamped at
    0). It stops once ``silence_duration_ms`` of unvoiced audio followed it; ``audio_end_ms`` is where that
    silence ended, i.e. it includes the silence duration (as the reference documents).
    """

    def __init__(
        self,
        *,
        sample_rate: int,
        threshold: float = 0.5,
        prefix_padding_ms: int = 300,
        silence_duration_ms: int = 500,
        speech_duration_ms: int = 0,
        frame_ms: int = 10,
        start_ms: int = 0,
    ) -> None:
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self.frame_samples = max(1, sample_rate * frame_ms // 1000)
        self.rms_threshold = threshold_to_rms(threshold)
        self.prefix_padding_ms = prefix_padding_ms
        self.silence_duration_ms = silence_duration_ms
        self.speech_duration_ms = speech_duration_ms
        self.speaking = False
        self._voiced_start_ms: int | None = None  # first frame of the voiced run not yet long enough
        self._pending = np.zeros(0, dtype=np.int16)
        self._position_ms = start_ms  # start of the next unprocessed frame
        self._silence_ms = 0

    def feed(self, pcm: npt.NDArray[np.int16]) -> list[VadEvent]:
        samples = np.concatenate((self._pending, pcm)) if self._pending.size else pcm
        whole = samples.size // self.frame_samples * self.frame_samples
        self._pending = samples[whole:].copy()
        if whole == 0:
            return []
        frames = samples[:whole].astype(np.float32).reshape(-1, self.frame_samples)
        voiced = np.sqrt(np.mean(frames * frames, axis=1)) > self.rms_threshold
        events: list[VadEvent] = []
        for is_voiced in voiced.tolist():
            frame_start = self._position_ms
            self._position_ms += self.frame_ms
            if not self.speaking:
                if not is_voiced:
                    self._voiced_start_ms = None
                    continue
                if self._voiced_start_ms is None:
                    self._voiced_start_ms = frame_start
                if self._position_ms - self._voiced_start_ms >= self.speech_duration_ms:
                    self.speaking = True
                    self._silence_ms = 0
                    events.append(SpeechStarted(max(0, self._voiced_start_ms - self.prefix_padding_ms)))
                    self._voiced_start_ms = None
            elif is_voiced:
                self._silence_ms = 0
            else:
                self._silence_ms += self.frame_ms
                if self._silence_ms >= self.silence_duration_ms:
                    self.speaking = False
                    self._silence_ms = 0
                    events.append(SpeechStopped(self._position_ms))
        return events

    def reset(self, position_ms: int) -> None:
        """Forget partial state (buffer cleared or committed by the client)."""
        self.speaking = False
        self._silence_ms = 0
        self._voiced_start_ms = None
        self._pending = np.zeros(0, dtype=np.int16)
        self._position_ms = position_ms
