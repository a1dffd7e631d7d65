"""Session replacement, reconnect and hang-up races, in process (tests.realtime.bridge_fakes): the
interleavings that real sockets make too rare to reach end to end."""

from __future__ import annotations

import asyncio
import base64

from flags.breaker import TrialPermit
from realtime_pipeline.audio import Pcm16Converter
from realtime_pipeline.bridge import PREROLL_FRAMES, BridgeConfig
from tests.realtime.bridge_fakes import STREAM_SID, FakeClient, audio_delta, make_bridge, until

SPEECH_STARTED = {"type": "input_audio_buffer.speech_started", "item_id": "u1", "audio_start_ms": 0}
SPEECH_STOPPED = {"type": "input_audio_buffer.speech_stopped", "item_id": "u1", "audio_end_ms": 900}
RESPONSE_CREATED = {"type": "response.created", "response": {"id": "r1"}}
RESPONSE_DONE = {"type": "response.done", "response": {"id": "r1", "status": "completed"}}


def _appended(connection: object) -> list[int]:
    """First byte of every caller frame appended to ``connection`` (the tests number their frames)."""
    return [
        base64.b64decode(event["audio"])[0]
        for event in connection.sent  # type: ignore[attr-defined]
        if event["type"] == "input_audio_buffer.append"
    ]


async def test_a_hang_up_as_the_reconnect_completes_ends_the_call_and_closes_every_session() -> None:
    """The caller hangs up in the loop turn the replacement session becomes ready. With asyncio.wait_for
    (Python 3.11) that cancellation was lost: the bridge kept reading the new session, never ended, and
    kept its call slot and a billed session open."""
    bridge, ws, client, *_ = make_bridge()
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    gate = asyncio.Event()
    client.gate = gate
    client.opened[0].lose()
    await until(lambda: client.gate is None)  # the reconnect waits for its session
    ws.hang_up()
    gate.set()
    await asyncio.wait_for(run, 3)
    assert len(client.opened) == 2
    assert all(connection.closed for connection in client.opened)


async def test_renewal_waits_while_a_reply_is_owed_and_the_reply_plays() -> None:
    """Between speech_stopped and response.created no one speaks and nothing plays, but the caller is
    waiting for an answer: a renewal then would have closed the session producing it."""
    bridge, ws, client, *_ = make_bridge(config=BridgeConfig(session_max_age_seconds=0.3))
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    vl = client.opened[0]
    vl.push(SPEECH_STARTED)
    await asyncio.sleep(0.35)  # renewal due while the caller speaks: deferred
    vl.push(SPEECH_STOPPED)
    await asyncio.sleep(0.15)  # Voice Live is working on the reply
    assert len(client.opened) == 1
    vl.push(RESPONSE_CREATED)
    for _ in range(5):
        vl.push(audio_delta("a1", 100))
    vl.push(RESPONSE_DONE)
    await until(lambda: len(ws.events("media")) == 5)
    for mark in ws.events("mark"):
        ws.mark(mark["mark"]["name"])  # played
    await until(lambda: len(client.opened) == 2)  # now, between turns, it renews
    ws.hang_up()
    await asyncio.wait_for(run, 3)
    assert bridge.stats["renewals"] == 1


async def test_a_slow_renewal_leaves_every_caller_frame_with_the_old_session() -> None:
    """The old session is healthy while the next one opens: the caller keeps talking to it (audio used to
    be only held, the newest 3 s, for up to 6 s, and lost if the renewal failed)."""
    config = BridgeConfig(session_max_age_seconds=0.2, reconnect_timeout=0.3)
    bridge, ws, client, *_ = make_bridge(config=config)
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    old = client.opened[0]
    client.gate = asyncio.Event()  # the renewal's session never becomes ready: it times out
    await until(lambda: client.gate is None)
    for n in range(200):  # 4 s of caller audio
        ws.media(bytes([n % 256]) * 160)
    await until(lambda: len(_appended(old)) == 200)
    ws.hang_up()
    await asyncio.wait_for(run, 3)
    assert _appended(old) == [n % 256 for n in range(200)]


