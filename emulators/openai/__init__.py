"""OpenAI / Azure OpenAI chat-completions emulator (streaming SSE, usage, faults)."""

from emulators.openai.app import RecordedRequest
from emulators.openai.emulator import OpenAIEmulator
from emulators.openai.knobs import OpenAIKnobs
from emulators.openai.replies import default_reply, tokenize, tool_result_reply
from emulators.openai.tools import TOOL_OUTPUT, TOOL_UNAVAILABLE_REPLY, ScriptEntry

__all__ = [
    "TOOL_OUTPUT",
    "TOOL_UNAVAILABLE_REPLY",
    "OpenAIEmulator",
    "OpenAIKnobs",
    "RecordedRequest",
    "ScriptEntry",
    "default_reply",
    "tokenize",
    "tool_result_reply",
]
