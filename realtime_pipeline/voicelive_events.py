"""Azure AI Voice Live event shapes (API 2025-10-01, OpenAI-beta naming): the only module that knows them.

Server events we act on are parsed into small typed events; every other well-formed event becomes
:class:`OtherEvent` (logged at DEBUG, ignored). A frame that is not a JSON object with a string ``type``, or an
audio delta without its audio or its item, raises :class:`VoiceLiveEventError`. Client events are built here too; ``input_audio_buffer.append`` is built by
string concatenation because it is sent 50 times a second per call and base64 needs no escaping.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from router.tool_calls import ToolCall


class VoiceLiveEventError(ValueError):
    """A server frame that is not a Voice Live event at all."""


@dataclass(frozen=True, slots=True)
class SessionCreated:
    session: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SessionUpdated:
    session: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    item_id: str
    audio_start_ms: int


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class ResponseCreated:
    response_id: str


@dataclass(frozen=True, slots=True)
class AudioDelta:
    response_id: str
    item_id: str
    delta: str  # base64 audio in the session's output format


@dataclass(frozen=True, slots=True)
class AudioDone:
    response_id: str
    item_id: str


@dataclass(frozen=True, slots=True)
class AssistantTranscriptDone:
    response_id: str
    item_id: str
    transcript: str


@dataclass(frozen=True, slots=True)
class UserTranscriptDone:
    item_id: str
    transcript: str


@dataclass(frozen=True, slots=True)
class ResponseDone:
    response_id: str
    status: str
    usage: dict[str, int] = field(default_factory=dict)
    function_calls: tuple[ToolCall, ...] = ()
    """The functions a completed response asked for (its ``output`` items of type ``function_call``)."""


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    type: str
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class OtherEvent:
    type: str


VoiceLiveEvent = (
    SessionCreated
    | SessionUpdated
    | SpeechStarted
    | SpeechStopped
    | ResponseCreated
    | AudioDelta
    | AudioDone
    | AssistantTranscriptDone
    | UserTranscriptDone
    | ResponseDone
    | ErrorEvent
    | OtherEvent
)

# Error codes after which the session cannot be used any more (the socket is closing or useless).
SESSION_EXPIRED_CODE = "session_expired"
_FATAL_ERROR_TYPES = frozenset({"server_error", "authentication_error", "internal_error"})
_FATAL_ERROR_CODES = frozenset({SESSION_EXPIRED_CODE, "internal_server_error", "service_unavailable"})


def is_fatal(error: ErrorEvent) -> bool:
    """Most Voice Live ``error`` events are recoverable (the session stays open); these are not."""
    return error.type in _FATAL_ERROR_TYPES or error.code in _FATAL_ERROR_CODES


def _s(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    return value if isinstance(value, str) else ""


def _i(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _usage(response: dict[str, Any]) -> dict[str, int]:
    usage = response.get("usage")
    if not isinstance(usage, dict):
        return {}
    out = {k: int(v) for k, v in usage.items() if isinstance(v, int) and not isinstance(v, bool)}
    for detail_key, prefix in (("input_token_details", "input_"), ("output_token_details", "output_")):
        details = usage.get(detail_key)
        if isinstance(details, dict):
            for k, v in details.items():
                if isinstance(v, int) and not isinstance(v, bool):
                    out[prefix + k] = v
            # Which of the cached input tokens were text and which audio (the cost tells them apart).
            cached = details.get("cached_tokens_details")
            if isinstance(cached, dict):
                for k, v in cached.items():
                    if isinstance(v, int) and not isinstance(v, bool):
                        out[f"{prefix}cached_{k}"] = v
    return out


def _function_calls(response: dict[str, Any]) -> tuple[ToolCall, ...]:
    """A completed response's function calls, read from ``response.output`` (each item in full: name,
    call_id and arguments), so the bridge acts once per response rather than per streamed event. An item
    without a string call_id and name cannot be answered and is skipped; the rest of the event still counts."""
    output = response.get("output")
    if response.get("status") != "completed" or not isinstance(output, list):
        return ()
    calls = []
    for item in output:
        if not isinstance(item, dict) or item.get("type") != "function_call":
            continue
        call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments")
        if type(call_id) is str and call_id and type(name) is str and name:
            if arguments is None:
                arguments = ""
            elif type(arguments) is not str:  # not the documented JSON string: the runner judges its JSON
                arguments = orjson.dumps(arguments).decode()
            calls.append(ToolCall(call_id, name, arguments))
    return tuple(calls)


def parse_event(frame: str | bytes) -> VoiceLiveEvent:
    """Parse one server frame. Unknown types become :class:`OtherEvent`."""
    try:
        data = orjson.loads(frame)
    except orjson.JSONDecodeError:
        raise VoiceLiveEventError("not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise VoiceLiveEventError("no event type")
    kind: str = data["type"]
    if kind == "response.audio.delta":
        delta, item_id = data.get("delta"), data.get("item_id")
        if type(delta) is not str or type(item_id) is not str or not item_id:
            # No audio to play, or audio no truncate could name: logged and ignored, like any malformed event.
            raise VoiceLiveEventError("response.audio.delta without a string delta and item_id")
        return AudioDelta(_s(data, "response_id"), item_id, delta)
    if kind == "input_audio_buffer.speech_started":
        return SpeechStarted(_s(data, "item_id"), _i(data, "audio_start_ms"))
    if kind == "input_audio_buffer.speech_stopped":
        return SpeechStopped(_s(data, "item_id"), _i(data, "audio_end_ms"))
    if kind == "response.created":
        response = data.get("response")
        return ResponseCreated(_s(response, "id") if isinstance(response, dict) else "")
    if kind == "response.audio.done":
        return AudioDone(_s(data, "response_id"), _s(data, "item_id"))
    if kind == "response.audio_transcript.done":
        return AssistantTranscriptDone(_s(data, "response_id"), _s(data, "item_id"), _s(data, "transcript"))
    if kind == "conversation.item.input_audio_transcription.completed":
        return UserTranscriptDone(_s(data, "item_id"), _s(data, "transcript"))
    if kind == "response.done":
        response = data.get("response")
        if not isinstance(response, dict):
            response = {}
        return ResponseDone(
            _s(response, "id"), _s(response, "status"), _usage(response), _function_calls(response)
        )
    if kind == "error":
        error = data.get("error")
        if not isinstance(error, dict):
            error = {}
        return ErrorEvent(_s(error, "type"), _s(error, "code"), _s(error, "message"))
    if kind == "session.updated":
        session = data.get("session")
        return SessionUpdated(session if isinstance(session, dict) else {})
    if kind == "session.created":
        session = data.get("session")
        return SessionCreated(session if isinstance(session, dict) else {})
    return OtherEvent(kind)


# Client events -----------------------------------------------------------------------------------------

_APPEND_PREFIX = '{"type":"input_audio_buffer.append","audio":"'
_APPEND_SUFFIX = '"}'


def append_audio(audio_b64: str) -> str:
    """``input_audio_buffer.append`` for a base64 payload (forwarded untouched)."""
    return _APPEND_PREFIX + audio_b64 + _APPEND_SUFFIX


def _dump(event: dict[str, Any]) -> str:
    return orjson.dumps(event).decode()


def session_update(session: dict[str, Any]) -> str:
    return _dump({"type": "session.update", "session": session})


def response_create(instructions: str | None = None, *, tool_choice: str | None = None) -> str:
    """``response.create``; ``tool_choice`` overrides the session's for this response only."""
    options: dict[str, Any] = {}
    if instructions is not None:
        options["instructions"] = instructions
    if tool_choice is not None:
        options["tool_choice"] = tool_choice
    if not options:
        return _dump({"type": "response.create"})
    return _dump({"type": "response.create", "response": options})