async def test_a_renewal_switches_between_turns_and_replays_the_newest_caller_audio() -> None:
    """Speech that began just before the switch, not yet detected by the old session, reaches the new one:
    the newest PREROLL_FRAMES frames are appended to it first, then live audio, in order."""
    config = BridgeConfig(session_max_age_seconds=0.2)
    client = FakeClient()
    gate = asyncio.Event()
    bridge, ws, client, *_ = make_bridge(config=config, client=client)
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    old = client.opened[0]
    client.gate = gate
    await until(lambda: client.gate is None)  # renewal opening
    for n in range(40):
        ws.media(bytes([n]) * 160)
    await until(lambda: len(_appended(old)) == 40)
    gate.set()
    await until(lambda: len(client.opened) == 2)
    new = client.opened[1]
    await until(lambda: bridge.stats["renewals"] == 1)
    for n in range(40, 45):
        ws.media(bytes([n]) * 160)
    await until(lambda: len(_appended(new)) == PREROLL_FRAMES + 5)
    ws.hang_up()
    await asyncio.wait_for(run, 3)
    assert _appended(new) == list(range(40 - PREROLL_FRAMES, 45))
    assert old.closed


async def test_caller_audio_held_during_a_reconnect_reaches_the_new_session_in_order() -> None:
    """A send that waits for the socket to drain (websockets' drain() on a paused transport) used to let new
    frames go straight to the new session between two frames of the backlog."""

    async def drains(_: str) -> None:
        await asyncio.sleep(0)

    bridge, ws, client, *_ = make_bridge(client=FakeClient(send_hook=drains))
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    gate = asyncio.Event()
    client.gate = gate
    client.opened[0].lose()
    await until(lambda: client.gate is None)
    for n in range(40):  # held while there is no session
        ws.media(bytes([n]) * 160)
    await asyncio.sleep(0.05)

    async def keep_talking() -> None:
        for n in range(40, 80):
            ws.media(bytes([n]) * 160)
            await asyncio.sleep(0)

    talker = asyncio.create_task(keep_talking())
    gate.set()
    await talker
    await until(lambda: len(client.opened) == 2 and len(_appended(client.opened[1])) == 80)
    ws.hang_up()
    await asyncio.wait_for(run, 3)
    assert _appended(client.opened[1]) == list(range(80))


async def test_a_session_lost_before_the_reply_was_created_asks_the_new_one_for_it() -> None:
    """The caller finished a question; the socket dropped before response.created. The reconnect replayed
    the question but asked for no reply, and the caller sat in silence."""
    bridge, ws, client, *_ = make_bridge()
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    vl = client.opened[0]
    vl.push(SPEECH_STARTED)
    vl.push(SPEECH_STOPPED)
    vl.push(
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": "u1",
            "content_index": 0,
            "transcript": "Can I book Tuesday?",
        }
    )
    await asyncio.sleep(0.05)
    vl.lose()
    await until(lambda: len(client.opened) == 2 and "response.create" in client.opened[1].types())
    ws.hang_up()
    await asyncio.wait_for(run, 3)
    second = client.opened[1]
    replayed = [
        e["item"]["content"][0]["text"] for e in second.sent if e["type"] == "conversation.item.create"
    ]
    assert replayed == ["Can I book Tuesday?"]
    assert second.types().index("response.create") > second.types().index("conversation.item.create")


async def test_a_reply_lost_mid_playback_is_cleared_at_twilio_before_it_is_asked_again() -> None:
    """The new session answers from the start: what is left of the old reply at Twilio is cleared, so
    the caller does not hear the beginning twice."""
    bridge, ws, client, *_ = make_bridge()
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    vl = client.opened[0]
    vl.push(SPEECH_STARTED)
    vl.push(SPEECH_STOPPED)
    vl.push(RESPONSE_CREATED)
    for _ in range(3):
        vl.push(audio_delta("a1", 100))
    await until(lambda: len(ws.events("media")) == 3)
    vl.lose()  # no mark echoed yet: all of it is still queued at Twilio
    await until(lambda: len(client.opened) == 2 and "response.create" in client.opened[1].types())
    ws.hang_up()
    await asyncio.wait_for(run, 3)
    assert len(ws.events("clear")) == 1
    assert "conversation.item.truncate" not in client.opened[1].types()  # the new session never had it


async def test_an_echo_burst_after_a_clear_is_not_a_flood_and_no_caller_frame_is_dropped() -> None:
    """After a clear Twilio echoes every pending mark at once (one per reply chunk). Counted as caller
    frames they exhausted the limiter, dropped the caller's own audio and, over a call, closed the stream."""
    config = BridgeConfig(max_frames_per_second=200.0, frame_burst=50.0, flood_close_after=100)
    bridge, ws, client, *_ = make_bridge(config=config)
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    vl = client.opened[0]
    vl.push(RESPONSE_CREATED)
    for _ in range(300):
        vl.push(audio_delta("a1", 20))
    await until(lambda: len(ws.events("mark")) == 300)
    vl.push(SPEECH_STARTED)  # barge-in: clear, then Twilio echoes all 300 marks at once
    await until(lambda: len(ws.events("clear")) == 1)
    for index, mark in enumerate(ws.events("mark")):
        ws.mark(mark["mark"]["name"])
        if index % 10 == 0:
            ws.media(bytes([index % 256]) * 160)  # the caller, talking over it
    await until(lambda: len(_appended(vl)) == 30)
    ws.hang_up()
    await asyncio.wait_for(run, 3)
    assert bridge.stats["dropped"] == 0
    assert ws.closed is None


