"""Property-based tests of the two wire-format modules and of the bridge's handling of what they return.

The rule they guard: a hostile or broken frame from either side (non-JSON, wrong types in any field, NaN or
huge numbers, surrogate escapes, duplicate keys, bad base64, another stream's events) is dropped and logged,
never an exception, and the call goes on: the next valid caller frame still reaches Voice Live, the next valid
audio delta still reaches Twilio, and no bogus mark echo is taken for audio the caller heard.

Runs are derandomised with no example database, so CI sees the same examples every time.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import json
import string
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realtime_pipeline.playback import PlaybackTracker
from realtime_pipeline.twilio_media import (
    Connected,
    Dtmf,
    Mark,
    Media,
    MediaFrameError,
    Start,
    Stop,
    TwilioEvent,
    parse_frame,
)
from realtime_pipeline.voicelive_events import (
    AssistantTranscriptDone,
    AudioDelta,
    AudioDone,
    ErrorEvent,
    OtherEvent,
    ResponseCreated,
    ResponseDone,
    SessionCreated,
    SessionUpdated,
    SpeechStarted,
    SpeechStopped,
    UserTranscriptDone,
    VoiceLiveEvent,
    VoiceLiveEventError,
    is_fatal,
    parse_event,
)
from tests.realtime.bridge_fakes import STREAM_SID, audio_delta, make_bridge

FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
B64_ALPHABET = frozenset(string.ascii_letters + string.digits + "+/=")
TWILIO_REASONS = frozenset(
    {
        "frame_too_large",
        "not_json",
        "not_object",
        "bad_media",
        "bad_base64",
        "bad_mark",
        "bad_start",
        "bad_dtmf",
        "unknown_event",
    }
)
OTHER_SID = "MZ" + "9" * 32
GOOD_AUDIO = base64.b64encode(bytes(range(100, 260 - 100))).decode()

# Values of every JSON type and then some: non-ASCII, numeric-looking and near-base64 text, ints past 64 bits.
_SPECIAL_TEXT = st.sampled_from(
    [
        "",
        " ",
        "0",
        "-1",
        "8000",
        "1e3",
        "NaN",
        "AAAA",
        "AA==",
        "AAAA====",
        "A===",
        "@@@",
        "٣",
        "MZ",
        STREAM_SID,
    ]
)
_SURROGATES = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    _SPECIAL_TEXT,
)
# Values orjson reads as a float or not at all: ints past 64 bits (a float, up to about 1e308), NaN/Infinity
# literals (json.dumps writes them), lone surrogates (escaped as "\ud800" with ensure_ascii, raw otherwise).
# Used for one field in ten, so that most mutated frames still get past JSON decoding to the field checks.
POISON = st.one_of(
    st.sampled_from([float("nan"), float("inf"), -float("inf")]),
    st.integers(min_value=10**19, max_value=10**400),
    _SURROGATES,
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
NEAR_BASE64 = st.text(st.sampled_from('ABCDab01+/=-_ \n!é\\"'), max_size=12)


def _dumps(value: Any, ascii_only: bool) -> str:
    return json.dumps(value, ensure_ascii=ascii_only)


@st.composite
def _rendered(draw: st.DrawFn, message: dict[str, Any]) -> str | bytes:
    """``message`` as a frame: stdlib JSON (NaN literals, escaped or raw surrogates), sometimes with a top-level
    key repeated (orjson keeps the last), sometimes as bytes (not always valid UTF-8)."""
    ascii_only = draw(st.integers(0, 3)) > 0
    pairs = list(message.items())
    if pairs and draw(st.integers(0, 3)) == 0:
        key = draw(st.sampled_from([k for k, _ in pairs]))
        pairs.insert(draw(st.integers(0, len(pairs))), (key, draw(JSON_VALUES)))
    text = "{" + ",".join(f"{_dumps(k, True)}:{_dumps(v, ascii_only)}" for k, v in pairs) + "}"
    if draw(st.integers(0, 3)) == 0:
        return text.encode("utf-8", "surrogatepass")
    return text


def _twilio_templates(stream_sid: str) -> list[dict[str, Any]]:
    return [
        {
            "event": "media",
            "sequenceNumber": "3",
            "streamSid": stream_sid,
            "media": {"track": "inbound", "chunk": "1", "timestamp": "5", "payload": GOOD_AUDIO},
        },
        {"event": "mark", "sequenceNumber": "4", "streamSid": stream_sid, "mark": {"name": "a1:1"}},
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": stream_sid,
            "start": {
                "accountSid": "AC1",
                "streamSid": stream_sid,
                "callSid": "CA1",
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": {"token": "t"},
            },
        },
        {
            "event": "dtmf",
            "streamSid": stream_sid,
            "sequenceNumber": "5",
            "dtmf": {"track": "x", "digit": "1"},
        },
        {"event": "stop", "sequenceNumber": "5", "streamSid": stream_sid, "stop": {"callSid": "CA1"}},
        {"event": "connected", "protocol": "Call", "version": "1.0.0"},
    ]


def _paths(value: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    if isinstance(value, dict):
        for key, inner in value.items():
            out.append((*prefix, key))
            out.extend(_paths(inner, (*prefix, key)))
    return out


def _set(
    draw: st.DrawFn, message: dict[str, Any], path: tuple[str, ...], values: st.SearchStrategy[Any]
) -> None:
    """Replace the field at ``path`` by a value of the wrong type (or a targeted bad one), or delete it."""
    parent = message
    for key in path[:-1]:
        parent = parent[key]
    action = draw(st.integers(0, 9))
    if action == 0:
        del parent[path[-1]]
    elif action == 1:
        parent[path[-1]] = draw(POISON)
    else:
        parent[path[-1]] = draw(values | JSON_VALUES)


@st.composite
def _mutated(
    draw: st.DrawFn,
    template: dict[str, Any],
    field_values: dict[str, st.SearchStrategy[Any]],
    first: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """``template`` with field ``first`` (else a random one) mutated, and up to two more random fields."""
    message = copy.deepcopy(template)
    if first is not None:
        _set(draw, message, first, field_values.get(first[-1], JSON_VALUES))
    for _ in range(draw(st.integers(0 if first else 1, 2 if first else 3))):
        paths = _paths(message)[1:]  # not the event's type: the junk frames vary that
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        _set(draw, message, path, field_values.get(path[-1], JSON_VALUES))
    return message


def _respelled(prefix: str) -> Callable[[str], str]:
    """Another spelling of the same sequence number (which int() reads back as that number)."""

    def respell(name: str) -> str:
        item_id, _, seq = name.rpartition(":")
        return f"{item_id}:{prefix}{seq}"

    return respell


_NAME_VARIANTS: list[Callable[[str], str]] = [
    lambda n: n,
    _respelled("0"),
    _respelled("+"),
    _respelled(" "),
    _respelled("0_"),
    lambda n: n + " ",
    lambda n: n + "\n",
    lambda n: n.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")),
    lambda n: n.rpartition(":")[0],
]


TWILIO_FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "payload": NEAR_BASE64,
    "timestamp": SCALARS,
    "chunk": SCALARS,
    "sequenceNumber": SCALARS,
    "name": st.sampled_from([respell("a1:1") for respell in _NAME_VARIANTS]),  # the bridge's first mark
    "sampleRate": SCALARS,
    "customParameters": JSON_VALUES,
    "streamSid": st.sampled_from([STREAM_SID, OTHER_SID, ""]) | SCALARS,
}


def _junk_frames(type_key: str) -> st.SearchStrategy[str | bytes]:
    """Anything at all: bytes, text, and JSON objects whose type is any JSON value."""
    return st.one_of(
        st.binary(max_size=64), st.text(max_size=64), JSON_VALUES.flatmap(lambda v: _rendered({type_key: v}))
    )


def _near_valid_frames(
    templates: list[dict[str, Any]], field_values: dict[str, st.SearchStrategy[Any]]
) -> st.SearchStrategy[str | bytes]:
    """Real events with mutated fields: the inputs that get furthest into the parsers."""
    mutated = st.sampled_from(templates).flatmap(lambda template: _mutated(template, field_values))
    return mutated.flatmap(_rendered)


def twilio_frames() -> st.SearchStrategy[str | bytes]:
    rendered = _near_valid_frames(_twilio_templates(STREAM_SID), TWILIO_FIELD_VALUES)
    return st.integers(0, 3).flatmap(lambda pick: _junk_frames("event") if pick == 0 else rendered)


VL_TEMPLATES: list[dict[str, Any]] = [
    {"type": "response.audio.delta", "response_id": "r1", "item_id": "i1", "delta": GOOD_AUDIO},
    {"type": "input_audio_buffer.speech_started", "item_id": "u1", "audio_start_ms": 120},
    {"type": "input_audio_buffer.speech_stopped", "item_id": "u1", "audio_end_ms": 900},
    {"type": "response.created", "response": {"id": "r1", "status": "in_progress"}},
    {"type": "response.audio.done", "response_id": "r1", "item_id": "i1"},
    {"type": "response.audio_transcript.done", "response_id": "r1", "item_id": "i1", "transcript": "Hi"},
    {"type": "conversation.item.input_audio_transcription.completed", "item_id": "u1", "transcript": "Hi"},
    {"type": "conversation.item.created", "item": {"id": "i1", "type": "message"}},
    {"type": "conversation.item.truncated", "item_id": "i1", "content_index": 0, "audio_end_ms": 20},
    {
        "type": "response.done",
        "response": {
            "id": "r1",
            "status": "completed",
            "usage": {
                "total_tokens": 3,
                "input_token_details": {"audio_tokens": 1},
                "output_token_details": {"audio_tokens": 2},
            },
        },
    },
    {"type": "error", "error": {"type": "invalid_request_error", "code": "bad", "message": "no"}},
    {"type": "session.updated", "session": {"voice": "x"}},
]
VL_FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "delta": NEAR_BASE64,
    "audio_start_ms": SCALARS,
    "audio_end_ms": SCALARS,
    "usage": JSON_VALUES,
    "item_id": st.sampled_from(["", "i1", "u1", "i1:1"]) | SCALARS,
}


def voicelive_frames() -> st.SearchStrategy[str | bytes]:
    rendered = _near_valid_frames(VL_TEMPLATES, VL_FIELD_VALUES)
    return st.integers(0, 3).flatmap(lambda pick: _junk_frames("type") if pick == 0 else rendered)


def _strict_b64(text: str) -> bytes:
    """Canonical padded base64 only (what an encoder writes): the only form either side may be forwarded."""
    assert len(text) % 4 == 0 and not text.endswith("==="), text
    return binascii.a2b_base64(text, strict_mode=True)


def _check_twilio(frame: str | bytes) -> TwilioEvent | None:
    """parse_frame's contract: a typed event with fields of the declared types, or MediaFrameError."""
    try:
        event = parse_frame(frame)
    except MediaFrameError as exc:
        assert exc.reason in TWILIO_REASONS
        return None
    if isinstance(event, Media):
        assert isinstance(event.stream_sid, str)
        # The payload is forwarded by concatenation into JSON: only the base64 alphabet may pass.
        assert set(event.payload) <= B64_ALPHABET
        assert event.audio == _strict_b64(event.payload)
        assert type(event.timestamp_ms) is int
    elif isinstance(event, Mark):
        assert isinstance(event.stream_sid, str) and isinstance(event.name, str)
    elif isinstance(event, Start):
        assert all(isinstance(v, str) for v in (event.stream_sid, event.call_sid, event.account_sid))
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in event.custom_parameters.items())
        assert isinstance(event.encoding, str) and type(event.sample_rate) is int
    elif isinstance(event, Dtmf):
        assert isinstance(event.stream_sid, str) and len(event.digit) == 1 and event.digit in "0123456789*#"
    elif isinstance(event, Stop):
        assert isinstance(event.stream_sid, str) and isinstance(event.call_sid, str)
    else:
        assert isinstance(event, Connected) and isinstance(event.protocol, str)
    return event


