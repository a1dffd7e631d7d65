"""The Voice Live session object: service defaults, ``session.update`` merge and enum/range validation.

Validation follows the 2025-10-01 reference (voice-live.md 1.4/1.5). Where sources disagree the emulator is
permissive (e.g. extra ``pcm16_*hz`` output formats seen in the SDK's live tests). Every rejection names the
offending field as ``session.<field>`` in ``param``, like the service's ``invalid_request_error``.
"""

from __future__ import annotations

import copy
from typing import Any

INPUT_FORMATS = ("pcm16", "g711_ulaw", "g711_alaw")
OUTPUT_FORMATS = (
    "pcm16",
    "pcm16_8000hz",
    "pcm16_16000hz",
    "pcm16_22050hz",
    "pcm16_24000hz",
    "pcm16_44100hz",
    "pcm16_48000hz",
    "pcm16-8000hz",
    "pcm16-16000hz",
    "g711_ulaw",
    "g711_alaw",
)
PCM16_INPUT_RATES = (8000, 16000, 24000, 44100, 48000)
MODALITIES = ("text", "audio", "animation", "avatar")
TURN_DETECTION_TYPES = (
    "server_vad",
    "semantic_vad",
    "azure_semantic_vad",
    "azure_semantic_vad_en",
    "azure_semantic_vad_multilingual",
)
VOICE_TYPES = ("openai", "azure-standard", "azure-custom", "azure-personal", "azure-realtime-native")
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
NOISE_REDUCTION_TYPES = ("azure_deep_noise_suppression", "near_field", "far_field")
ECHO_CANCELLATION_TYPES = ("server_echo_cancellation",)
TRANSCRIPTION_MODELS = (
    "whisper-1",
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
    "gpt-4o-transcribe-diarize",
    "azure-speech",
    "mai-transcribe",
    "mai-transcribe-1",
)
TOOL_CHOICES = ("auto", "none", "required")
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
EOU_MODELS = ("semantic_detection_v1", "semantic_detection_v1_en", "semantic_detection_v1_multilingual")
EOU_THRESHOLD_LEVELS = ("low", "medium", "high", "default")
TEMPERATURE_RANGE = (0.6, 1.2)
MAX_OUTPUT_TOKENS = 4096

SETTABLE_FIELDS = frozenset(
    {
        "model",
        "modalities",
        "animation",
        "voice",
        "instructions",
        "input_audio_sampling_rate",
        "input_audio_format",
        "output_audio_format",
        "turn_detection",
        "input_audio_noise_reduction",
        "input_audio_echo_cancellation",
        "avatar",
        "input_audio_transcription",
        "output_audio_timestamp_types",
        "tools",
        "tool_choice",
        "temperature",
        "max_response_output_tokens",
        "reasoning_effort",
        "parallel_tool_calls",
        "interim_response",
        "include",
        "metadata",
    }
)

_VAD_DEFAULTS: dict[str, Any] = {
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "create_response": True,
    "interrupt_response": True,
    "auto_truncate": False,
}


class InvalidRequest(Exception):
    """A client event the service would answer with ``error{type:"invalid_request_error"}``."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


DEFAULT_API_VERSION = "2025-10-01"
# voice-live.md 1.5: prefix_padding_ms defaults to 300, "From API 2026-04-10: 400 (server_vad) / 420 (azure_*)".
LONGER_PADDING_FROM = "2026-04-10"


def default_turn_detection(
    kind: str = "server_vad", api_version: str = DEFAULT_API_VERSION
) -> dict[str, Any]:
    """The service's defaults for a ``turn_detection`` of ``kind`` under ``api_version``."""
    td: dict[str, Any] = {"type": kind, **_VAD_DEFAULTS}
    if api_version[:10] >= LONGER_PADDING_FROM:
        if kind == "server_vad":
            td["prefix_padding_ms"] = 400
        elif kind.startswith("azure_"):
            td["prefix_padding_ms"] = 420
    if kind == "server_vad":
        td["speech_duration_ms"] = 200
    elif kind.startswith("azure_semantic_vad"):
        td["speech_duration_ms"] = 80
        td["remove_filler_words"] = False
    return td


