"""Twilio Media Streams wire format: the only module that knows it.

Inbound frames are parsed into small typed events; anything malformed raises :class:`MediaFrameError` with a
short machine-readable ``reason`` (the bridge logs, counts and drops it). Outbound we only ever send
``media``, ``mark`` and ``clear``; a :class:`TwilioFrameWriter` precomputes the per-stream JSON prefix so a
media frame is one string concatenation of the base64 payload (which never needs JSON escaping).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from realtime_pipeline.b64 import decode_strict

MAX_FRAME_BYTES = 64 * 1024
DTMF_DIGITS = "0123456789*#"  # what a keypad sends: Twilio's `dtmf.digit`


class MediaFrameError(ValueError):
    """A frame we cannot use; ``reason`` is a short label for logs and metrics."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str


@dataclass(frozen=True, slots=True)
class Start:
    stream_sid: str
    call_sid: str
    account_sid: str
    custom_parameters: dict[str, str]
    encoding: str
    sample_rate: int


# Media and Mark arrive 50 times a second per call: not frozen, because a frozen dataclass's __init__ sets
# each field through object.__setattr__ (1.1 µs per Media instead of 0.3).
@dataclass(slots=True)
class Media:
    stream_sid: str
    payload: str  # base64 μ-law, exactly as Twilio sent it
    audio: bytes  # the decoded payload (validated); empty list of samples is allowed
    timestamp_ms: int


@dataclass(slots=True)
class Mark:
    stream_sid: str
    name: str


@dataclass(frozen=True, slots=True)
class Dtmf:
    stream_sid: str
    digit: str


@dataclass(frozen=True, slots=True)
class Stop:
    stream_sid: str
    call_sid: str


TwilioEvent = Connected | Start | Media | Mark | Dtmf | Stop


def _str(value: Any, reason: str) -> str:
    if not isinstance(value, str):
        raise MediaFrameError(reason)
    return value


def _object(value: Any, reason: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MediaFrameError(reason)
    return value


def parse_frame(frame: str | bytes) -> TwilioEvent:
    """Parse one text frame from Twilio. Raises :class:`MediaFrameError` for anything unusable."""
    size = len(frame)
    # A str counts characters: one can take up to 4 bytes on the wire, so encode only the long ones.
    if size > MAX_FRAME_BYTES // 4 and isinstance(frame, str):
        size = len(frame.encode("utf-8", "surrogatepass"))
    if size > MAX_FRAME_BYTES:
        raise MediaFrameError("frame_too_large", f"{size} bytes")
    try:
        data = orjson.loads(frame)
    except orjson.JSONDecodeError:
        raise MediaFrameError("not_json") from None
    if not isinstance(data, dict):
        raise MediaFrameError("not_object")
    event = data.get("event")
    if event == "media":
        media = _object(data.get("media"), "bad_media")
        payload = _str(media.get("payload"), "bad_media")
        try:
            audio = decode_strict(payload)
        except ValueError:
            raise MediaFrameError("bad_base64") from None
        timestamp = media.get("timestamp", "0")
        try:
            timestamp_ms = int(timestamp)
        except (TypeError, ValueError):
            timestamp_ms = 0
        return Media(_str(data.get("streamSid"), "bad_media"), payload, audio, timestamp_ms)
    if event == "mark":
        mark = _object(data.get("mark"), "bad_mark")
        return Mark(_str(data.get("streamSid"), "bad_mark"), _str(mark.get("name"), "bad_mark"))
    if event == "start":
        start = _object(data.get("start"), "bad_start")
        params = start.get("customParameters") or {}
        if not isinstance(params, dict):
            raise MediaFrameError("bad_start", "customParameters")
        media_format = start.get("mediaFormat") or {}
        if not isinstance(media_format, dict):
            raise MediaFrameError("bad_start", "mediaFormat")
        try:
            sample_rate = int(media_format.get("sampleRate", 8000) or 8000)
        except (TypeError, ValueError):
            raise MediaFrameError("bad_start", "sampleRate") from None
        stream_sid = start.get("streamSid", data.get("streamSid"))
        return Start(
            stream_sid=_str(stream_sid, "bad_start"),
            call_sid=_str(start.get("callSid"), "bad_start"),
            account_sid=str(start.get("accountSid", "")),
            custom_parameters={str(k): str(v) for k, v in params.items()},
            encoding=str(media_format.get("encoding", "audio/x-mulaw")),
            sample_rate=sample_rate,
        )
    if event == "connected":
        return Connected(str(data.get("protocol", "")))
    if event == "dtmf":
        dtmf = _object(data.get("dtmf"), "bad_dtmf")
        digit = _str(dtmf.get("digit"), "bad_dtmf")
        if len(digit) != 1 or digit not in DTMF_DIGITS:
            raise MediaFrameError("bad_dtmf", "digit")
        return Dtmf(_str(data.get("streamSid"), "bad_dtmf"), digit)
    if event == "stop":
        stop = data.get("stop") or {}
        call_sid = stop.get("callSid", "") if isinstance(stop, dict) else ""
        return Stop(str(data.get("streamSid", "")), str(call_sid))
    raise MediaFrameError("unknown_event", str(event)[:40])


class TwilioFrameWriter:
    """Serialises the three messages we may send on one stream (media, mark, clear)."""

    __slots__ = ("_clear", "_mark_prefix", "_media_prefix", "stream_sid")

    _MEDIA_SUFFIX = '"}}'

    def __init__(self, stream_sid: str) -> None:
        self.stream_sid = stream_sid
        sid = orjson.dumps(stream_sid).decode()
        self._media_prefix = '{"event":"media","streamSid":' + sid + ',"media":{"payload":"'
        self._mark_prefix = '{"event":"mark","streamSid":' + sid + ',"mark":{"name":'
        self._clear = '{"event":"clear","streamSid":' + sid + "}"

    def media(self, payload_b64: str) -> str:
        """A media message; ``payload_b64`` must be base64 (its alphabet needs no JSON escaping)."""
        return self._media_prefix + payload_b64 + self._MEDIA_SUFFIX

    def mark(self, name: str) -> str:
        return self._mark_prefix + orjson.dumps(name).decode() + "}}"

    def clear(self) -> str:
        return self._clear
