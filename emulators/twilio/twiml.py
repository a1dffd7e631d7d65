"""TwiML documents as the call simulator executes them: the voice verbs voice-router uses, parsed strictly.

Unknown verbs are kept (as :class:`Unsupported`) so the simulator can report them the way Twilio reports
error 12100/12200 rather than silently skipping instructions.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field


class TwimlError(ValueError):
    """The document is not TwiML Twilio would execute (Twilio error 12100: document parse failure)."""


@dataclass(frozen=True)
class SayVerb:
    text: str
    loop: int = 1


@dataclass(frozen=True)
class PlayVerb:
    """``url`` is optional: ``<Play digits="ww1234"/>`` plays DTMF tones instead (twilio.md 4.3)."""

    url: str | None
    loop: int = 1
    digits: str | None = None


@dataclass(frozen=True)
class PauseVerb:
    length_s: float = 1.0


@dataclass(frozen=True)
class GatherVerb:
    action: str | None
    method: str
    input: str
    timeout_s: float
    speech_timeout: str  # "auto" or seconds
    action_on_empty_result: bool
    barge_in: bool
    prompts: tuple[SayVerb | PlayVerb | PauseVerb, ...] = ()


@dataclass(frozen=True)
class RecordVerb:
    action: str | None
    method: str
    timeout_s: float
    max_length_s: float
    play_beep: bool


@dataclass(frozen=True)
class RedirectVerb:
    url: str
    method: str = "POST"


@dataclass(frozen=True)
class HangupVerb:
    pass


@dataclass(frozen=True)
class StreamVerb:
    url: str
    parameters: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    status_callback: str | None = None
    status_callback_method: str = "POST"


@dataclass(frozen=True)
class ConnectVerb:
    stream: StreamVerb
    action: str | None = None
    method: str = "POST"


@dataclass(frozen=True)
class Unsupported:
    tag: str


Verb = (
    SayVerb
    | PlayVerb
    | PauseVerb
    | GatherVerb
    | RecordVerb
    | RedirectVerb
    | HangupVerb
    | ConnectVerb
    | Unsupported
)


def _bool(value: str | None, default: bool) -> bool:
    if value is None:
        return default
    return value.strip().lower() == "true"


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError as exc:
        raise TwimlError(f"not an integer: {value!r}") from exc


def _float(value: str | None, default: float) -> float:
    try:
        return float(value) if value is not None else default
    except ValueError as exc:
        raise TwimlError(f"not a number: {value!r}") from exc


def _method(value: str | None) -> str:
    method = (value or "POST").upper()
    if method not in ("GET", "POST"):
        raise TwimlError(f"method must be GET or POST, got {value!r}")
    return method


PLAY_DIGITS = frozenset("0123456789*#wW")


def _simple(element: ET.Element) -> SayVerb | PlayVerb | PauseVerb | None:
    text = (element.text or "").strip()
    if element.tag == "Say":
        return SayVerb(text=text, loop=_int(element.get("loop"), 1))
    if element.tag == "Play":
        digits = element.get("digits")
        if digits is not None and (not digits or set(digits) - PLAY_DIGITS):
            raise TwimlError(f"<Play digits> must be made of 0-9, *, #, w and W, got {digits!r}")
        if not text and digits is None:
            raise TwimlError("<Play> needs a URL or digits")
        return PlayVerb(url=text or None, loop=_int(element.get("loop"), 1), digits=digits)
    if element.tag == "Pause":
        return PauseVerb(length_s=_float(element.get("length"), 1.0))
    return None


def parse_twiml(document: str | bytes) -> list[Verb]:
    """The verbs of a ``<Response>``, in order."""
    try:
        root = ET.fromstring(document)
    except ET.ParseError as exc:
        raise TwimlError(f"not well-formed XML: {exc}") from exc
    if root.tag != "Response":
        raise TwimlError(f"root element must be <Response>, got <{root.tag}>")
    verbs: list[Verb] = []
    for element in root:
        simple = _simple(element)
        if simple is not None:
            verbs.append(simple)
        elif element.tag == "Gather":
            prompts = tuple(p for p in (_simple(child) for child in element) if p is not None)
            timeout = _float(element.get("timeout"), 5.0)
            verbs.append(
                GatherVerb(
                    action=element.get("action"),
                    method=_method(element.get("method")),
                    input=element.get("input", "dtmf"),
                    timeout_s=timeout,
                    speech_timeout=element.get("speechTimeout", str(timeout)),
                    action_on_empty_result=_bool(element.get("actionOnEmptyResult"), False),
                    barge_in=_bool(element.get("bargeIn"), True),
                    prompts=prompts,
                )
            )
        elif element.tag == "Record":
            verbs.append(
                RecordVerb(
                    action=element.get("action"),
                    method=_method(element.get("method")),
                    timeout_s=_float(element.get("timeout"), 5.0),
                    max_length_s=_float(element.get("maxLength"), 3600.0),
                    play_beep=_bool(element.get("playBeep"), True),
                )
            )
        elif element.tag == "Redirect":
            url = (element.text or "").strip()
            if not url:
                raise TwimlError("<Redirect> needs a URL")
            verbs.append(RedirectVerb(url=url, method=_method(element.get("method"))))
        elif element.tag == "Hangup":
            verbs.append(HangupVerb())
        elif element.tag == "Connect":
            streams = [child for child in element if child.tag == "Stream"]
            if len(streams) != 1:
                raise TwimlError("<Connect> must hold exactly one <Stream>")
            stream = streams[0]
            url = stream.get("url") or ""
            if not url:
                raise TwimlError("<Stream> needs a url")
            if "?" in url:
                raise TwimlError("<Stream> url must not carry a query string (Twilio error 31920)")
            parameters = {
                p.get("name", ""): p.get("value", "")
                for p in stream
                if p.tag == "Parameter" and p.get("name")
            }
            verbs.append(
                ConnectVerb(
                    stream=StreamVerb(
                        url=url,
                        parameters=parameters,
                        name=stream.get("name"),
                        status_callback=stream.get("statusCallback"),
                        status_callback_method=_method(stream.get("statusCallbackMethod")),
                    ),
                    action=element.get("action"),
                    method=_method(element.get("method")),
                )
            )
        else:
            verbs.append(Unsupported(tag=element.tag))
    return verbs
