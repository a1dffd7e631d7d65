"""Azure STT threads are bounded per worker, a slot is held until its thread really ends, and a
recognition the turn gave up on is asked to stop.

The SDK is replaced by recognitions that block on a :class:`threading.Event` the test sets, so what is
asserted never depends on how fast the machine is: a blocked thread stays blocked until released. One test
uses the real SDK against the emulator, with a generous bound between "stopped" and "left alone".
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
import wave
from collections.abc import Callable
from functools import partial
from types import SimpleNamespace

import pytest
from azure.cognitiveservices import speech as speechsdk

import legacy_pipeline.stt
from emulators.azure_speech import AzureSpeechEmulator
from emulators.speechlike import silence_ulaw, speechlike_pcm16, ulaw_decode
from legacy_pipeline.blocking import run_blocking
from legacy_pipeline.speech_config import SpeechError, build_speech_config
from legacy_pipeline.stt import (
    ONE_SHOT_TIMEOUT_PROPERTY,
    STOP_TIMEOUT_PROPERTY,
    AzureSpeechRecognizer,
    Recognition,
    WavAudio,
    parse_wav,
)

WAV = io.BytesIO()
with wave.open(WAV, "wb") as _out:
    _out.setnchannels(1)
    _out.setsampwidth(2)
    _out.setframerate(8000)
    _out.writeframes(b"\x01\x00" * 800)
RECORDING = WAV.getvalue()


def no_sdk() -> None:
    raise AssertionError("the SDK is not used here")


class BlockedRecognitions:
    """Stands in for ``AzureSpeechRecognizer._recognize``: each call waits until the test releases it."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = 0
        self.finished = 0
        self._lock = threading.Lock()
        self._entered = threading.Condition(self._lock)

    def __call__(self, audio: WavAudio, language: str, recognition: Recognition) -> str:
        with self._lock:
            self.started += 1
            self._entered.notify_all()
        self.release.wait(60)
        with self._lock:
            self.finished += 1
        return "hello"

    def wait_started(self, n: int) -> bool:
        with self._lock:
            return self._entered.wait_for(lambda: self.started >= n, timeout=20)


def recognizer(fake: BlockedRecognitions, *, timeout_s: float, max_concurrent: int) -> AzureSpeechRecognizer:
    stt = AzureSpeechRecognizer(no_sdk, timeout_s=timeout_s, max_concurrent=max_concurrent)
    stt._recognize = fake  # type: ignore[method-assign]
    return stt


def stt_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "azure-stt"}


async def eventually(condition: Callable[[], bool], *, within_s: float = 20.0) -> bool:
    """Poll ``condition()`` (a generous bound: it is a liveness check, not a timing assertion)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.02)
    return bool(condition())


async def test_a_full_bound_refuses_the_next_recognition_without_a_thread() -> None:
    fake = BlockedRecognitions()
    stt = recognizer(fake, timeout_s=60.0, max_concurrent=2)
    before = stt_threads()
    running = [asyncio.create_task(stt.transcribe(RECORDING, language="en-US")) for _ in range(2)]
    try:
        assert await asyncio.to_thread(fake.wait_started, 2)
        assert stt.threads_in_use == 2 and len(stt_threads() - before) == 2
        # The third fails with SpeechError (the turn's apology path) before any timeout: a TimeoutError
        # here would mean it waited, a third ``started`` that it ran.
        async with asyncio.timeout(30):
            with pytest.raises(SpeechError, match="LEGACY_STT_MAX_CONCURRENT"):
                await stt.transcribe(RECORDING, language="en-US")
        assert fake.started == 2 and len(stt_threads() - before) == 2
    finally:
        fake.release.set()
    assert await asyncio.gather(*running) == ["hello", "hello"]
    assert await eventually(lambda: stt.threads_in_use == 0)


async def test_a_recognition_that_finds_the_bound_full_waits_briefly_for_the_next_free_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A burst just over the bound was refused at once (the caller heard the apology) although a slot came
    free a moment later."""
    monkeypatch.setattr(legacy_pipeline.stt, "SLOT_WAIT_S", 10.0)  # generous: the box may be slow
    fake = BlockedRecognitions()
    stt = recognizer(fake, timeout_s=60.0, max_concurrent=1)
    first = asyncio.create_task(stt.transcribe(RECORDING, language="en-US"))
    assert await asyncio.to_thread(fake.wait_started, 1)
    second = asyncio.create_task(stt.transcribe(RECORDING, language="en-US"))
    await asyncio.sleep(0.1)
    assert not second.done() and fake.started == 1, "waiting for the slot, not refused, not running"
    fake.release.set()  # the first recognition ends: its slot goes to the second
    assert await first == "hello" and await second == "hello"
    assert fake.started == 2
    assert await eventually(lambda: stt.threads_in_use == 0)


