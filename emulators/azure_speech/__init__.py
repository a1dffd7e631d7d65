"""Azure Speech emulator: TTS and STT over the Speech SDK's USP WebSocket protocol, with faults."""

from emulators.azure_speech.emulator import AzureSpeechEmulator
from emulators.azure_speech.knobs import SpeechKnobs
from emulators.azure_speech.records import HandshakeRecord, RecognitionRecord, SynthesisRecord
from emulators.azure_speech.stt import DEFAULT_TRANSCRIPT

__all__ = [
    "DEFAULT_TRANSCRIPT",
    "AzureSpeechEmulator",
    "HandshakeRecord",
    "RecognitionRecord",
    "SpeechKnobs",
    "SynthesisRecord",
]
