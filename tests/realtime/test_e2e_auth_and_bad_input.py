"""Stream authentication (signature, per-call token) and hostile or broken input, over real sockets."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Callable

import websockets

from emulators.speechlike import silence_ulaw, speechlike_ulaw
from emulators.twilio.media_stream import FRAME_BYTES
from tests.realtime.harness import Harness, new_call_sid

SPEECH = speechlike_ulaw(900, seed=4) + silence_ulaw(800)


async def _rejected(harness: Harness, call_sid: str, **client_options: object) -> int | None:
    async with harness.client(call_sid, **client_options) as twilio:  # type: ignore[arg-type]
        with contextlib.suppress(websockets.ConnectionClosed):
            await twilio.start()
        code = await twilio.wait_closed()
    return code


async def test_bad_signature_is_closed_1008_before_any_session(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness()
    call_sid = new_call_sid()
    assert await _rejected(harness, call_sid, signature="bm90IGEgc2lnbmF0dXJl") == 1008
    assert await _rejected(harness, call_sid, signature=None) == 1008
    assert harness.voicelive.state.connections_accepted == 0
    assert (
        harness.metric("voice_router_rejected_requests_total", route="/twilio/media", reason="signature") == 2
    )


async def test_bad_or_expired_token_is_closed_1008_before_any_session(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness()
    call_sid = new_call_sid()
    other_call = harness.tokens.issue(new_call_sid())
    assert await _rejected(harness, call_sid, token=other_call) == 1008
    assert await _rejected(harness, call_sid, token=None) == 1008
    expired = f"1000.{other_call.partition('.')[2]}"
    assert await _rejected(harness, call_sid, token=expired) == 1008
    assert harness.voicelive.state.connections_accepted == 0
    assert harness.metric("voice_router_rejected_requests_total", route="/twilio/media", reason="token") == 3


async def test_bad_frames_are_dropped_and_the_call_goes_on(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness()
    call_sid = new_call_sid()
    await harness.register_call(call_sid)
    async with harness.client(call_sid) as twilio:
        # Before start: a media frame is dropped, not forwarded and not fatal.
        await twilio.send(twilio.media_event(SPEECH[:FRAME_BYTES]))
        await twilio.start()
        await twilio.send_raw("this is not json")
        await twilio.send_raw("[1, 2, 3]")
        await twilio.send({"event": "teleport", "streamSid": twilio.stream_sid})
        bad_b64 = twilio.media_event(SPEECH[:FRAME_BYTES])
        bad_b64["media"]["payload"] = "!!!not base64!!!"
        await twilio.send(bad_b64)
        await twilio.send(twilio.media_event(SPEECH[:FRAME_BYTES], stream_sid="MZ" + "f" * 32))
        await twilio.send({"event": "mark", "streamSid": twilio.stream_sid, "mark": {"name": "never-sent:1"}})
        await twilio.send({"event": "media", "streamSid": twilio.stream_sid})
        # ... and then a normal turn still works.
        await twilio.send_audio(SPEECH)
        await twilio.wait_for(lambda: len(twilio.marks_echoed) >= 2)
        await twilio.stop()
        assert await twilio.wait_closed() == 1000
    dropped = {
        reason: harness.metric("voice_router_bridge_dropped_frames_total", reason=reason)
        for reason in (
            "before_start",
            "not_json",
            "not_object",
            "unknown_event",
            "bad_base64",
            "wrong_stream",
            "bad_media",
        )
    }
    assert dropped == dict.fromkeys(dropped, 1.0)
    session = harness.voicelive.sessions[0]
    assert session.appended_audio_ms == len(SPEECH) // 8  # only the good frames were forwarded
    assert not session.errors_sent


async def test_oversized_frame_closes_the_stream_with_1009(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness()
    call_sid = new_call_sid()
    await harness.register_call(call_sid)
    async with harness.client(call_sid) as twilio:
        await twilio.start()
        await twilio.wait_for(lambda: len(harness.voicelive.sessions) == 1)
        huge = twilio.media_event(b"\xff" * 60_000)
        assert len(huge["media"]["payload"]) > 64 * 1024
        await twilio.send(huge)
        assert await twilio.wait_closed() == 1009
    assert await harness.wait_call_field(call_sid, "breaker_outcome") == "success"


async def test_a_flood_closes_only_the_flooding_stream(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(
        settings_overrides={"realtime_max_frames_per_second": 100.0, "realtime_frame_burst": 100},
        bridge_overrides={"flood_close_after": 300},
    )
    flooder_sid, caller_sid = new_call_sid(), new_call_sid()
    await harness.register_call(flooder_sid)
    await harness.register_call(caller_sid)
    async with harness.client(flooder_sid) as flooder, harness.client(caller_sid) as caller:
        await flooder.start()
        await caller.start()
        frame = base64.b64encode(silence_ulaw(20)).decode()

        async def flood() -> None:
            for _ in range(2000):
                if flooder.closed.is_set():
                    return
                event = flooder.media_event(b"")
                event["media"]["payload"] = frame
                try:
                    await flooder.send(event)
                except Exception:
                    return

        await asyncio.gather(flood(), caller.send_audio(SPEECH))
        assert await flooder.wait_closed() == 1008
        await caller.wait_for(lambda: len(caller.marks_echoed) >= 2)
        await caller.stop()
        assert await caller.wait_closed() == 1000
    assert harness.metric("voice_router_bridge_dropped_frames_total", reason="flood") > 300
    assert await harness.wait_call_field(caller_sid, "breaker_outcome") == "success"