def _check_voicelive(frame: str | bytes) -> VoiceLiveEvent | None:
    """parse_event's contract: a typed event with fields of the declared types, or VoiceLiveEventError."""
    try:
        event = parse_event(frame)
    except VoiceLiveEventError:
        return None
    strings: tuple[Any, ...]
    if isinstance(event, AudioDelta):
        strings = (event.response_id, event.item_id, event.delta)
        assert event.item_id, "audio no truncate could name"
    elif isinstance(event, SpeechStarted):
        strings = (event.item_id,)
        assert type(event.audio_start_ms) is int
    elif isinstance(event, SpeechStopped):
        strings = (event.item_id,)
        assert type(event.audio_end_ms) is int
    elif isinstance(event, ResponseCreated):
        strings = (event.response_id,)
    elif isinstance(event, AudioDone):
        strings = (event.response_id, event.item_id)
    elif isinstance(event, AssistantTranscriptDone):
        strings = (event.response_id, event.item_id, event.transcript)
    elif isinstance(event, UserTranscriptDone):
        strings = (event.item_id, event.transcript)
    elif isinstance(event, ResponseDone):
        strings = (event.response_id, event.status)
        assert all(isinstance(k, str) and type(v) is int for k, v in event.usage.items())
    elif isinstance(event, ErrorEvent):
        strings = (event.type, event.code, event.message)
    elif isinstance(event, SessionCreated | SessionUpdated):
        strings = ()
        assert isinstance(event.session, dict)
    else:
        assert isinstance(event, OtherEvent)
        strings = (event.type,)
    assert all(isinstance(s, str) for s in strings)
    return event


