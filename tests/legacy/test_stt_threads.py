"""Azure STT threads are bounded per worker, and a slot is held until its thread really ends.

The SDK is replaced by recognitions that block on a :class:`threading.Event` the test sets, so what is
asserted never depends on how fast the machine is: a blocked thread stays blocked until released.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
import wave
from collections.abc import Callable

import pytest

from legacy_pipeline.blocking import run_blocking
from legacy_pipeline.speech_config import SpeechError
from legacy_pipeline.stt import AzureSpeechRecognizer, WavAudio

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

    def __call__(self, audio: WavAudio, language: str) -> str:
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


def stt_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "azure-stt")


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
        assert stt.threads_in_use == 2 and stt_threads() == before + 2
        # The third fails with SpeechError (the turn's apology path) before any timeout: a TimeoutError
        # here would mean it waited, a third ``started`` that it ran.
        async with asyncio.timeout(30):
            with pytest.raises(SpeechError, match="LEGACY_STT_MAX_CONCURRENT"):
                await stt.transcribe(RECORDING, language="en-US")
        assert fake.started == 2 and stt_threads() == before + 2
    finally:
        fake.release.set()
    assert await asyncio.gather(*running) == ["hello", "hello"]
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
    def fails(audio: WavAudio, language: str) -> str:
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
