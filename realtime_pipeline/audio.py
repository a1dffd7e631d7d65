"""Audio between Twilio (8 kHz G.711 μ-law) and Voice Live, in one of two modes.

* ``g711_ulaw`` (default): Voice Live speaks μ-law natively, so the base64 payload strings pass through
  untouched in both directions: no decode, no resample.
* ``pcm16``: Voice Live at 24 kHz 16-bit. μ-law is decoded/encoded with lookup tables and each direction
  has its own ``soxr.ResampleStream`` (int16, mono) kept for the whole call, so no chunk boundary ever
  clicks. At the end of a response, and when Twilio's buffer is cleared (barge-in), the outbound stream is
  drained with silence: never reset, never in the middle of an utterance. Both streams are warmed with
  silence when the call starts (see ``Pcm16Converter.__init__``); that silence never reaches either side.
"""

from __future__ import annotations

import binascii
import functools
from typing import Protocol

import numpy as np
import numpy.typing as npt
import soxr

from realtime_pipeline.b64 import decode_strict

TWILIO_RATE_HZ = 8000
PCM16_RATE_HZ = 24000
ULAW_BYTES_PER_MS = 8

_BIAS = 0x84
_CLIP14 = 8159


@functools.cache
def ulaw_decode_table() -> npt.NDArray[np.int16]:
    """256 μ-law codes → linear int16 (ITU-T G.711)."""
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


@functools.cache
def ulaw_encode_table() -> npt.NDArray[np.uint8]:
    """All 65536 int16 values → μ-law code (bit-exact with ``audioop.lin2ulaw``), so encoding is one index."""
    pcm = np.arange(-32768, 32768, dtype=np.int32)
    samples = pcm >> 2  # 14-bit, as in the reference implementation
    mask = np.where(samples < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(samples), _CLIP14) + (_BIAS >> 2)
    _, bit_length = np.frexp(magnitude.astype(np.float64))
    segment = np.maximum(bit_length.astype(np.int32) - 6, 0)
    codes = (segment << 4) | ((magnitude >> (segment + 1)) & 0x0F)
    codes = np.where(segment >= 8, 0x7F, codes)
    table = np.empty(65536, dtype=np.uint8)
    # Index with the int16 value reinterpreted as uint16: table[uint16(x)] = code(x).
    table[pcm.astype(np.int16).view(np.uint16)] = ((codes ^ mask) & 0xFF).astype(np.uint8)
    return table


def ulaw_to_pcm16(data: bytes) -> npt.NDArray[np.int16]:
    return ulaw_decode_table()[np.frombuffer(data, dtype=np.uint8)]


def pcm16_to_ulaw(samples: npt.NDArray[np.int16]) -> bytes:
    return ulaw_encode_table()[samples.view(np.uint16)].tobytes()


def b64encode(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def b64_size(text: str) -> int:
    """Bytes encoded by the padded base64 ``text`` (what ``b64encode`` produces), without decoding it."""
    return len(text) // 4 * 3 - (2 if text.endswith("==") else 1 if text.endswith("=") else 0)


b64decode = decode_strict  # canonical base64 only (realtime_pipeline/b64.py); ``ValueError`` otherwise


class AudioPath(Protocol):
    """One call's audio conversion, both directions."""

    mode: str

    def inbound(self, payload_b64: str, audio: bytes) -> str:
        """Twilio media payload (and its decoded bytes) → base64 audio for ``input_audio_buffer.append``."""
        ...

    def outbound(self, delta_b64: str) -> tuple[str, int, float]:
        """Voice Live delta → (Twilio payload base64, Twilio bytes, delta duration in ms).

        Twilio bytes may be 0 (resampler still filling). Raises ``ValueError`` on bad base64.
        """
        ...

    def flush_outbound(self) -> str:
        """End of a response: what the outbound resampler still holds, as a Twilio payload ('' if none)."""
        ...

    def discard_outbound(self) -> None:
        """Twilio's buffer was cleared: forget the outbound resampler's history."""
        ...


# Draining the outbound resampler: 20 ms of 24 kHz silence at a time until what it held and its filter's
# ring-out (HQ: about 170 samples at 8 kHz; 40 ms is ample) have come out; 200 ms of silence at most.
_SILENCE_24K = np.zeros(480, dtype=np.int16)
_RING_OUT_SAMPLES = 320
_MAX_DRAIN_CHUNKS = 10
# Warming a new stream: 640 ms of silence in 20 ms chunks grows libsoxr's stage buffers to their full size.
_SILENCE_8K = np.zeros(160, dtype=np.int16)
_WARM_CHUNKS = 32


class UlawPassthrough:
    """μ-law both ways: strings go through untouched."""

    __slots__ = ()
    mode = "g711_ulaw"

    def inbound(self, payload_b64: str, audio: bytes) -> str:
        return payload_b64

    def outbound(self, delta_b64: str) -> tuple[str, int, float]:
        size = len(b64decode(delta_b64))
        return delta_b64, size, size / ULAW_BYTES_PER_MS

    def flush_outbound(self) -> str:
        return ""

    def discard_outbound(self) -> None:
        return None


class Pcm16Converter:
    """μ-law 8 kHz ⇄ PCM16 24 kHz with one streaming resampler per direction."""

    __slots__ = (
        "_carry",
        "_decode",
        "_down",
        "_down_emitted",
        "_down_fed",
        "_encode",
        "_play_from",
        "_up",
        "_up_skip",
    )
    mode = "pcm16"

    def __init__(self, quality: str = "HQ") -> None:
        self._up = soxr.ResampleStream(TWILIO_RATE_HZ, PCM16_RATE_HZ, 1, dtype="int16", quality=quality)
        self._down = soxr.ResampleStream(PCM16_RATE_HZ, TWILIO_RATE_HZ, 1, dtype="int16", quality=quality)
        self._carry = b""  # an odd trailing byte of a PCM16 delta, joined to the next one
        self._decode = ulaw_decode_table()
        self._encode = ulaw_encode_table()
        # The outbound stream's timeline in 8 kHz samples: everything fed to it (audio and drain silence, as
        # output samples) and everything it has emitted; output before ``_play_from`` is drain silence.
        self._down_fed = 0.0
        self._down_emitted = 0
        self._play_from = 0
        self._up_skip = 0  # 24 kHz samples of warm-up silence still to come out of the inbound stream
        self._warm()

    def _warm(self) -> None:
        """Grow both streams' buffers now, in one go, with silence that is then skipped.

        libsoxr grows each stage's buffer by ``realloc`` over the first ~600 ms of audio. Done during the call,
        interleaved with every other call's allocations, that leaves holes in the heap (15-24 KB per pcm16 call
        in paired bench.bridge runs). The output is unchanged (the silence is skipped exactly) and so is the
        latency: the most audio a stream holds back is the same, warmed or not.
        """
        fed = emitted = 0
        for _ in range(_WARM_CHUNKS):
            emitted += self._up.resample_chunk(_SILENCE_8K).size
            fed += _SILENCE_8K.size * PCM16_RATE_HZ // TWILIO_RATE_HZ
        self._up_skip = fed - emitted
        self._feed_down_silence(_WARM_CHUNKS)
        self._play_from = round(self._down_fed)

    def inbound(self, payload_b64: str, audio: bytes) -> str:
        pcm8k = self._decode[np.frombuffer(audio, dtype=np.uint8)]
        pcm24k = self._up.resample_chunk(pcm8k)
        if self._up_skip:
            skipped = min(self._up_skip, pcm24k.size)
            self._up_skip -= skipped
            pcm24k = pcm24k[skipped:]
        return b64encode(pcm24k.tobytes())

    def outbound(self, delta_b64: str) -> tuple[str, int, float]:
        raw = b64decode(delta_b64)
        duration_ms = len(raw) / (2 * PCM16_RATE_HZ / 1000)
        if self._carry:
            raw = self._carry + raw
            self._carry = b""
        if len(raw) % 2:
            self._carry = raw[-1:]
            raw = raw[:-1]
        pcm24k = np.frombuffer(raw, dtype=np.int16)
        pcm8k = self._resample_down(pcm24k)
        if pcm8k.size == 0:
            return "", 0, duration_ms
        return b64encode(self._encode[pcm8k.view(np.uint16)].tobytes()), int(pcm8k.size), duration_ms

    def flush_outbound(self) -> str:
        self._carry = b""
        tail = self._drain()
        if tail.size == 0:
            return ""
        return b64encode(self._encode[tail.view(np.uint16)].tobytes())

    def discard_outbound(self) -> None:
        self._carry = b""
        self._drain()

    def _resample_down(self, pcm24k: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        """Outbound resampling, minus any drain silence still coming out ahead of the audio."""
        out: npt.NDArray[np.int16] = self._down.resample_chunk(pcm24k)
        start = self._down_emitted
        self._down_fed += pcm24k.size * TWILIO_RATE_HZ / PCM16_RATE_HZ
        self._down_emitted += out.size
        if start < self._play_from:
            return out[min(out.size, self._play_from - start) :]
        return out

    def _drain(self) -> npt.NDArray[np.int16]:
        """What the outbound stream still holds of the audio fed to it, leaving only silence inside.

        Feeding silence until the held samples and the filter's ring-out have come out does what
        ``last=True`` and ``clear()`` did, but libsoxr rebuilds its buffers on every ``clear()``, which grew a
        stream by 16-27 KB over a call. The silence still inside is skipped when the next reply comes out, so
        that reply starts on time. soxr emits in blocks of about 490 samples, hence the (bounded) loop.
        """
        audio_end = round(self._down_fed)
        if audio_end <= self._play_from:  # nothing fed since the last drain
            return np.zeros(0, dtype=np.int16)
        first, silent_until = self._down_emitted, self._play_from
        produced = self._feed_down_silence(_MAX_DRAIN_CHUNKS, until_emitted=audio_end + _RING_OUT_SAMPLES)
        self._play_from = round(self._down_fed)
        if not produced:
            return np.zeros(0, dtype=np.int16)
        drained = np.concatenate(produced)
        return drained[max(0, silent_until - first) : max(0, audio_end - first)]

    def _feed_down_silence(
        self, chunks: int, until_emitted: int | None = None
    ) -> list[npt.NDArray[np.int16]]:
        """Feed up to ``chunks`` of 20 ms silence to the outbound stream (stopping once ``until_emitted``
        samples have come out), keeping its timeline; returns what came out."""
        produced: list[npt.NDArray[np.int16]] = []
        for _ in range(chunks):
            if until_emitted is not None and self._down_emitted >= until_emitted:
                break
            out: npt.NDArray[np.int16] = self._down.resample_chunk(_SILENCE_24K)
            produced.append(out)
            self._down_fed += _SILENCE_24K.size * TWILIO_RATE_HZ / PCM16_RATE_HZ
            self._down_emitted += out.size
        return produced


def audio_path(mode: str) -> AudioPath:
    if mode == "pcm16":
        return Pcm16Converter()
    return UlawPassthrough()