def function_call_output(call_id: str, output: str) -> str:
    """A tool's answer, added to the conversation for the response that follows."""
    return _dump(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": call_id, "output": output},
        }
    )


def truncate_item(item_id: str, audio_end_ms: int) -> str:
    return _dump(
        {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": audio_end_ms,
        }
    )


def delete_item(item_id: str) -> str:
    return _dump({"type": "conversation.item.delete", "item_id": item_id})


def message_items(entries: Iterable[tuple[str, str] | tuple[ToolCall, str]]) -> list[str]:
    """``conversation.item.create`` events that replay a conversation into a new session: a (role, text)
    message, or an answered function call as its ``function_call`` item followed by its output."""
    events = []
    for first, second in entries:
        if isinstance(first, ToolCall):
            call = {"type": "function_call", "name": first.name, "call_id": first.call_id}
            events.append(
                _dump({"type": "conversation.item.create", "item": {**call, "arguments": first.arguments}})
            )
            events.append(function_call_output(first.call_id, second))
            continue
        content_type = "input_text" if first == "user" else "text"
        events.append(
            _dump(
                {
                    "type": "conversation.item.create",
                    "item": {
                        "type": "message",
                        "role": first,
                        "content": [{"type": content_type, "text": second}],
                    },
                }
            )
        )
    return events
