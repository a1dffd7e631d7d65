"""USP, the Speech SDK's WebSocket message framing (the only module that knows it).

* Text frame: ``Name:value\\r\\n`` header lines, a blank line, then the body (JSON or SSML).
* Binary frame: a big-endian uint16 header length, that many bytes of ASCII header lines (each ending in
  ``\\r\\n``, no blank line), then the payload (audio).

Every server message carries the ``X-RequestId`` of the request it answers; the SDK drops the others.
Sources: cognitive-services-speech-sdk-js ``WebsocketMessageFormatter.ts``; edge-tts ``communicate.py``.
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass, field

JSON = "application/json; charset=utf-8"
_LENGTH = struct.Struct(">H")


class UspFrameError(ValueError):
    """A frame that is not valid USP."""


@dataclass
class UspMessage:
    """One USP message; ``headers`` keys are matched case-insensitively through :meth:`header`."""

    headers: dict[str, str]
    body: str | bytes
    _lower: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._lower = {name.lower(): value for name, value in self.headers.items()}

    def header(self, name: str, default: str = "") -> str:
        return self._lower.get(name.lower(), default)

    @property
    def path(self) -> str:
        return self.header("Path").lower()

    @property
    def request_id(self) -> str:
        return self.header("X-RequestId")


def _parse_header_lines(block: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.split("\r\n"):
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise UspFrameError(f"malformed USP header line {line[:80]!r}")
        headers[name.strip()] = value.strip()
    return headers


def parse_text(frame: str) -> UspMessage:
    head, sep, body = frame.partition("\r\n\r\n")
    if not sep:
        raise UspFrameError("USP text frame without the blank line after its headers")
    return UspMessage(_parse_header_lines(head), body)


def parse_binary(frame: bytes) -> UspMessage:
    if len(frame) < 2:
        raise UspFrameError("USP binary frame shorter than its length prefix")
    (length,) = _LENGTH.unpack_from(frame)
    if 2 + length > len(frame):
        raise UspFrameError(f"USP binary header length {length} exceeds the frame ({len(frame)} bytes)")
    try:
        head = frame[2 : 2 + length].decode("ascii")
    except UnicodeDecodeError as exc:
        raise UspFrameError("USP binary header is not ASCII") from exc
    return UspMessage(_parse_header_lines(head), frame[2 + length :])


def timestamp() -> str:
    now = dt.datetime.now(dt.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def text_frame(path: str, request_id: str, body: str, *, content_type: str = JSON) -> str:
    return (
        f"X-RequestId:{request_id}\r\nContent-Type:{content_type}\r\nPath:{path}\r\n"
        f"X-Timestamp:{timestamp()}\r\n\r\n{body}"
    )


def binary_frame(path: str, request_id: str, payload: bytes, *, extra: dict[str, str] | None = None) -> bytes:
    lines = [f"X-RequestId:{request_id}"]
    lines.extend(f"{name}:{value}" for name, value in (extra or {}).items())
    lines.append(f"Path:{path}")
    lines.append(f"X-Timestamp:{timestamp()}")
    head = ("\r\n".join(lines) + "\r\n").encode("ascii")
    return _LENGTH.pack(len(head)) + head + payload


def audio_frame(request_id: str, stream_id: str, payload: bytes, content_type: str = "audio/x-wav") -> bytes:
    return binary_frame(
        "audio", request_id, payload, extra={"Content-Type": content_type, "X-StreamId": stream_id}
    )
