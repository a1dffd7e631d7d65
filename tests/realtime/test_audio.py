"""Audio paths: passthrough is untouched; PCM16 conversion keeps a tone's pitch, level and continuity."""

from __future__ import annotations

import base64

import numpy as np
import numpy.typing as npt
import pytest
import soxr

from realtime_pipeline.audio import (
    Pcm16Converter,
    UlawPassthrough,
    audio_path,
    pcm16_to_ulaw,
    ulaw_to_pcm16,
)

FRAME = 160  # 20 ms at 8 kHz


def tone(freq: float, seconds: float, rate: int, amplitude: float = 8000.0) -> npt.NDArray[np.int16]:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def peak_hz(signal: npt.NDArray[np.float64], rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(signal.size)))
    return float(np.fft.rfftfreq(signal.size, 1 / rate)[int(np.argmax(spectrum))])


def snr_db(reference: npt.NDArray[np.float64], test: npt.NDArray[np.float64]) -> float:
    """SNR of ``test`` against ``reference`` after the best integer alignment and gain."""
    best = -np.inf
    for lag in range(0, 64):
        a = reference[: reference.size - lag]
        b = test[lag : lag + a.size]
        a = a[: b.size]
        gain = float(np.dot(a, b) / np.dot(b, b))
        noise_energy = float(np.sum((a - gain * b) ** 2))
        if noise_energy == 0.0:
            return float("inf")  # identical after alignment and gain
        best = max(best, 10 * np.log10(np.sum(a**2) / noise_energy))
    return float(best)


def round_trip(ulaw: bytes, converter: Pcm16Converter, delta_ms: int = 100) -> bytes:
    """Twilio frames → 24 kHz (inbound) → Voice Live-sized deltas → back to μ-law (outbound)."""
    upsampled = b"".join(
        base64.b64decode(
            converter.inbound(base64.b64encode(ulaw[i : i + FRAME]).decode(), ulaw[i : i + FRAME])
        )
        for i in range(0, len(ulaw), FRAME)
    )
    step = delta_ms * 48  # bytes of 24 kHz PCM16 per delta
    out = bytearray()
    for i in range(0, len(upsampled), step):
        payload, size, _ = converter.outbound(base64.b64encode(upsampled[i : i + step]).decode())
        assert size == len(base64.b64decode(payload)) if payload else size == 0
        out += base64.b64decode(payload) if payload else b""
    out += base64.b64decode(converter.flush_outbound() or "")
    return bytes(out)


def test_ulaw_codec_is_g711() -> None:
    everything = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
    codes = pcm16_to_ulaw(everything)
    # Decoding and re-encoding every code is the identity (0x7F and 0xFF both mean zero).
    decoded = ulaw_to_pcm16(bytes(range(256)))
    assert pcm16_to_ulaw(decoded) == bytes(c if c != 0x7F else 0xFF for c in range(256))
    assert codes[32768] == 0xFF and codes[0] == 0x00 and codes[-1] == 0x80


def test_passthrough_forwards_strings_untouched() -> None:
    path = UlawPassthrough()
    payload = base64.b64encode(bytes(range(160))).decode()
    assert path.inbound(payload, b"ignored") is payload
    out, size, ms = path.outbound(payload)
    assert out is payload and size == 160 and ms == 20.0
    with pytest.raises(ValueError):
        path.outbound("not base64!")


@pytest.mark.parametrize("freq", [300.0, 1000.0, 3000.0])
def test_pcm16_round_trip_keeps_frequency_and_snr(freq: float) -> None:
    original = tone(freq, 1.0, 8000)
    ulaw = pcm16_to_ulaw(original)
    reference = ulaw_to_pcm16(ulaw).astype(np.float64)  # μ-law's own limit
    result = ulaw_to_pcm16(round_trip(ulaw, Pcm16Converter())).astype(np.float64)
    assert abs(peak_hz(result[800:], 8000) - freq) < 10
    ulaw_limit = snr_db(original.astype(np.float64), reference)
    measured = snr_db(reference[800:-800], result[800:])
    assert measured > ulaw_limit - 6, (measured, ulaw_limit)


def test_inbound_stream_has_no_discontinuity_at_frame_boundaries() -> None:
    """Frame-by-frame streaming equals resampling the whole signal at once (a per-frame resampler would not)."""
    signal = tone(440.0, 1.0, 8000)
    ulaw = pcm16_to_ulaw(signal)
    converter = Pcm16Converter()
    streamed = np.frombuffer(
        b"".join(
            base64.b64decode(converter.inbound("", ulaw[i : i + FRAME])) for i in range(0, len(ulaw), FRAME)
        ),
        dtype=np.int16,
    ).astype(np.float64)
    whole = soxr.resample(ulaw_to_pcm16(ulaw), 8000, 24000, quality="HQ").astype(np.float64)
    assert snr_db(whole[2400:-2400], streamed[2400:]) > 40
    # And the stateless alternative really is worse at boundaries (the test can tell them apart).
    chunked = np.concatenate(
        [soxr.resample(ulaw_to_pcm16(ulaw[i : i + FRAME]), 8000, 24000) for i in range(0, len(ulaw), FRAME)]
    ).astype(np.float64)
    assert snr_db(whole[2400:-2400], chunked[2400:]) < snr_db(whole[2400:-2400], streamed[2400:]) - 10


