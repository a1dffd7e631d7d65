"""Synthetic telephone audio that an energy VAD treats as speech, plus a G.711 μ-law codec.

Emulators and tests need "a caller saying something" without shipping recordings: voiced, syllable-like
bursts (a harmonic buzz at a speaking pitch under a syllable-rate envelope) whose short-term energy stays
well above any sensible VAD threshold for its whole length, so that one call of ``speechlike_ulaw(1200)``
is one utterance. Everything is deterministic for a given ``seed``.

The μ-law codec is the ITU-T G.711 one (bias 0x84, 14-bit clip 8159), in numpy, because ``audioop`` is
deprecated on 3.11 and gone in 3.13.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

SAMPLE_RATE_HZ = 8000
BYTES_PER_MS = SAMPLE_RATE_HZ // 1000  # 8-bit μ-law, mono
ULAW_SILENCE = 0xFF  # encodes linear 0

_BIAS = 0x84
_CLIP14 = 8159


@functools.cache
def _decode_table() -> npt.NDArray[np.int16]:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


def ulaw_encode(pcm: npt.NDArray[np.int16]) -> bytes:
    """Linear 16-bit samples → G.711 μ-law bytes (bit-exact with CPython's ``audioop.lin2ulaw``)."""
    samples = pcm.astype(np.int32) >> 2  # 14-bit, as in the reference implementation
    mask = np.where(samples < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(samples), _CLIP14) + (_BIAS >> 2)
    _, bit_length = np.frexp(magnitude.astype(np.float64))
    segment = np.maximum(bit_length.astype(np.int32) - 6, 0)
    codes = (segment << 4) | ((magnitude >> (segment + 1)) & 0x0F)
    codes = np.where(segment >= 8, 0x7F, codes)
    return ((codes ^ mask) & 0xFF).astype(np.uint8).tobytes()


def ulaw_decode(data: bytes) -> npt.NDArray[np.int16]:
    """G.711 μ-law bytes → linear 16-bit samples."""
    return _decode_table()[np.frombuffer(data, dtype=np.uint8)]


def ulaw_duration_ms(data: bytes) -> int:
    """Duration of 8 kHz μ-law audio in whole milliseconds (8 bytes per ms)."""
    return len(data) // BYTES_PER_MS


def silence_ulaw(duration_ms: int) -> bytes:
    """Digital silence (μ-law 0xFF) of ``duration_ms``."""
    return bytes([ULAW_SILENCE]) * (max(0, duration_ms) * BYTES_PER_MS)


def speechlike_pcm16(
    duration_ms: int, *, sample_rate: int = SAMPLE_RATE_HZ, seed: int = 0, pitch_hz: float = 140.0
) -> npt.NDArray[np.int16]:
    """Voiced syllable-like bursts as linear 16-bit samples at ``sample_rate``.

    Syllables last 120–260 ms; between them the envelope dips to about a third of its peak instead of
    going silent (co-articulation), so every 10 ms frame stays at roughly -30 dBFS or louder while the
    peaks sit near -14 dBFS.
    """
    count = max(0, duration_ms) * sample_rate // 1000
    if count == 0:
        return np.zeros(0, dtype=np.int16)
    rng = np.random.default_rng(seed)

    envelope = np.empty(count, dtype=np.float64)
    pitch = np.empty(count, dtype=np.float64)
    position = 0
    while position < count:
        length = int(rng.uniform(0.12, 0.26) * sample_rate)
        end = min(count, position + length)
        phase = np.linspace(0.0, np.pi, end - position, endpoint=False)
        envelope[position:end] = 0.35 + 0.65 * np.sin(phase)
        syllable_pitch = pitch_hz * rng.uniform(0.9, 1.12)
        pitch[position:end] = syllable_pitch * (1.0 - 0.08 * phase / np.pi)  # falling intonation
        position = end

    phase_acc = 2.0 * np.pi * np.cumsum(pitch) / sample_rate
    signal = np.zeros(count, dtype=np.float64)
    nyquist = sample_rate / 2.0
    for harmonic in range(1, 13):
        if pitch_hz * harmonic * 1.12 >= nyquist:
            break
        freq = pitch_hz * harmonic
        # Crude formant shaping: emphasise ~500 Hz and ~1500 Hz like an open vowel.
        weight = (1.0 / harmonic) * (1.0 + 1.5 * np.exp(-(((freq - 500.0) / 250.0) ** 2)))
        weight *= 1.0 + 1.0 * np.exp(-(((freq - 1500.0) / 400.0) ** 2))
        signal += weight * np.sin(harmonic * phase_acc + rng.uniform(0, 2 * np.pi))
    signal += 0.02 * rng.standard_normal(count)  # breath noise
    signal /= np.max(np.abs(signal)) or 1.0

    # 5 ms fade in/out so the burst does not click at its edges.
    fade = min(count // 2, sample_rate // 200)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        envelope[:fade] *= ramp
        envelope[count - fade :] *= ramp[::-1]
    return (signal * envelope * 12000.0).astype(np.int16)


def speechlike_ulaw(duration_ms: int, *, seed: int = 0, pitch_hz: float = 140.0) -> bytes:
    """``duration_ms`` of 8 kHz μ-law speech-like audio (one utterance, energy well above VAD threshold)."""
    return ulaw_encode(speechlike_pcm16(duration_ms, seed=seed, pitch_hz=pitch_hz))


def rms_dbfs(pcm: npt.NDArray[np.int16]) -> float:
    """Root-mean-square level of ``pcm`` in dBFS (-120 for digital silence)."""
    if pcm.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))
    if rms <= 0.0:
        return -120.0
    return max(-120.0, 20.0 * float(np.log10(rms / 32768.0)))