def default_session(*, session_id: str, model: str, api_version: str = DEFAULT_API_VERSION) -> dict[str, Any]:
    """What ``session.created`` reports before any ``session.update``."""
    return {
        "id": session_id,
        "object": "realtime.session",
        "model": model,
        "modalities": ["text", "audio"],
        "instructions": "",
        "voice": {"type": "openai", "name": "alloy"},
        "input_audio_format": "pcm16",
        "output_audio_format": "pcm16",
        "input_audio_sampling_rate": 24000,
        "input_audio_noise_reduction": None,
        "input_audio_echo_cancellation": None,
        "input_audio_transcription": None,
        "turn_detection": default_turn_detection(api_version=api_version),
        "tools": [],
        "tool_choice": "auto",
        "temperature": 0.8,
        "max_response_output_tokens": "inf",
    }


def merge_session(
    current: dict[str, Any], update: Any, *, api_version: str = DEFAULT_API_VERSION
) -> dict[str, Any]:
    """Validate ``update`` (the ``session`` of a ``session.update``) and return the merged session."""
    if not isinstance(update, dict):
        raise InvalidRequest("invalid_type", "Invalid type for 'session': expected an object.", "session")
    merged = copy.deepcopy(current)
    for key, value in update.items():
        param = f"session.{key}"
        if key in ("id", "object"):
            continue  # read-only fields echoed back by some clients
        if key not in SETTABLE_FIELDS:
            raise InvalidRequest("unknown_parameter", f"Unknown parameter: '{param}'.", param)
        merged[key] = _validated(key, value, current, param, api_version)
    if merged["input_audio_format"] in ("g711_ulaw", "g711_alaw"):
        if "input_audio_sampling_rate" in update and update["input_audio_sampling_rate"] not in (None, 8000):
            raise InvalidRequest(
                "invalid_value",
                "Invalid value for 'session.input_audio_sampling_rate': G.711 input is sampled at 8000 Hz.",
                "session.input_audio_sampling_rate",
            )
        merged["input_audio_sampling_rate"] = 8000
    elif (
        "input_audio_format" in update
        and "input_audio_sampling_rate" not in update
        and current["input_audio_format"] != "pcm16"
    ):
        merged["input_audio_sampling_rate"] = 24000
    return merged


RESPONSE_OPTION_FIELDS = frozenset(
    {
        "modalities",
        "instructions",
        "voice",
        "output_audio_format",
        "tools",
        "tool_choice",
        "temperature",
        "max_response_output_tokens",
        "reasoning_effort",
    }
)


def validate_response_options(options: Any, current: dict[str, Any]) -> dict[str, Any]:
    """Check ``response.create``'s ``response`` with the ``session.update`` rules; returns the checked copy.

    Fields shared with the session are validated exactly as ``session.update`` would (so a bad value gets an
    ``error`` event naming ``response.<field>`` instead of crashing the response); other documented and SDK-only
    options (``conversation``, ``metadata``, ``input_items`` …) pass through unchecked.
    """
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise InvalidRequest("invalid_type", "Invalid type for 'response': expected an object.", "response")
    checked = dict(options)
    for key in RESPONSE_OPTION_FIELDS & options.keys():
        checked[key] = _validated(key, options[key], current, f"response.{key}")
    metadata = options.get("metadata")
    if metadata is not None:
        _object(metadata, "response.metadata")
    return checked