def test_odd_length_pcm16_delta_is_carried_over() -> None:
    converter = Pcm16Converter()
    pcm = tone(500.0, 0.2, 24000).tobytes()
    first, second = pcm[:4801], pcm[4801:]
    outputs = [converter.outbound(base64.b64encode(part).decode()) for part in (first, second)]
    tail = base64.b64decode(converter.flush_outbound() or "")
    total = sum(size for _, size, _ in outputs) + len(tail)
    assert abs(total - 1600) <= 2  # 200 ms at 8 kHz: no sample lost to the odd split


def test_audio_path_factory() -> None:
    assert audio_path("g711_ulaw").mode == "g711_ulaw"
    assert audio_path("pcm16").mode == "pcm16"


def outbound_reply(converter: Pcm16Converter, pcm: npt.NDArray[np.int16], *, flush: bool = True) -> bytes:
    """One reply's 24 kHz audio in 100 ms deltas through the outbound path, as Twilio would receive it."""
    out = bytearray()
    for i in range(0, pcm.size, 2400):
        payload, _, _ = converter.outbound(base64.b64encode(pcm[i : i + 2400].tobytes()).decode())
        out += base64.b64decode(payload) if payload else b""
    if flush:
        out += base64.b64decode(converter.flush_outbound() or "")
    return bytes(out)


@pytest.mark.parametrize("first_seconds", [0.5, 0.01])
@pytest.mark.parametrize("second_seconds", [0.37, 0.004])
def test_a_reply_after_a_flushed_one_comes_out_whole_on_time_and_clean(
    first_seconds: float, second_seconds: float
) -> None:
    """The outbound stream is drained, not reset, between replies: the next reply is neither delayed by the
    drain's silence nor coloured by the previous reply, and every sample of both comes out."""
    converter = Pcm16Converter()
    first = outbound_reply(converter, tone(440.0, first_seconds, 24000))
    second = outbound_reply(converter, tone(700.0, second_seconds, 24000))
    fresh = outbound_reply(Pcm16Converter(), tone(700.0, second_seconds, 24000))
    assert len(first) == round(first_seconds * 8000)
    assert len(second) == len(fresh) == round(second_seconds * 8000)
    if len(fresh) >= 800:
        assert snr_db(ulaw_to_pcm16(fresh).astype(np.float64), ulaw_to_pcm16(second).astype(np.float64)) > 35


def test_a_barge_in_discards_the_held_audio_and_the_next_reply_starts_clean() -> None:
    converter = Pcm16Converter()
    outbound_reply(converter, tone(440.0, 0.3, 24000), flush=False)
    converter.discard_outbound()  # Twilio's buffer cleared mid-reply
    after = outbound_reply(converter, tone(700.0, 0.2, 24000))
    fresh = outbound_reply(Pcm16Converter(), tone(700.0, 0.2, 24000))
    assert len(after) == len(fresh) == 1600
    assert snr_db(ulaw_to_pcm16(fresh).astype(np.float64), ulaw_to_pcm16(after).astype(np.float64)) > 35
    assert converter.flush_outbound() == ""  # nothing fed since: nothing held


def test_warmed_streams_change_neither_the_audio_nor_its_timing() -> None:
    """The converter warms its soxr streams with silence at call start (for memory); none of that silence
    reaches either side, the samples equal a never-warmed stream's, and no more audio is held back."""
    converter = Pcm16Converter()
    raw_up = soxr.ResampleStream(8000, 24000, 1, dtype="int16", quality="HQ")
    ulaw = pcm16_to_ulaw(tone(440.0, 2.0, 8000))
    ours: list[npt.NDArray[np.int16]] = []
    theirs: list[npt.NDArray[np.int16]] = []
    most_held = {"ours": 0, "theirs": 0}
    for i in range(0, len(ulaw), FRAME):
        frame = ulaw[i : i + FRAME]
        ours.append(np.frombuffer(base64.b64decode(converter.inbound("", frame)), dtype=np.int16))
        theirs.append(raw_up.resample_chunk(ulaw_to_pcm16(frame)))
        fed = (i + FRAME) * 3
        most_held["ours"] = max(most_held["ours"], fed - sum(a.size for a in ours))
        most_held["theirs"] = max(most_held["theirs"], fed - sum(a.size for a in theirs))
    inbound, reference = np.concatenate(ours), np.concatenate(theirs)
    assert most_held["ours"] <= most_held["theirs"]
    size = min(inbound.size, reference.size)
    assert size > 0.9 * 2.0 * 24000
    assert np.max(np.abs(inbound[:size].astype(np.int32) - reference[:size])) <= 4  # same samples, in place
    # Outbound: the first reply starts with its first sample, not with warm-up silence.
    reply = tone(700.0, 0.3, 24000)
    warmed = ulaw_to_pcm16(outbound_reply(Pcm16Converter(), reply)).astype(np.int32)
    raw_down = soxr.ResampleStream(24000, 8000, 1, dtype="int16", quality="HQ")
    unwarmed = np.concatenate(
        [raw_down.resample_chunk(reply[i : i + 2400]) for i in range(0, reply.size, 2400)]
        + [raw_down.resample_chunk(np.zeros(0, dtype=np.int16), last=True)]
    )
    unwarmed_ulaw = ulaw_to_pcm16(pcm16_to_ulaw(unwarmed)).astype(np.int32)
    assert warmed.size == round(0.3 * 8000)
    size = min(warmed.size, unwarmed_ulaw.size)
    assert np.max(np.abs(warmed[:size] - unwarmed_ulaw[:size])) <= 64  # a μ-law step at most
