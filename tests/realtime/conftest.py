"""Fixtures for the realtime pipeline's end-to-end tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from emulators.twilio.rest import TwilioRestEmulator
from emulators.voicelive import Faults, VoiceLiveEmulator, VoiceLiveEmulatorConfig
from tests.realtime.harness import ACCOUNT_SID, AUTH_TOKEN, Harness


@pytest.fixture
def voicelive() -> Iterator[VoiceLiveEmulator]:
    # Fast replies (short audio, 8x real time) keep the tests quick; faults are set per test.
    config = VoiceLiveEmulatorConfig(
        replies=("Hello there, how can I help you today?", "Sure, Tuesday at ten works.", "Goodbye now."),
        ms_per_char=20,
        faults=Faults(first_audio_ms=20, pace=8.0),
    )
    with VoiceLiveEmulator(config) as emulator:
        yield emulator


@pytest.fixture
def rest() -> Iterator[TwilioRestEmulator]:
    emulator = TwilioRestEmulator(ACCOUNT_SID, AUTH_TOKEN).start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def make_harness(
    tmp_path: Path, voicelive: VoiceLiveEmulator, rest: TwilioRestEmulator
) -> Iterator[Callable[..., Harness]]:
    started: list[Harness] = []

    def make(**options: Any) -> Harness:
        harness = Harness(
            tmp_path=_dir(tmp_path, len(started)), voicelive=voicelive, rest=rest, **options
        ).start()
        started.append(harness)
        return harness

    yield make
    for harness in started:
        harness.stop()


def _dir(base: Path, index: int) -> Path:
    path = base / f"h{index}"
    path.mkdir(exist_ok=True)
    return path
