"""The audio files Twilio handles: ``<Play>`` WAVs it fetches and the recordings it serves.

A small RIFF reader instead of :mod:`wave` because ``wave`` refuses μ-law (format 7), which is exactly what a
telephony ``<Play>`` should serve (Azure TTS ``Riff8Khz8BitMonoMULaw``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from emulators.speechlike import ulaw_decode

WAVE_FORMAT_PCM = 1
WAVE_FORMAT_MULAW = 7


class UnplayableAudio(ValueError):
    """What Twilio reports as error 12300/13227-style "cannot play": not a WAV it can decode."""


@dataclass(frozen=True)
class WavInfo:
    format_code: int
    sample_rate: int
    channels: int
    bits_per_sample: int
    data: bytes

    @property
    def data_bytes(self) -> int:
        return len(self.data)

    @property
    def duration_ms(self) -> float:
        bytes_per_second = self.sample_rate * self.channels * max(1, self.bits_per_sample // 8)
        return 1000.0 * self.data_bytes / bytes_per_second if bytes_per_second else 0.0

    @property
    def is_telephony_ulaw(self) -> bool:
        return self.format_code == WAVE_FORMAT_MULAW and self.sample_rate == 8000 and self.channels == 1


def read_wav(data: bytes) -> WavInfo:
    """Parse the RIFF header and find the samples; raises :class:`UnplayableAudio` unless PCM or μ-law."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise UnplayableAudio("not a RIFF/WAVE file")
    offset = 12
    fmt: tuple[int, int, int, int] | None = None
    while offset + 8 <= len(data):
        chunk_id = data[offset : offset + 4]
        (size,) = struct.unpack_from("<I", data, offset + 4)
        body = offset + 8
        if chunk_id == b"fmt ":
            if size < 16:
                raise UnplayableAudio("fmt chunk too short")
            code, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, body)
            fmt = (code, channels, rate, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise UnplayableAudio("data chunk before fmt chunk")
            code, channels, rate, bits = fmt
            if code not in (WAVE_FORMAT_PCM, WAVE_FORMAT_MULAW):
                raise UnplayableAudio(f"unsupported WAV format code {code}")
            return WavInfo(code, rate, channels, bits, data[body : body + size])
        offset = body + size + (size & 1)
    raise UnplayableAudio("no data chunk")


def ulaw_wav(ulaw: bytes) -> bytes:
    """8 kHz mono μ-law WAV (format 7), what a telephony TTS produces."""
    fmt = struct.pack("<HHIIHHH", WAVE_FORMAT_MULAW, 1, 8000, 8000, 1, 8, 0)
    return _riff(fmt, ulaw)


def pcm16_wav_from_ulaw(ulaw: bytes) -> bytes:
    """8 kHz mono 16-bit PCM WAV, the form Twilio serves recordings in."""
    pcm = ulaw_decode(ulaw).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", WAVE_FORMAT_PCM, 1, 8000, 16000, 2, 16)
    return _riff(fmt, pcm)


def _riff(fmt: bytes, data: bytes) -> bytes:
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    if len(data) & 1:
        chunks += b"\0"
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks
