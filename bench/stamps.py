"""Send-time stamps carried inside the audio itself, for the bridge benchmark's end-to-end latency.

The bridge's own probe times each frame from the moment the server reads it to the moment it writes it on:
it cannot see time a frame spends queued in the kernel or the event loop while the server is busy, which is
exactly where an overloaded worker falls behind. So the benchmark's sending peers (the driver for Twilio
frames, the stub for Voice Live deltas) overwrite the first 6 bytes of each frame's audio with the send
time, and the receiving peer reads it back. In ``g711_ulaw`` mode (and the baseline) the bridge forwards
the base64 untouched, so the stamp survives; ``pcm16`` resamples the audio, so it has no end-to-end figure.

A stamp is 8 base64 characters (6 bytes: microseconds of ``CLOCK_MONOTONIC``, one clock for every process
on the machine), so it replaces whole base64 groups and the payload stays valid base64 of the same length.
"""

from __future__ import annotations

import binascii
import time

STAMP_CHARS = 8
_WRAP = 1 << 48


def stamp_now() -> bytes:
    """The current time as 8 base64 characters."""
    return binascii.b2a_base64((time.monotonic_ns() // 1000 % _WRAP).to_bytes(6, "big"), newline=False)


def age_us(stamp: bytes | bytearray) -> int:
    """Microseconds since ``stamp`` was made; -1 if ``stamp`` is not one."""
    try:
        sent = int.from_bytes(binascii.a2b_base64(stamp), "big")
    except (binascii.Error, ValueError):
        return -1
    age = (time.monotonic_ns() // 1000 - sent) % _WRAP
    return age if age < 60_000_000 else -1  # a minute: anything older is audio, not a stamp


def split_at(frame: bytes, marker: bytes) -> tuple[bytes, bytes]:
    """``frame`` cut around the 8 characters that follow ``marker`` (the first of the audio's base64), so
    that ``head + stamp_now() + tail`` is the same frame stamped."""
    start = frame.index(marker) + len(marker)
    return frame[:start], frame[start + STAMP_CHARS :]
