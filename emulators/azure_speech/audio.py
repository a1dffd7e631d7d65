"""Audio formats on the USP wire: TTS output formats the emulator can produce, STT input it can read.

The service always sends *raw* samples: for ``riff-*`` formats the SDK asks for the matching ``raw-*``
format and writes the WAV header itself, so a ``riff-*`` request is answered with raw bytes as well.
"""

from __future__ import annotations

import functools
import re
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from emulators.speechlike import speechlike_pcm16, ulaw_decode, ulaw_encode

WAVE_PCM = 1
WAVE_ALAW = 6
WAVE_MULAW = 7

_OUTPUT = re.compile(r"^(?:raw|riff)-(8khz|16khz|22050hz|24khz|44100hz|48khz)-(8bit|16bit)-mono-(pcm|mulaw)$")
_RATES = {"8khz": 8000, "16khz": 16000, "22050hz": 22050, "24khz": 24000, "44100hz": 44100, "48khz": 48000}


@dataclass(frozen=True)
class OutputFormat:
    name: str
    sample_rate: int
    encoding: str  # "pcm" (16-bit little-endian) or "mulaw"

    @property
    def bytes_per_ms(self) -> float:
        return self.sample_rate / 1000 * (2 if self.encoding == "pcm" else 1)


def parse_output_format(name: str) -> OutputFormat | None:
    """``raw-8khz-8bit-mono-mulaw`` → OutputFormat; ``None`` for formats the emulator cannot produce."""
    match = _OUTPUT.match(name.lower())
    if not match:
        return None
    rate_name, bits, encoding = match.groups()
    rate = _RATES[rate_name]
    if encoding == "mulaw" and (bits, rate) != ("8bit", 8000):
        return None
    if encoding == "pcm" and bits != "16bit":
        return None
    return OutputFormat(name, rate, encoding)


def synthesize(fmt: OutputFormat, duration_ms: int, text: str) -> bytes:
    """Speech-like raw audio of ``duration_ms`` in ``fmt``, deterministic for ``text``."""
    pcm = speechlike_pcm16(duration_ms, sample_rate=fmt.sample_rate, seed=zlib.crc32(text.encode()))
    if fmt.encoding == "mulaw":
        return ulaw_encode(pcm)
    return pcm.astype("<i2").tobytes()


@dataclass(frozen=True)
class InputFormat:
    format_tag: int = WAVE_PCM
    channels: int = 1
    sample_rate: int = 16000
    bits_per_sample: int = 16

    @property
    def bytes_per_frame(self) -> int:
        if self.format_tag in (WAVE_MULAW, WAVE_ALAW):
            return self.channels  # G.711 is one byte per sample whatever the header's bit depth says
        return max(1, self.channels * self.bits_per_sample // 8)

    def to_dict(self) -> dict[str, int]:
        return {
            "format_tag": self.format_tag,
            "channels": self.channels,
            "sample_rate": self.sample_rate,
            "bits_per_sample": self.bits_per_sample,
        }


def split_riff(data: bytes) -> tuple[InputFormat, bytes] | None:
    """Parse a WAV header at the start of ``data``: (format, audio after the ``data`` chunk header)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    fmt = InputFormat()
    position = 12
    while position + 8 <= len(data):
        chunk_id = data[position : position + 4]
        (size,) = struct.unpack_from("<I", data, position + 4)
        body = position + 8
        if chunk_id == b"data":
            return fmt, data[body:]
        if chunk_id == b"fmt " and body + 16 <= len(data):
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, body)
            fmt = InputFormat(tag, max(1, channels), rate or 16000, bits or 16)
        position = body + size + (size & 1)
    return fmt, b""


@functools.cache
def _alaw_table() -> npt.NDArray[np.int16]:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0)
    )
    return np.where(sign != 0, magnitude, -magnitude).astype(np.int16)


def decode_to_pcm16(fmt: InputFormat, data: bytes) -> npt.NDArray[np.int16]:
    """Linear 16-bit samples of the first channel of ``data`` (whole frames only)."""
    usable = len(data) - len(data) % fmt.bytes_per_frame
    if fmt.format_tag == WAVE_MULAW:
        samples = ulaw_decode(data[:usable])
    elif fmt.format_tag == WAVE_ALAW:
        samples = _alaw_table()[np.frombuffer(data[:usable], dtype=np.uint8)]
    elif fmt.bits_per_sample == 8:
        samples = ((np.frombuffer(data[:usable], dtype=np.uint8).astype(np.int16) - 128) << 8).astype(
            np.int16
        )
    else:
        samples = np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)
    if fmt.channels > 1:
        samples = samples[:: fmt.channels]
    return samples