async def test_a_timed_out_recognition_keeps_its_slot_until_its_thread_ends() -> None:
    fake = BlockedRecognitions()
    stt = recognizer(fake, timeout_s=0.05, max_concurrent=1)
    # Never released yet, so this times out whatever the machine's speed.
    with pytest.raises(TimeoutError):
        await stt.transcribe(RECORDING, language="en-US")
    assert stt.threads_in_use == 1 and fake.finished == 0
    with pytest.raises(SpeechError, match="LEGACY_STT_MAX_CONCURRENT"):
        await stt.transcribe(RECORDING, language="en-US")
    assert fake.started == 1

    fake.release.set()  # the SDK finally gives up on the abandoned recognition
    assert await eventually(lambda: stt.threads_in_use == 0)
    assert fake.finished == 1
    assert await stt.transcribe(RECORDING, language="en-US") == "hello"
    assert fake.started == 2


async def test_a_recognition_that_raises_gives_its_slot_back() -> None:
    def fails(audio: WavAudio, language: str, recognition: Recognition) -> str:
        raise SpeechError("Error: Connection was closed by the remote host.")

    stt = AzureSpeechRecognizer(no_sdk, timeout_s=10.0, max_concurrent=1)
    stt._recognize = fails  # type: ignore[method-assign]
    for _ in range(3):
        with pytest.raises(SpeechError, match="closed by the remote host"):
            await stt.transcribe(RECORDING, language="en-US")
        assert await eventually(lambda: stt.threads_in_use == 0)


class SdkObject:
    """Records the thread that releases it (a Speech SDK recognizer's release can block for ~10 s)."""

    def __init__(self, released_on: list[str]) -> None:
        self._released_on = released_on

    def __del__(self) -> None:
        self._released_on.append(threading.current_thread().name)


async def test_what_a_failed_call_held_is_released_on_its_thread_not_the_loop() -> None:
    released_on: list[str] = []

    def fails() -> str:
        recognizer = SdkObject(released_on)  # noqa: F841 - held by the frame, as in _recognize
        raise SpeechError("Canceled: the service failed")

    with pytest.raises(SpeechError):
        await run_blocking(fails, timeout_s=30.0, name="azure-stt")
    assert released_on == ["azure-stt"]


async def test_what_an_abandoned_call_held_is_released_on_its_thread_not_the_loop() -> None:
    released_on: list[str] = []
    answer = threading.Event()

    def silent_then_fails() -> str:
        recognizer = SdkObject(released_on)  # noqa: F841
        answer.wait(60)
        raise SpeechError("Canceled: Timeout: no recognition result received")

    with pytest.raises(TimeoutError):
        await run_blocking(silent_then_fails, timeout_s=0.05, name="azure-stt")
    answer.set()
    assert await eventually(lambda: bool(released_on))
    await asyncio.sleep(0)  # the error reaches the loop after the release; let it be dropped there
    assert released_on == ["azure-stt"]


class SdkFuture:
    """Stands in for ``speechsdk.ResultFuture``."""

    def __init__(self, get: Callable[[], object]) -> None:
        self._get = get

    def get(self) -> object:
        return self._get()


class SilentServiceRecognizer:
    """Stands in for ``speechsdk.SpeechRecognizer`` against a silent service: it answers only once stopped."""

    def __init__(self) -> None:
        self.recognizing = threading.Event()
        self.stopped = threading.Event()
        self.stop_collected = threading.Event()
        self.stop_threads: list[int] = []

    def recognize_once_async(self) -> SdkFuture:
        def get() -> object:
            self.recognizing.set()
            self.stopped.wait(60)
            return SimpleNamespace(reason=speechsdk.ResultReason.NoMatch)

        return SdkFuture(get)

    def stop_continuous_recognition_async(self) -> SdkFuture:
        self.stop_threads.append(threading.get_ident())
        self.stopped.set()
        return SdkFuture(self.stop_collected.set)


def silent_recognizer(
    fake: SilentServiceRecognizer, *, timeout_s: float, before_start: threading.Event | None = None
) -> AzureSpeechRecognizer:
    def new_recognizer(audio: WavAudio, language: str) -> SilentServiceRecognizer:
        if before_start is not None:
            before_start.wait(60)
        return fake

    stt = AzureSpeechRecognizer(no_sdk, timeout_s=timeout_s, max_concurrent=1)
    stt._new_recognizer = new_recognizer  # type: ignore[method-assign]
    return stt


async def test_a_timed_out_recognition_is_stopped_off_the_loop() -> None:
    fake = SilentServiceRecognizer()
    stt = silent_recognizer(fake, timeout_s=0.05)
    with pytest.raises(TimeoutError):  # the fake answers only once stopped
        await stt.transcribe(RECORDING, language="en-US")
    assert await eventually(fake.stopped.is_set)
    assert fake.stop_threads and fake.stop_threads[0] != threading.get_ident()  # not on the event loop
    # The recognition's own thread collects the stop's future (releasing the SDK's handle), then its slot.
    assert await eventually(lambda: stt.threads_in_use == 0)
    assert fake.stop_collected.is_set() and len(fake.stop_threads) == 1


