"""Audio in the session's wire formats: decode appended input, synthesize reply audio for deltas."""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

from emulators.speechlike import speechlike_pcm16, ulaw_decode, ulaw_encode
from emulators.voicelive.session import output_sample_rate


@functools.cache
def _alaw_decode_table() -> npt.NDArray[np.int16]:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1))
    return np.where(sign != 0, magnitude, -magnitude).astype(np.int16)


@functools.cache
def _alaw_encode_table() -> npt.NDArray[np.uint8]:
    """Nearest A-law code for every int16 value (a 64 KiB lookup table, built once)."""
    decoded = _alaw_decode_table().astype(np.int32)
    order = np.argsort(decoded)
    ladder = decoded[order]
    values = np.arange(-32768, 32768, dtype=np.int32)
    upper = np.clip(np.searchsorted(ladder, values), 1, 255)
    lower = upper - 1
    nearest = np.where(values - ladder[lower] <= ladder[upper] - values, lower, upper)
    return order[nearest].astype(np.uint8)


def alaw_decode(data: bytes) -> npt.NDArray[np.int16]:
    return _alaw_decode_table()[np.frombuffer(data, dtype=np.uint8)]


def alaw_encode(pcm: npt.NDArray[np.int16]) -> bytes:
    return _alaw_encode_table()[pcm.astype(np.int32) + 32768].tobytes()


def decode_input(data: bytes, input_format: str) -> npt.NDArray[np.int16]:
    """Linear samples of appended audio (``pcm16`` is little-endian 16-bit; a trailing odd byte is dropped)."""
    if input_format == "g711_ulaw":
        return ulaw_decode(data)
    if input_format == "g711_alaw":
        return alaw_decode(data)
    usable = len(data) - (len(data) % 2)
    return np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)


def _sample_width(output_format: str) -> int:
    return 1 if output_format.startswith("g711") else 2


def chunk_bytes(output_format: str, ms: int) -> int:
    """Bytes of ``ms`` of audio, in whole samples (22.05 kHz is 44.1 bytes a millisecond)."""
    width = _sample_width(output_format)
    return output_sample_rate(output_format) * ms // 1000 * width


def duration_ms_of(output_format: str, size: int) -> int:
    """Milliseconds of audio in ``size`` bytes, to the nearest (a reply of 4,355 ms at 22.05 kHz is 96,027
    samples: 4,354.97 ms)."""
    return round(size * 1000 / (output_sample_rate(output_format) * _sample_width(output_format)))


@functools.lru_cache(maxsize=64)
def synthesize(duration_ms: int, output_format: str, *, seed: int) -> bytes:
    """Reply audio of ``duration_ms`` in ``output_format`` (speech-like, so a client VAD hears speech).

    Cached: replies come from a short cycled script, and synthesis (~5 ms per second of audio) would
    otherwise stall the event loop at the start of every response.
    """
    rate = output_sample_rate(output_format)
    pcm = speechlike_pcm16(duration_ms, sample_rate=rate, seed=seed, pitch_hz=190.0)
    if output_format == "g711_ulaw":
        return ulaw_encode(pcm)
    if output_format == "g711_alaw":
        return alaw_encode(pcm)
    return pcm.astype("<i2").tobytes()
