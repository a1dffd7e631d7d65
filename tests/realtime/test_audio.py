"""Audio paths: passthrough is untouched; PCM16 conversion keeps a tone's pitch, level and continuity."""

from __future__ import annotations

import base64
import tracemalloc

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
from realtime_pipeline.resample import DELAY, Downsampler, Upsampler

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
        noise = float(np.sum((a - gain * b) ** 2))
        if noise == 0.0:  # identical up to gain (μ-law re-encodes a clean round trip to the same codes)
            return float("inf")
        best = max(best, 10 * np.log10(np.sum(a**2) / noise))
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


def chunked(signal: npt.NDArray[np.float64], sizes: list[int]) -> list[npt.NDArray[np.float64]]:
    """``signal`` cut into pieces of the given sizes, cycling (0 included: an empty delta must be harmless)."""
    pieces, start, k = [], 0, 0
    while start < signal.size:
        size = sizes[k % len(sizes)]
        pieces.append(signal[start : start + size])
        start += size
        k += 1
    return pieces


def test_resamplers_give_the_same_samples_whatever_the_chunking() -> None:
    """A stream never restarts: any chunking, odd sizes and empty chunks included, equals one call."""
    rng = np.random.default_rng(5)
    speechy = rng.normal(0, 3000, 24000)
    up_whole = Upsampler().process(speechy[:8000])
    up = Upsampler()
    up_pieces = np.concatenate([up.process(p) for p in chunked(speechy[:8000], [160, 1, 0, 37, 500, 2])])
    assert up_whole.size == 3 * 8000 - DELAY  # the filter delay is trimmed, the rest comes out at once
    assert np.array_equal(up_pieces, up_whole)

    down = Downsampler()
    down_whole = np.concatenate([down.process(speechy), down.flush()])
    down = Downsampler()
    pieces = [down.process(p) for p in chunked(speechy, [480, 1, 0, 1001, 7, 2400])]
    down_pieces = np.concatenate([*pieces, down.flush()])
    assert down_whole.size == 8000  # ceil(24000 / 3): nothing lost to the delay once flushed
    assert np.array_equal(down_pieces, down_whole)
    # After a flush the stream starts over from silence, exactly like a new one.
    assert np.array_equal(down.process(speechy[:960]), Downsampler().process(speechy[:960]))


@pytest.mark.parametrize("freq", [300.0, 1000.0, 3400.0])
def test_resamplers_keep_time_alignment_and_level(freq: float) -> None:
    """Output sample n is the input's time n / rate (no shift to search for): compared with the exact tone."""
    amplitude = 20000.0
    up = Upsampler().process(amplitude * np.sin(2 * np.pi * freq * np.arange(16000) / 8000))
    exact24 = amplitude * np.sin(2 * np.pi * freq * np.arange(up.size) / 24000)
    error = up[1000:-1000] - exact24[1000:-1000]
    assert 10 * np.log10(np.mean(exact24**2) / np.mean(error**2)) > 85  # 16-bit rounding is ~98 dB

    down = Downsampler()
    source = amplitude * np.sin(2 * np.pi * freq * np.arange(48000) / 24000)
    out = np.concatenate([down.process(source), down.flush()])
    exact8 = amplitude * np.sin(2 * np.pi * freq * np.arange(out.size) / 8000)
    error = out[400:-400] - exact8[400:-400]
    assert 10 * np.log10(np.mean(exact8**2) / np.mean(error**2)) > 85


def level_db(signal: npt.NDArray[np.float64], rate: int, freq: float) -> float:
    """Level of the component at ``freq``, dB relative to a full-amplitude (1.0) sine, over exactly one second
    of ``signal`` (1 Hz bins: whole-Hz tones sit on a bin, so the window's scalloping does not count)."""
    signal = signal[:rate]
    assert signal.size == rate
    window = np.kaiser(signal.size, 20)  # side lobes far below what is measured here
    spectrum = np.abs(np.fft.rfft(signal * window)) / (window.sum() / 2)
    index = round(freq * signal.size / rate)
    return float(20 * np.log10(spectrum[index - 3 : index + 4].max() + 1e-30))


@pytest.mark.parametrize("freq", [300.0, 1000.0, 3000.0, 3600.0])
def test_resampler_response_is_flat_with_images_and_aliases_below_16_bits(freq: float) -> None:
    """soxr HQ's response where 16-bit audio can tell: flat to 3.6 kHz, nothing above 4 kHz leaks through."""
    amplitude = 30000.0
    up = Upsampler().process(amplitude * np.sin(2 * np.pi * freq * np.arange(16000) / 8000))[2400:]
    assert abs(level_db(up / amplitude, 24000, freq)) < 0.01
    for image in (8000 - freq, 8000 + freq):  # (16000 ± f folds onto these at 24 kHz)
        assert level_db(up / amplitude, 24000, image) < -98, image  # 16-bit resolution: 98 dB

    for source_hz, heard_hz in (
        (freq, freq),
        (8000 - freq, freq),
        (8000 + freq, freq),
        (4000 + freq, 4000 - freq),
    ):
        down = Downsampler()
        tone24 = amplitude * np.sin(2 * np.pi * source_hz * np.arange(48000) / 24000)
        out = down.process(tone24)[800:] / amplitude
        level = level_db(out, 8000, heard_hz)
        if source_hz < 4000:
            assert abs(level) < 0.01
        else:
            assert level < -98, source_hz  # aliases of what the TTS has above 4 kHz


def test_cutoff_is_where_soxr_hq_puts_it() -> None:
    """−3 dB between 3.7 and 3.9 kHz (soxr HQ: about 3.8 kHz), so the top of the phone band is kept."""
    samples = 30000.0 * np.sin(2 * np.pi * 3800.0 * np.arange(16000) / 8000)
    level = level_db(Upsampler().process(samples)[2400:] / 30000.0, 24000, 3800.0)
    reference = soxr.resample(samples, 8000, 24000, quality="HQ")[2400:] / 30000.0
    assert -5.0 < level < -2.0
    assert abs(level - level_db(reference, 24000, 3800.0)) < 1.0


def test_every_inbound_frame_is_forwarded_at_once() -> None:
    """Each 20 ms Twilio frame gives 20 ms of 24 kHz audio (the first, 9 ms less: the filter delay), so no
    append is ever empty and no frame waits for the next ones."""
    converter = Pcm16Converter()
    ulaw = pcm16_to_ulaw(tone(440.0, 0.5, 8000))
    sizes = [
        len(base64.b64decode(converter.inbound("", ulaw[i : i + FRAME]))) // 2
        for i in range(0, len(ulaw), FRAME)
    ]
    assert sizes[0] == 3 * FRAME - DELAY
    assert set(sizes[1:]) == {3 * FRAME}


def test_a_call_converter_keeps_only_a_few_kilobytes() -> None:
    """Per-call state is the filters' history; the filter itself is shared (soxr streams held ~80 KB each)."""
    ulaw = pcm16_to_ulaw(tone(440.0, 1.0, 8000))
    delta = base64.b64encode(tone(500.0, 0.1, 24000).tobytes()).decode()
    warm = Pcm16Converter()
    warm.inbound("", ulaw[:FRAME])
    warm.outbound(delta)
    warm.flush_outbound()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        converters = [Pcm16Converter() for _ in range(50)]
        for i in range(0, 4 * FRAME, FRAME):
            for converter in converters:
                converter.inbound("", ulaw[i : i + FRAME])
                converter.outbound(delta)
        held = (tracemalloc.get_traced_memory()[0] - before) / len(converters)
    finally:
        tracemalloc.stop()
    assert held < 8 * 1024, held