async def test_a_flood_of_other_frames_is_still_closed() -> None:
    config = BridgeConfig(max_frames_per_second=200.0, frame_burst=50.0, flood_close_after=100)
    bridge, ws, client, *_ = make_bridge(config=config)
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    for _ in range(400):
        ws.media(b"\xff" * 160)
    await asyncio.wait_for(run, 3)
    assert ws.closed == (1008, "too many frames")


async def test_a_stop_for_another_stream_does_not_end_this_one() -> None:
    bridge, ws, client, *_ = make_bridge()
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    ws.push({"event": "stop", "streamSid": "MZ" + "9" * 32, "stop": {}})
    ws.media(b"\x01" * 160)
    await until(lambda: len(_appended(client.opened[0])) == 1)
    assert bridge.stats["dropped"] == 1
    ws.push({"event": "stop", "streamSid": STREAM_SID, "stop": {}})
    await asyncio.wait_for(run, 3)


async def test_a_caller_who_hangs_up_before_first_audio_is_no_verdict_and_frees_the_trial() -> None:
    """Hanging up while the greeting is still awaited (inside the slow-call threshold) says nothing about
    Voice Live: it used to record SUCCESS, and a half-open trial closed the breaker on it."""
    permit = TrialPermit(round=3)
    bridge, ws, client, _, breaker, _ = make_bridge(config=BridgeConfig(greeting="Hello."), trial=permit)
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened) and "response.create" in client.opened[0].types())
    ws.hang_up()
    await asyncio.wait_for(run, 3)
    assert breaker.recorded == []
    assert breaker.released == [permit]


async def test_a_call_whose_session_was_ready_and_owed_nothing_is_a_success() -> None:
    permit = TrialPermit(round=3)
    bridge, ws, client, _, breaker, _ = make_bridge(trial=permit)
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    ws.hang_up()
    await asyncio.wait_for(run, 3)
    assert breaker.recorded == [("success", permit)]


async def test_a_pcm16_reply_that_fits_in_the_resampler_tail_still_counts_as_first_audio() -> None:
    """A 40 ms reply comes out of soxr only at response.audio.done; its first audio was never registered,
    so the call's outcome waited for the slow-call watchdog."""
    bridge, ws, client, _, breaker, _ = make_bridge(
        config=BridgeConfig(greeting="Hi."), audio=Pcm16Converter()
    )
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    vl = client.opened[0]
    vl.push(RESPONSE_CREATED)
    vl.push(
        {
            "type": "response.audio.delta",
            "response_id": "r1",
            "item_id": "a1",
            "delta": base64.b64encode(b"\x10\x00" * 24 * 40).decode(),
        }
    )
    vl.push({"type": "response.audio.done", "response_id": "r1", "item_id": "a1"})
    await until(lambda: len(ws.events("mark")) == 1)
    await until(lambda: bool(breaker.recorded))
    ws.hang_up()
    await asyncio.wait_for(run, 3)
    assert breaker.recorded == [("success", None)]


async def test_a_session_lost_while_a_renewal_opens_is_replaced_by_the_renewal_alone() -> None:
    """The reconnect waits for the renewal in progress; when the renewal took over, it opens nothing more
    (it used to replace the session just renewed)."""
    bridge, ws, client, *_ = make_bridge(config=BridgeConfig(session_max_age_seconds=0.2))
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    gate = asyncio.Event()
    client.gate = gate
    await until(lambda: client.gate is None)  # the renewal is opening its session
    client.opened[0].lose()
    await asyncio.sleep(0.05)
    gate.set()
    await until(lambda: bridge.stats["renewals"] == 1)
    ws.media(b"\x07" * 160)
    await until(lambda: len(_appended(client.opened[1])) >= 1)
    ws.hang_up()
    await asyncio.wait_for(run, 3)
    assert len(client.opened) == 2
    assert bridge.stats["reconnects"] == 0