def _enum(value: Any, allowed: tuple[str, ...], param: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise InvalidRequest(
            "invalid_value",
            f"Invalid value: '{value}'. Supported values are: {', '.join(repr(a) for a in allowed)}.",
            param,
        )
    return value


def _number(value: Any, low: float, high: float, param: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest("invalid_type", f"Invalid type for '{param}': expected a number.", param)
    if value < low:
        raise InvalidRequest(
            "decimal_below_min_value", f"Invalid '{param}': {value} is below the minimum {low}.", param
        )
    if value > high:
        raise InvalidRequest(
            "decimal_above_max_value", f"Invalid '{param}': {value} is above the maximum {high}.", param
        )
    return float(value)


def _integer(value: Any, low: int, high: int, param: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest("invalid_type", f"Invalid type for '{param}': expected an integer.", param)
    if value < low:
        raise InvalidRequest(
            "integer_below_min_value", f"Invalid '{param}': {value} is below the minimum {low}.", param
        )
    if value > high:
        raise InvalidRequest(
            "integer_above_max_value", f"Invalid '{param}': {value} is above the maximum {high}.", param
        )
    return value


def _object(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest("invalid_type", f"Invalid type for '{param}': expected an object.", param)
    return value


def _bool(value: Any, param: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequest("invalid_type", f"Invalid type for '{param}': expected a boolean.", param)
    return value


def _validated(
    key: str, value: Any, current: dict[str, Any], param: str, api_version: str = DEFAULT_API_VERSION
) -> Any:
    """One settable field, checked; returns the value to store."""
    if key == "model":
        if value != current.get("model"):
            raise InvalidRequest(
                "invalid_value", "The model cannot be changed after the session is created.", param
            )
        return value
    if key == "modalities":
        if not isinstance(value, list) or not value:
            raise InvalidRequest(
                "invalid_type", f"Invalid type for '{param}': expected a non-empty array.", param
            )
        for index, item in enumerate(value):
            _enum(item, MODALITIES, f"{param}[{index}]")
        if "audio" in value and "text" not in value:
            raise InvalidRequest("invalid_value", "Invalid modalities: audio requires text as well.", param)
        return list(value)
    if key == "voice":
        return _voice(value, param)
    if key == "instructions":
        if not isinstance(value, str):
            raise InvalidRequest("invalid_type", f"Invalid type for '{param}': expected a string.", param)
        return value
    if key == "input_audio_format":
        return _enum(value, INPUT_FORMATS, param)
    if key == "output_audio_format":
        return _enum(value, OUTPUT_FORMATS, param)
    if key == "input_audio_sampling_rate":
        if value is None:
            return current["input_audio_sampling_rate"]
        if isinstance(value, bool) or value not in PCM16_INPUT_RATES:
            raise InvalidRequest(
                "invalid_value",
                f"Invalid value: '{value}'. Supported values are: {', '.join(map(str, PCM16_INPUT_RATES))}.",
                param,
            )
        return value
    if key == "turn_detection":
        return None if value is None else _turn_detection(value, param, api_version)
    if key == "input_audio_noise_reduction":
        if value is None:
            return None
        body = _object(value, param)
        _enum(body.get("type"), NOISE_REDUCTION_TYPES, f"{param}.type")
        return dict(body)
    if key == "input_audio_echo_cancellation":
        if value is None:
            return None
        body = _object(value, param)
        _enum(body.get("type", "server_echo_cancellation"), ECHO_CANCELLATION_TYPES, f"{param}.type")
        return {"type": "server_echo_cancellation", **body}
    if key == "input_audio_transcription":
        if value is None:
            return None
        body = _object(value, param)
        _enum(body.get("model"), TRANSCRIPTION_MODELS, f"{param}.model")
        return dict(body)
    if key == "temperature":
        return _number(value, *TEMPERATURE_RANGE, param)
    if key == "max_response_output_tokens":
        if value == "inf":
            return value
        return _integer(value, 1, MAX_OUTPUT_TOKENS, param)
    if key == "tool_choice":
        if isinstance(value, dict):
            if value.get("type") != "function" or not isinstance(value.get("name"), str):
                raise InvalidRequest(
                    "invalid_value", "tool_choice object must be {type:'function', name}.", param
                )
            return dict(value)
        return _enum(value, TOOL_CHOICES, param)
    if key == "tools":
        if not isinstance(value, list):
            raise InvalidRequest("invalid_type", f"Invalid type for '{param}': expected an array.", param)
        for index, tool in enumerate(value):
            body = _object(tool, f"{param}[{index}]")
            kind = _enum(body.get("type"), ("function", "mcp"), f"{param}[{index}].type")
            if kind == "function" and not isinstance(body.get("name"), str):
                raise InvalidRequest(
                    "missing_required_parameter",
                    "Missing required parameter: 'name'.",
                    f"{param}[{index}].name",
                )
        return list(value)
    if key == "reasoning_effort":
        return _enum(value, REASONING_EFFORTS, param)
    if key == "parallel_tool_calls":
        return _bool(value, param)
    return value


def _voice(value: Any, param: str) -> Any:
    if isinstance(value, str):
        return _enum(value, OPENAI_VOICES, param)
    body = _object(value, param)
    kind = _enum(body.get("type"), VOICE_TYPES, f"{param}.type")
    name = body.get("name")
    if kind == "openai":
        _enum(name, OPENAI_VOICES, f"{param}.name")
    elif kind != "azure-realtime-native" and (not isinstance(name, str) or not name.strip()):
        raise InvalidRequest("invalid_value", "Voice name must be a non-empty string.", f"{param}.name")
    if kind == "azure-custom" and (not isinstance(body.get("endpoint_id"), str) or not body["endpoint_id"]):
        raise InvalidRequest(
            "missing_required_parameter", "Missing required parameter: 'endpoint_id'.", f"{param}.endpoint_id"
        )
    if "temperature" in body and body["temperature"] is not None:
        _number(body["temperature"], 0.0, 1.0, f"{param}.temperature")
    return dict(body)


def _turn_detection(value: Any, param: str, api_version: str) -> dict[str, Any]:
    body = _object(value, param)
    kind = _enum(body.get("type"), TURN_DETECTION_TYPES, f"{param}.type")
    merged = default_turn_detection(kind, api_version)
    for key, item in body.items():
        sub = f"{param}.{key}"
        if key == "threshold":
            merged[key] = _number(item, 0.0, 1.0, sub)
        elif key in ("prefix_padding_ms", "silence_duration_ms", "speech_duration_ms"):
            merged[key] = _integer(item, 0, 10_000, sub)
        elif key in ("create_response", "interrupt_response", "auto_truncate", "remove_filler_words"):
            merged[key] = _bool(item, sub)
        elif key == "end_of_utterance_detection" and item is not None:
            eou = _object(item, sub)
            _enum(eou.get("model"), EOU_MODELS, f"{sub}.model")
            if "threshold_level" in eou:
                _enum(eou["threshold_level"], EOU_THRESHOLD_LEVELS, f"{sub}.threshold_level")
            if "timeout_ms" in eou:
                _integer(eou["timeout_ms"], 0, 60_000, f"{sub}.timeout_ms")
            merged[key] = dict(eou)
        elif key == "eagerness":
            merged[key] = _enum(item, ("auto", "low", "medium", "high"), sub)
        else:
            merged[key] = item
    return merged


def input_sample_rate(session: dict[str, Any]) -> int:
    """Sample rate of ``input_audio_buffer.append`` audio for ``session``."""
    if session["input_audio_format"] in ("g711_ulaw", "g711_alaw"):
        return 8000
    rate: int = session.get("input_audio_sampling_rate") or 24000
    return rate


def output_sample_rate(output_format: str) -> int:
    """Sample rate of ``response.audio.delta`` audio in ``output_format``."""
    if output_format in ("g711_ulaw", "g711_alaw"):
        return 8000
    if output_format == "pcm16":
        return 24000
    return int(output_format.removeprefix("pcm16").strip("_-").removesuffix("hz"))
