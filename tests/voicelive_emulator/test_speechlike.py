"""The synthetic caller audio and the μ-law codec other parts build on."""

from __future__ import annotations

import numpy as np

from emulators.speechlike import (
    rms_dbfs,
    silence_ulaw,
    speechlike_pcm16,
    speechlike_ulaw,
    ulaw_decode,
    ulaw_duration_ms,
    ulaw_encode,
)

# The G.711 reference (Sun/CPython audioop) values for a few linear samples.
REFERENCE = {0: 0xFF, -1: 0x7E, 32767: 0x80, -32768: 0x00, 1000: 0xCE, -1000: 0x4E, 100: 0xF2}


def test_ulaw_encode_matches_reference_points() -> None:
    samples = np.array(list(REFERENCE), dtype=np.int16)
    assert list(ulaw_encode(samples)) == list(REFERENCE.values())


def test_ulaw_roundtrip_is_close() -> None:
    samples = np.arange(-32000, 32000, 37, dtype=np.int16)
    decoded = ulaw_decode(ulaw_encode(samples)).astype(np.int32)
    error = np.abs(decoded - samples.astype(np.int32))
    # μ-law quantisation step is at most 1/16 of the magnitude (plus the 14-bit floor).
    assert np.all(error <= np.maximum(16, np.abs(samples.astype(np.int32)) // 16))


def test_durations_and_silence() -> None:
    assert len(speechlike_ulaw(1234)) == 1234 * 8
    assert ulaw_duration_ms(speechlike_ulaw(1234)) == 1234
    assert silence_ulaw(20) == b"\xff" * 160
    assert ulaw_duration_ms(b"\xff" * 15) == 1
    assert silence_ulaw(-5) == b""
    assert rms_dbfs(ulaw_decode(silence_ulaw(100))) == -120.0


def test_every_frame_of_speech_is_loud() -> None:
    pcm = ulaw_decode(speechlike_ulaw(3000, seed=7))
    levels = [rms_dbfs(pcm[i : i + 80]) for i in range(0, pcm.size, 80)]
    assert min(levels) > -32.0
    assert max(levels) > -20.0


def test_deterministic_per_seed_and_pitch() -> None:
    assert speechlike_ulaw(400, seed=1) == speechlike_ulaw(400, seed=1)
    assert speechlike_ulaw(400, seed=1) != speechlike_ulaw(400, seed=2)
    assert speechlike_ulaw(400, pitch_hz=220.0) != speechlike_ulaw(400)


def test_pcm16_at_other_rates() -> None:
    pcm = speechlike_pcm16(100, sample_rate=24000)
    assert pcm.dtype == np.int16 and pcm.size == 2400
    assert speechlike_pcm16(0).size == 0