# The parsers ----------------------------------------------------------------------------------------------


@settings(FUZZ, max_examples=300)
@given(_junk_frames("event"))
def test_parse_frame_returns_a_well_typed_event_or_a_frame_error_for_any_input(frame: str | bytes) -> None:
    _check_twilio(frame)


def _every_field(templates: list[dict[str, Any]], type_key: str) -> list[Any]:
    return [
        pytest.param(template, path, id=f"{template[type_key]}:{'.'.join(path)}")
        for template in templates
        for path in _paths(template)[1:]
    ]


@pytest.mark.parametrize(("template", "path"), _every_field(_twilio_templates(STREAM_SID), "event"))
@settings(FUZZ, max_examples=30)
@given(data=st.data())
def test_parse_frame_returns_a_well_typed_event_or_a_frame_error(
    template: dict[str, Any], path: tuple[str, ...], data: st.DataObject
) -> None:
    """Every field of every Twilio event, in turn, of the wrong type or missing (plus up to two others)."""
    message = data.draw(_mutated(template, TWILIO_FIELD_VALUES, path), label="message")
    _check_twilio(data.draw(_rendered(message), label="frame"))


@settings(FUZZ, max_examples=60)
@given(st.integers(-8, 8), st.sampled_from(["x", "é", "€", "\U0001f600"]), st.booleans())
def test_the_frame_size_limit_is_in_bytes_on_the_wire(offset: int, char: str, as_bytes: bool) -> None:
    """Just under the limit is parsed, just over is frame_too_large, whatever the width of its characters."""
    head, tail = '{"event":"warp","x":"', '"}'
    width = len(char.encode())
    room = 64 * 1024 + offset - len(head) - len(tail)
    frame = head + char * (room // width) + "x" * (room % width) + tail
    data: str | bytes = frame.encode() if as_bytes else frame
    size = len(frame.encode())
    assert size == 64 * 1024 + offset
    with pytest.raises(MediaFrameError) as caught:
        parse_frame(data)
    assert caught.value.reason == ("frame_too_large" if size > 64 * 1024 else "unknown_event")


@settings(FUZZ, max_examples=300)
@given(_junk_frames("type"))
def test_parse_event_returns_a_well_typed_event_or_an_event_error_for_any_input(frame: str | bytes) -> None:
    _check_voicelive(frame)


@pytest.mark.parametrize(("template", "path"), _every_field(VL_TEMPLATES, "type"))
@settings(FUZZ, max_examples=20)
@given(data=st.data())
def test_parse_event_returns_a_well_typed_event_or_an_event_error(
    template: dict[str, Any], path: tuple[str, ...], data: st.DataObject
) -> None:
    """Every field of every Voice Live event, in turn, of the wrong type or missing (plus up to two others)."""
    message = data.draw(_mutated(template, VL_FIELD_VALUES, path), label="message")
    _check_voicelive(data.draw(_rendered(message), label="frame"))


# Mark accounting ------------------------------------------------------------------------------------------


@settings(FUZZ, max_examples=300)
@given(st.data())
def test_only_echoes_of_names_we_sent_move_the_heard_position(data: st.DataObject) -> None:
    """Twilio echoes our mark names verbatim: anything else (a forged or altered name, an echo of another
    spelling of the same number) must leave what the caller is believed to have heard as it was. Checked by
    comparing with a tracker that was given only the genuine echoes."""
    fuzzed, genuine = PlaybackTracker(), PlaybackTracker()
    sent: list[str] = []
    for _ in range(data.draw(st.integers(1, 6), label="chunks")):
        item_id = data.draw(st.sampled_from(["a", "b", "a:1", ""]), label="item")
        ms = data.draw(st.integers(1, 200), label="ms")
        for tracker in (fuzzed, genuine):
            name = tracker.mark_after(tracker.add_audio(item_id, ms))
        sent.append(name)
    for _ in range(data.draw(st.integers(1, 8), label="echoes")):
        base = data.draw(st.sampled_from(sent), label="echo of")
        variant = data.draw(st.sampled_from(_NAME_VARIANTS), label="spelling")(base)
        name = data.draw(st.just(variant) | st.text(max_size=8), label="name")
        echo = fuzzed.echoed(name)
        if name in sent:
            assert genuine.echoed(name) == echo
        else:
            assert echo is None, f"{name!r} was taken for an echo (sent {sent})"
    for item_id in ("a", "b", "a:1", ""):
        f, g = fuzzed._items.get(item_id), genuine._items.get(item_id)
        assert (f and f.heard_ms) == (g and g.heard_ms)
        assert f is None or f.heard_ms <= f.sent_ms


# The bridge -----------------------------------------------------------------------------------------------


async def _settle(predicate: Callable[[], bool], spins: int = 2000) -> None:
    """The fakes are in memory: yielding to the loop is enough for the bridge to get there."""
    for _ in range(spins):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not met")


def _appended(connection: Any) -> list[str]:
    return [e["audio"] for e in connection.sent if e["type"] == "input_audio_buffer.append"]


def _ends_the_call(frame: str | bytes) -> bool:
    """A stop for this stream (or one naming none) legitimately ends it."""
    try:
        event = parse_frame(frame)
    except MediaFrameError:
        return False
    return isinstance(event, Stop) and event.stream_sid in ("", STREAM_SID)


def _expected(frames: list[str | bytes]) -> tuple[int, list[str]]:
    """(frames the bridge must drop, caller payloads it must forward), in order."""
    dropped, forwarded = 0, []
    for frame in frames:
        try:
            event = parse_frame(frame)
        except MediaFrameError:
            dropped += 1
            continue
        if isinstance(event, Start | Connected) or (
            isinstance(event, Media | Mark | Dtmf | Stop) and event.stream_sid != STREAM_SID
        ):
            dropped += 1
        elif isinstance(event, Media) and event.payload:
            forwarded.append(event.payload)
    return dropped, forwarded


async def _twilio_scenario(frames: list[str | bytes]) -> None:
    bridge, ws, client, *_ = make_bridge()
    run = asyncio.create_task(bridge.run())
    try:
        await _settle(lambda: bool(client.opened))
        vl = client.opened[0]
        vl.push(audio_delta("a1", 100))  # 100 ms queued at Twilio, its mark "a1:1" not yet echoed
        await _settle(lambda: len(ws.events("mark")) == 1)
        mark_name = ws.events("mark")[0]["mark"]["name"]
        for frame in frames:
            key = "text" if isinstance(frame, str) else "bytes"
            ws.inbox.put_nowait({"type": "websocket.receive", key: frame})
        dropped, forwarded = _expected(frames)
        ws.media(base64.b64decode(GOOD_AUDIO))
        await _settle(lambda: len(_appended(vl)) == len(forwarded) + 1)
        assert _appended(vl) == [*forwarded, GOOD_AUDIO]
        assert bridge.stats["dropped"] == dropped
        assert ws.closed is None and not run.done()
        # Nothing was heard unless Twilio echoed our own mark: the barge-in deletes the item, no truncate.
        heard = any(_check_twilio(f) == Mark(STREAM_SID, mark_name) for f in frames)
        vl.push({"type": "input_audio_buffer.speech_started", "item_id": "u1", "audio_start_ms": 0})
        kinds = {"conversation.item.truncate", "conversation.item.delete"}
        await _settle(lambda: any(e["type"] in kinds for e in vl.sent) or heard)
        if not heard:
            cut = [e for e in vl.sent if e["type"] in kinds]
            assert cut == [{"type": "conversation.item.delete", "item_id": "a1"}]
        ws.hang_up()
        await asyncio.wait_for(run, 3)
    finally:
        run.cancel()


@settings(FUZZ, max_examples=300)
@given(st.lists(twilio_frames().filter(lambda f: not _ends_the_call(f)), min_size=1, max_size=4))
def test_bad_twilio_frames_mid_call_are_dropped_and_the_call_goes_on(frames: list[str | bytes]) -> None:
    asyncio.run(_twilio_scenario(frames))


def _fatal(frame: str | bytes) -> bool:
    """A fatal Voice Live error legitimately replaces the session (tested in test_bridge_sessions)."""
    try:
        event = parse_event(frame)
    except VoiceLiveEventError:
        return False
    return isinstance(event, ErrorEvent) and is_fatal(event)


async def _voicelive_scenario(frames: list[str | bytes]) -> None:
    bridge, ws, client, _, _, store = make_bridge()
    run = asyncio.create_task(bridge.run())
    try:
        await _settle(lambda: bool(client.opened))
        vl = client.opened[0]
        for frame in frames:
            vl.events.put_nowait(frame)  # type: ignore[arg-type]
        final = audio_delta("zz", 20)
        vl.push(final)
        await _settle(lambda: any(m["media"]["payload"] == final["delta"] for m in ws.events("media")))
        assert ws.events("mark")[-1]["mark"]["name"].startswith("zz:")
        for media in ws.events("media"):  # nothing undecodable was passed on to Twilio
            _strict_b64(media["media"]["payload"])
        assert len(client.opened) == 1 and not run.done() and ws.closed is None
        ws.media(base64.b64decode(GOOD_AUDIO))  # and the caller still reaches Voice Live
        await _settle(lambda: GOOD_AUDIO in _appended(vl))
        # The new item's position counts its own 20 ms, none of the bad frames' audio.
        vl.push({"type": "input_audio_buffer.speech_started", "item_id": "u9", "audio_start_ms": 0})
        await _settle(lambda: {"type": "conversation.item.delete", "item_id": "zz"} in vl.sent)
        ws.hang_up()
        await asyncio.wait_for(run, 3)
        cuts = [e for e in store.events if e["type"] == "barge_in" and e["item_id"] == "zz"]
        assert [(c["sent_ms"], c["heard_ms"]) for c in cuts] == [(20, 0)]
    finally:
        run.cancel()


@settings(FUZZ, max_examples=300)
@given(st.lists(voicelive_frames().filter(lambda f: not _fatal(f)), min_size=1, max_size=4))
def test_bad_voicelive_events_mid_call_are_ignored_and_the_call_goes_on(frames: list[str | bytes]) -> None:
    asyncio.run(_voicelive_scenario(frames))
