"""Just enough SSML to synthesize: which voice(s), what text is spoken, how long the pauses are."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

_BREAK_STRENGTH_MS = {"none": 0, "x-weak": 250, "weak": 500, "medium": 750, "strong": 1000, "x-strong": 1250}
_TIME = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s)\s*$")


class SsmlError(ValueError):
    """The document is not SSML the service would accept."""


@dataclass
class ParsedSsml:
    voices: list[str] = field(default_factory=list)
    text: str = ""
    pause_ms: int = 0
    language: str = ""


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def parse_ssml(document: str) -> ParsedSsml:
    try:
        root = ET.fromstring(document)
    except ET.ParseError as exc:
        raise SsmlError(f"SSML is not well-formed XML: {exc}") from exc
    if _local(root.tag) != "speak":
        raise SsmlError(f"SSML root element must be <speak>, got <{_local(root.tag)}>")
    parsed = ParsedSsml(language=root.get("{http://www.w3.org/XML/1998/namespace}lang", ""))
    pieces: list[str] = []
    voices = [element for element in root.iter() if _local(element.tag) == "voice"]
    if not voices:
        raise SsmlError("SSML must contain a <voice> element")
    for voice in voices:
        name = voice.get("name", "").strip()
        if not name:
            raise SsmlError("<voice> element without a name attribute")
        parsed.voices.append(name)
        for element in voice.iter():
            if _local(element.tag) == "break":
                parsed.pause_ms += _break_ms(element)
        pieces.append("".join(voice.itertext()))
    parsed.text = " ".join(" ".join(pieces).split())
    return parsed


def _break_ms(element: ET.Element) -> int:
    time = element.get("time")
    if time is not None:
        match = _TIME.match(time)
        if not match:
            raise SsmlError(f"invalid break time {time!r}")
        value = float(match.group(1))
        return int(value if match.group(2) == "ms" else value * 1000)
    return _BREAK_STRENGTH_MS.get(element.get("strength", "medium"), 750)
