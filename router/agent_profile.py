"""The agent profile: one YAML file that both pipelines read, so callers meet the same agent on each."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import yaml
from jsonschema import Draft202012Validator, SchemaError
from jsonschema.validators import validator_for
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from referencing import Registry, Resource
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

if TYPE_CHECKING:
    from referencing._core import Resolver

TOOL_NAME = r"^[a-zA-Z0-9_-]{1,64}$"  # what OpenAI's chat and realtime APIs accept as a function name
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


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

    @field_validator("create_response")
    @classmethod
    def _replies_are_created(cls, value: bool) -> bool:
        """Off, Voice Live waits for a ``response.create`` the bridge never sends: the agent would not answer."""
        if not value:
            raise ValueError("false is not supported: the bridge relies on Voice Live to begin each reply")
        return value


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

    @field_validator("speech_timeout")
    @classmethod
    def _twilio_speech_timeout(cls, value: str) -> str:
        """Twilio takes ``auto`` or a positive whole number of seconds; anything else ("3s", "0") would go
        into every call's ``<Gather speechTimeout>`` and be refused or misread there."""
        value = value.strip()
        if value == "auto" or (value.isascii() and value.isdigit() and int(value) > 0):
            return value
        raise ValueError("must be auto or a positive whole number of seconds, like 2")


class SilenceOptions(BaseModel):
    """Realtime: a caller who goes quiet. The agent re-prompts after ``reprompt_after_seconds`` of silence (its
    own audio played out, nobody speaking), at most ``max_reprompts`` times, then says ``goodbye`` and hangs
    up once the caller has heard it, so an abandoned line does not hold a Voice Live session for hours.
    (Legacy's equivalent is ``legacy.max_empty_turns``.)"""

    model_config = ConfigDict(extra="forbid")

    reprompt_after_seconds: float = Field(default=10.0, ge=0.0)
    """0: never re-prompt nor hang up; the call lasts until the caller hangs up."""
    reprompt: str = Field(default="Are you still there?", min_length=1)
    max_reprompts: int = Field(default=2, ge=0)
    goodbye: str = Field(default="I can't hear you, so I'll end the call now. Goodbye!", min_length=1)


def _unresolvable_ref(schema: Resource[Any], resolver: Resolver[Any]) -> str | None:
    """The first ``$ref`` in ``schema`` that points nowhere in it. jsonschema follows a ``$ref`` only when a call's
    arguments reach it, so one pointing nowhere would fail every such call, and one to another document would be
    fetched then (a blocking download on the event loop): neither is found by ``check_schema``."""
    contents = schema.contents
    if isinstance(contents, dict) and isinstance(ref := contents.get("$ref"), str):
        try:
            resolver.lookup(ref)
        except Unresolvable:
            return ref
    for subschema in schema.subresources():
        if (found := _unresolvable_ref(subschema, resolver.in_subresource(subschema))) is not None:
            return found
    return None


class AgentTool(BaseModel):
    """A function the agent may call: the model sees name, description and parameters; the router POSTs the
    call to ``url`` and hands the model the answer (see ``router.tool_calls``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=TOOL_NAME)
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    url: str
    timeout_seconds: float = Field(default=3.0, gt=0.0, le=30.0)
    headers: dict[str, str] = Field(default_factory=dict)
    """Sent with every call (an API key for the tool's backend): ``${NAME}`` is read from the environment
    when the profile loads, so secrets stay out of the YAML and a missing one fails start-up."""
    validate_arguments: bool = True
    """Check the model's arguments against ``parameters`` before calling: arguments that do not match are
    answered with the reason (the model can correct them) and never reach the backend. Off for a backend
    that is more lenient than its schema."""

    @field_validator("parameters")
    @classmethod
    def _object_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type") != "object":
            raise ValueError('parameters must be a JSON Schema with "type": "object"')
        try:
            validator_for(value, default=Draft202012Validator).check_schema(value)
        except SchemaError as exc:
            where = "/".join(str(part) for part in exc.absolute_path) or "its top level"
            raise ValueError(f"parameters is not a valid JSON Schema, at {where}: {exc.message}") from None
        except Exception as exc:  # e.g. a "$schema" that is not a string: jsonschema raises TypeError
            raise ValueError(f"parameters is not a valid JSON Schema: {type(exc).__name__}: {exc}") from None
        root = Resource.from_contents(value, default_specification=DRAFT202012)
        ref = _unresolvable_ref(root, Registry().resolver_with_root(root))
        if ref is not None:
            raise ValueError(
                f"parameters is not a valid JSON Schema: its $ref {ref!r} does not resolve within it"
            )
        return value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be an absolute http:// or https:// URL")
        return value

    @field_validator("headers")
    @classmethod
    def _expand_environment(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        environ: Mapping[str, str] = (info.context or {}).get("environ", {})

        def expand(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in environ:
                raise ValueError(f"header refers to ${{{name}}}, which is not set in the environment")
            return environ[name]

        return {key: _ENV_REFERENCE.sub(expand, text) for key, text in value.items()}


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
    tools: list[AgentTool] = Field(default_factory=list)
    tool_choice: Literal["auto", "none", "required"] = "auto"
    max_tool_rounds: int = Field(default=3, ge=1, le=10)
    """Legacy: tool rounds per turn; the model call after the last one may not ask for tools, so the turn
    always ends in words."""
    tool_wait_phrase: str = "One moment while I check that."
    """Realtime: said when a tool has not answered within ``tool_wait_seconds``, so the caller does not sit in
    silence while it works (pain point P15); empty to say nothing."""
    tool_wait_seconds: float = Field(default=1.5, ge=0.0)
    """0: never say the wait phrase."""
    silence: SilenceOptions = Field(default_factory=SilenceOptions)
    legacy: LegacyOptions = Field(default_factory=LegacyOptions)

    @model_validator(mode="after")
    def _unique_tool_names(self) -> AgentProfile:
        names = [tool.name for tool in self.tools]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise ValueError(f"tool names must be unique: {', '.join(duplicated)}")
        return self

    @classmethod
    def load(cls, path: Path, *, environ: Mapping[str, str] | None = None) -> AgentProfile:
        """Read and validate a profile file; a bad file fails start-up with pydantic's field errors."""
        with path.open("r", encoding="utf-8") as handle:
            data = yaml.safe_load(handle) or {}
        return cls.model_validate(data, context={"environ": os.environ if environ is None else environ})
