"""Regressions found by the property-based tests in test_fuzz_wire.py: the minimal failing examples, kept as
plain tests so each defect stays pinned whatever the property strategies become."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from typing import Any

import orjson
import pytest

from realtime_pipeline.admission import CallSlots
from realtime_pipeline.endpoint import MediaStreamEndpoint
from realtime_pipeline.guards import RateLimitedLog
from realtime_pipeline.playback import PlaybackTracker
from realtime_pipeline.twilio_media import Dtmf, MediaFrameError, parse_frame
from router.observability import Metrics
from tests.realtime.bridge_fakes import STREAM_SID, FakeWS, make_bridge, until

OTHER_SID = "MZ" + "9" * 32
AUDIO = bytes(range(100, 260 - 100))
AUDIO_B64 = base64.b64encode(AUDIO).decode()


def _appended(connection: Any) -> list[str]:
    return [e["audio"] for e in connection.sent if e["type"] == "input_audio_buffer.append"]


def _start_with_sample_rate(sample_rate: str) -> str:
    return (
        '{"event":"start","streamSid":"MZ1","start":{"streamSid":"MZ1","callSid":"CA1",'
        '"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":' + sample_rate + "}}}"
    )


BAD_SAMPLE_RATE_START = _start_with_sample_rate('":"')


@pytest.mark.parametrize("sample_rate", ['":"', "[8000]", '"abc"', '"8000.0"'])
def test_a_start_with_a_non_numeric_sample_rate_is_a_bad_start(sample_rate: str) -> None:
    """int() of start.mediaFormat.sampleRate raised ValueError/TypeError out of parse_frame."""
    with pytest.raises(MediaFrameError) as caught:
        parse_frame(_start_with_sample_rate(sample_rate))
    assert caught.value.reason == "bad_start"


async def test_a_start_with_a_bad_sample_rate_before_the_real_one_is_dropped() -> None:
    """The endpoint caught only MediaFrameError while waiting for start: the ValueError ended the handler
    with an exception instead of dropping the frame."""
    metrics = Metrics()
    endpoint = MediaStreamEndpoint(
        signatures=None,  # type: ignore[arg-type]
        tokens=None,  # type: ignore[arg-type]
        metrics=metrics,
        bridge_factory=None,  # type: ignore[arg-type]
        ratelog=RateLimitedLog(logging.getLogger("audit"), time.monotonic),
        slots=CallSlots(1),
    )
    ws = FakeWS()
    ws.inbox.put_nowait({"type": "websocket.receive", "text": BAD_SAMPLE_RATE_START})
    ws.push({"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1"}})
    start = await endpoint._await_start(ws)  # type: ignore[arg-type]
    assert start is not None and start.call_sid == "CA1"
    dropped = metrics.registry.get_sample_value(
        "voice_router_bridge_dropped_frames_total", {"reason": "before_start_bad_start"}
    )
    assert dropped == 1


async def test_a_start_with_a_bad_sample_rate_mid_call_is_dropped_and_the_call_goes_on() -> None:
    """The ValueError ended the Twilio loop: the bridge tore the call down (the exception swallowed by the
    bridge's gather), so one malformed frame hung up on the caller."""
    bridge, ws, client, *_ = make_bridge()
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    ws.inbox.put_nowait({"type": "websocket.receive", "text": BAD_SAMPLE_RATE_START})
    ws.media(AUDIO)
    await until(lambda: _appended(client.opened[0]) == [AUDIO_B64])
    assert bridge.stats["dropped"] == 1 and not run.done()
    ws.hang_up()
    await asyncio.wait_for(run, 3)


async def test_a_dtmf_of_another_stream_is_dropped() -> None:
    """Media, mark and stop of another streamSid were dropped, DTMF was recorded as this call's digit."""
    bridge, ws, client, _, _, store = make_bridge()
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    ws.push({"event": "dtmf", "streamSid": OTHER_SID, "dtmf": {"track": "inbound_track", "digit": "1"}})
    ws.push({"event": "dtmf", "streamSid": STREAM_SID, "dtmf": {"track": "inbound_track", "digit": "2"}})
    ws.media(AUDIO)
    await until(lambda: bool(_appended(client.opened[0])))
    assert bridge.stats["dropped"] == 1
    ws.hang_up()
    await asyncio.wait_for(run, 3)
    assert [e["digit"] for e in store.events if e["type"] == "dtmf"] == ["2"]


@pytest.mark.parametrize("spelling", ["A:01", "A:+1", "A: 1", "A:1 ", "A:0_1", "A:١"])
def test_another_spelling_of_a_sent_mark_name_is_stale(spelling: str) -> None:
    """int() accepts leading zeros, signs, blanks, underscores and non-ASCII digits: a name we never sent
    was credited as an echo of ours, overstating what the caller heard."""
    tracker = PlaybackTracker()
    item = tracker.add_audio("A", 100)
    assert tracker.mark_after(item) == "A:1"
    assert tracker.echoed(spelling) is None
    assert item.heard_ms == 0 and tracker.audio_queued and tracker.stale_echoes == 1
    echo = tracker.echoed("A:1")
    assert echo is not None and echo.heard_ms == 100


@pytest.mark.parametrize(
    "fields",
    [
        {"item_id": "i1"},
        {"item_id": "i1", "delta": 7},
        {"delta": AUDIO_B64},
        {"item_id": "", "delta": AUDIO_B64},
    ],
)
async def test_an_audio_delta_without_its_audio_or_its_item_is_logged_and_ignored(
    fields: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Such a delta was ignored without a word (no audio) or played under the item "" (no truncate could name
    it). Both are malformed events: logged, not played, and the next good delta plays."""
    bridge, ws, client, *_ = make_bridge()
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    vl = client.opened[0]
    with caplog.at_level(logging.WARNING, logger="realtime_pipeline"):
        vl.push({"type": "response.audio.delta", "response_id": "r1", **fields})
        vl.push({"type": "response.audio.delta", "response_id": "r1", "item_id": "i2", "delta": AUDIO_B64})
        await until(lambda: bool(ws.events("media")))
    assert [m["media"]["payload"] for m in ws.events("media")] == [AUDIO_B64]
    assert [m["mark"]["name"].split(":")[0] for m in ws.events("mark")] == ["i2"]
    assert "bad Voice Live frame: response.audio.delta without a string delta and item_id" in caplog.text
    ws.hang_up()
    await asyncio.wait_for(run, 3)


@pytest.mark.parametrize("digit", ["", "A", "12", "١", None, 5])
def test_a_dtmf_digit_no_keypad_sends_is_a_bad_frame(digit: Any) -> None:
    """Any string was taken as the digit and written into the call record."""
    frame = f'{{"event":"dtmf","streamSid":"{STREAM_SID}","dtmf":{{"track":"inbound_track","digit":{orjson.dumps(digit).decode()}}}}}'
    with pytest.raises(MediaFrameError) as raised:
        parse_frame(frame)
    assert raised.value.reason == "bad_dtmf"


@pytest.mark.parametrize("digit", list("0123456789*#"))
def test_every_keypad_digit_is_a_dtmf_event(digit: str) -> None:
    event = parse_frame(orjson.dumps({"event": "dtmf", "streamSid": STREAM_SID, "dtmf": {"digit": digit}}))
    assert event == Dtmf(STREAM_SID, digit)


@pytest.mark.parametrize("payload", ["AAAA====", "AAAA=", "AAAAAA", "AAA"])
def test_base64_no_encoder_writes_is_a_bad_frame_not_forwarded(payload: str) -> None:
    """Python's strict decoder accepts padding past the last quantum and unpadded tails: such a payload was
    forwarded to Voice Live as received, to a decoder that may be stricter."""
    frame = orjson.dumps({"event": "media", "streamSid": STREAM_SID, "media": {"payload": payload}})
    with pytest.raises(MediaFrameError) as raised:
        parse_frame(frame)
    assert raised.value.reason == "bad_base64"


async def test_an_audio_delta_in_base64_no_encoder_writes_is_not_passed_to_twilio(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bridge, ws, client, *_ = make_bridge()
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    vl = client.opened[0]
    with caplog.at_level(logging.WARNING, logger="realtime_pipeline"):
        vl.push(
            {
                "type": "response.audio.delta",
                "response_id": "r1",
                "item_id": "i1",
                "delta": AUDIO_B64 + "====",
            }
        )
        vl.push({"type": "response.audio.delta", "response_id": "r1", "item_id": "i1", "delta": AUDIO_B64})
        await until(lambda: bool(ws.events("media")))
    assert [m["media"]["payload"] for m in ws.events("media")] == [AUDIO_B64]
    assert "bad base64 in audio delta" in caplog.text
    ws.hang_up()
    await asyncio.wait_for(run, 3)