async def test_a_turn_deadline_stops_the_recognition_too() -> None:
    fake = SilentServiceRecognizer()
    stt = silent_recognizer(fake, timeout_s=60.0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):  # the turn's deadline, shorter than the STT timeout
            await stt.transcribe(RECORDING, language="en-US")
    assert await eventually(fake.stopped.is_set)
    assert await eventually(lambda: stt.threads_in_use == 0)


async def test_a_recognition_that_answers_is_not_stopped() -> None:
    fake = SilentServiceRecognizer()
    fake.stopped.set()  # answers at once
    stt = silent_recognizer(fake, timeout_s=60.0)
    assert await stt.transcribe(RECORDING, language="en-US") == ""
    assert await eventually(lambda: stt.threads_in_use == 0)
    assert fake.stop_threads == []


async def test_a_recognition_abandoned_before_it_starts_never_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    abandoned = threading.Event()
    abandon = Recognition.abandon

    def spy(self: Recognition) -> None:
        abandon(self)
        abandoned.set()

    monkeypatch.setattr(Recognition, "abandon", spy)
    fake = SilentServiceRecognizer()
    slow_setup = threading.Event()
    stt = silent_recognizer(fake, timeout_s=0.05, before_start=slow_setup)
    with pytest.raises(TimeoutError):  # still building its recognizer
        await stt.transcribe(RECORDING, language="en-US")
    assert await eventually(abandoned.is_set)
    slow_setup.set()
    assert await eventually(lambda: stt.threads_in_use == 0)
    assert not fake.recognizing.is_set() and fake.stop_threads == []


def speech_recording() -> bytes:
    silence = ulaw_decode(silence_ulaw(400)).tobytes()
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(silence + speechlike_pcm16(1500, seed=3).tobytes() + silence)
    return buffer.getvalue()


async def test_a_stalled_azure_recognition_lets_its_thread_go_after_the_timeout(
    speech_emulator: AzureSpeechEmulator,
) -> None:
    """The real SDK against a Speech service that never answers (the emulator's ``stall`` fault).

    Left alone the thread lasts ~80 s after the timeout (70 s in the SDK, 10 s releasing the recognizer);
    stopped on timeout, ~30 s; with the SDK's own timeouts set too, ~6 s (SDK 1.53). The bound below sits
    well above the last and well below the others, and only limits polling.
    """
    speech_emulator.set_faults(stall_next=1)
    stt = AzureSpeechRecognizer(
        partial(build_speech_config, key="", host=speech_emulator.url), timeout_s=1.0, max_concurrent=4
    )
    before = stt_threads()
    with pytest.raises(TimeoutError):
        await stt.transcribe(speech_recording(), language="en-US")
    (thread,) = stt_threads() - before
    assert thread.is_alive() and stt.threads_in_use == 1
    assert await eventually(lambda: not thread.is_alive(), within_s=18.0)
    assert stt.threads_in_use == 0
    assert [r.status for r in speech_emulator.recognitions] == ["stalled"]


def test_the_sdk_is_told_our_timeouts() -> None:
    """Its single-shot timeout is ours (it waited 60 s), and it waits at most 3 s for a session to stop."""
    stt = AzureSpeechRecognizer(
        partial(build_speech_config, key="", host="ws://127.0.0.1:9"), timeout_s=1.5, max_concurrent=1
    )
    recognizer = stt._new_recognizer(parse_wav(RECORDING), "en-US")  # no connection until recognition
    assert recognizer.properties.get_property_by_name(ONE_SHOT_TIMEOUT_PROPERTY) == "1500"
    assert recognizer.properties.get_property_by_name(STOP_TIMEOUT_PROPERTY) == "3"


async def test_a_deadline_that_expires_as_the_call_returns_still_ends_the_turn() -> None:
    """The thread's answer and the turn's deadline reach the loop in the same iteration (a busy worker).
    ``asyncio.wait_for`` (Python 3.11) returned the answer and dropped the cancellation: the deadline, which
    fires once, was spent, and the rest of the turn (model, speech, upload) ran with no limit, past
    Twilio's webhook timeout."""
    loop = asyncio.get_running_loop()
    release = threading.Event()

    def recognize() -> str:
        release.wait(10)
        return "I'd like to book an appointment."

    def busy_loop() -> None:
        release.set()
        time.sleep(0.3)  # the thread answers while the loop is busy, and the deadline passes meanwhile

    loop.call_later(0.1, busy_loop)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):  # the turn's deadline
            await run_blocking(recognize, timeout_s=30.0, name="azure-stt")
            await asyncio.sleep(5)  # the rest of the turn
    assert time.monotonic() - started < 2.0
