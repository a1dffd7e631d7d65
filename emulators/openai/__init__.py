"""OpenAI / Azure OpenAI chat-completions emulator (streaming SSE, usage, faults)."""

from emulators.openai.app import RecordedRequest
from emulators.openai.emulator import OpenAIEmulator
from emulators.openai.knobs import OpenAIKnobs
from emulators.openai.replies import default_reply, tokenize

__all__ = ["OpenAIEmulator", "OpenAIKnobs", "RecordedRequest", "default_reply", "tokenize"]
