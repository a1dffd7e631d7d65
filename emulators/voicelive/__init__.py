"""Azure AI Voice Live emulator: the realtime WebSocket protocol on a loopback port, with fault injection."""

from emulators.voicelive.config import VoiceLiveEmulatorConfig
from emulators.voicelive.emulator import VoiceLiveEmulator
from emulators.voicelive.faults import ErrorSpec, Faults
from emulators.voicelive.records import EmulatorState, SessionRecord

__all__ = [
    "EmulatorState",
    "ErrorSpec",
    "Faults",
    "SessionRecord",
    "VoiceLiveEmulator",
    "VoiceLiveEmulatorConfig",
]
