"""A fresh emulator per test, tuned fast (no first-audio wait, deltas in bursts)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from emulators.voicelive import Faults, VoiceLiveEmulator, VoiceLiveEmulatorConfig


@pytest.fixture
def emulator() -> Iterator[VoiceLiveEmulator]:
    config = VoiceLiveEmulatorConfig(faults=Faults(first_audio_ms=0, pace=0))
    with VoiceLiveEmulator(config) as running:
        yield running
