"""The agent profile: one YAML file that both pipelines read, so callers meet the same agent on each."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field


class TurnDetection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["server_vad", "azure_semantic_vad", "azure_semantic_vad_multilingual"] = "server_vad"
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(default=300, ge=0)
    silence_duration_ms: int = Field(default=500, ge=0)
    speech_duration_ms: int | None = Field(default=None, ge=0)
    remove_filler_words: bool | None = None
    interrupt_response: bool = True
    create_response: bool = True


class LegacyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    speech_timeout: str = "auto"
    hints: list[str] = Field(default_factory=list)
    reprompt: str = "Sorry, I didn't catch that. Could you say it again?"
    goodbye: str = "I still can't hear you, so I'll end the call now. Goodbye!"
    apology: str = "Sorry, I'm having trouble right now. Could you say that again?"
    max_empty_turns: int = Field(default=2, ge=0)
    max_history_messages: int = Field(default=20, ge=2)
    max_speech_chars: int = Field(default=1000, ge=1)
    max_reply_chars: int = Field(default=600, ge=1)


class AgentProfile(BaseModel):
    """What the agent says and how it listens; fields map onto Voice Live's session and the legacy turn."""

    model_config = ConfigDict(extra="forbid")

    name: str = "agent"
    instructions: str
    greeting: str = ""
    language: str = "en-US"
    voice: str = "en-US-AvaNeural"
    temperature: float = Field(default=0.8, ge=0.0, le=2.0)
    max_output_tokens: int = Field(default=300, ge=1, le=4096)
    turn_detection: TurnDetection = Field(default_factory=TurnDetection)
    noise_suppression: bool = True
    echo_cancellation: bool = False
    input_transcription: str | None = "azure-speech"
    legacy: LegacyOptions = Field(default_factory=LegacyOptions)

    @classmethod
    def load(cls, path: Path) -> AgentProfile:
        """Read and validate a profile file; a bad file fails start-up with pydantic's field errors."""
        with path.open("r", encoding="utf-8") as handle:
            data = yaml.safe_load(handle) or {}
        return cls.model_validate(data)
