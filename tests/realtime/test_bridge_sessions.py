"""Session replacement, reconnect and hang-up races, in process (tests.realtime.bridge_fakes): the
interleavings that real sockets make too rare to reach end to end."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest

from flags.breaker import Outcome, TrialPermit
from realtime_pipeline.audio import Pcm16Converter
from realtime_pipeline.bridge import PREROLL_FRAMES, BridgeConfig
from realtime_pipeline.session_config import repeat_request_instructions
from realtime_pipeline.twilio_media import TwilioEvent, parse_frame
from realtime_pipeline.voicelive_client import VoiceLiveClosed
from tests.realtime.bridge_fakes import STREAM_SID, FakeClient, audio_delta, make_bridge, until

SPEECH_STARTED = {"type": "input_audio_buffer.speech_started", "item_id": "u1", "audio_start_ms": 0}
SPEECH_STOPPED = {"type": "input_audio_buffer.speech_stopped", "item_id": "u1", "audio_end_ms": 900}
RESPONSE_CREATED = {"type": "response.created", "response": {"id": "r1"}}
RESPONSE_DONE = {"type": "response.done", "response": {"id": "r1", "status": "completed"}}
USER_TRANSCRIPT = {
    "type": "conversation.item.input_audio_transcription.completed",
    "item_id": "u1",
    "content_index": 0,
    "transcript": "Can I book Tuesday?",
}


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
    vl.push(USER_TRANSCRIPT)
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


def _stalls_on_frame(
    number: int, release: asyncio.Event, stalled: asyncio.Event, *, then_fail: bool
) -> Callable[[str], Awaitable[None]]:
    """A send hook: appending caller frame ``number`` waits (the socket draining) until ``release``, then
    succeeds or, with ``then_fail``, finds the socket closed."""
    fired = False

    async def hook(message: str) -> None:
        nonlocal fired
        event = orjson.loads(message)
        if (
            fired
            or event["type"] != "input_audio_buffer.append"
            or base64.b64decode(event["audio"])[0] != number
        ):
            return
        fired = True
        stalled.set()
        await release.wait()
        if then_fail:
            raise VoiceLiveClosed(1006, "closed while draining")

    return hook


@pytest.mark.parametrize("then_fail", [False, True], ids=["sent", "send-failed"])
async def test_a_frame_on_its_way_to_the_old_session_at_a_renewal_reaches_the_new_one(
    then_fail: bool,
) -> None:
    """The Twilio loop is inside old.send(frame 30) when the renewal switches. The frame was neither in the
    pre-roll nor sent to the new session; when that send then failed it was stranded, held with no flush
    coming, and replayed out of order at the next switch."""
    release, stalled = asyncio.Event(), asyncio.Event()
    client = FakeClient(send_hook=_stalls_on_frame(30, release, stalled, then_fail=then_fail))
    bridge, ws, client, *_ = make_bridge(config=BridgeConfig(session_max_age_seconds=0.2), client=client)
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    gate = asyncio.Event()
    client.gate = gate
    await until(lambda: client.gate is None)  # the renewal is opening
    for n in range(31):
        ws.media(bytes([n]) * 160)
    await stalled.wait()
    gate.set()
    await until(lambda: bridge.stats["renewals"] == 1)
    release.set()
    for n in range(31, 36):
        ws.media(bytes([n]) * 160)
    new = client.opened[1]
    await until(lambda: 35 in _appended(new))
    assert bridge._buffer is None  # nothing left held while the session is ready
    ws.hang_up()
    await asyncio.wait_for(run, 3)
    assert _appended(new) == list(range(30 - PREROLL_FRAMES, 36))


async def test_a_reply_cleared_at_a_reconnect_is_replayed_only_as_far_as_it_was_heard() -> None:
    """The reply's transcript arrived, its audio was still queued at Twilio (no mark echoed) when the session
    was lost: the new session used to be told the whole answer had been given, then asked to reply again."""
    bridge, ws, client, *_ = make_bridge()
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    vl = client.opened[0]
    vl.push(SPEECH_STARTED)
    vl.push(SPEECH_STOPPED)
    vl.push(USER_TRANSCRIPT)
    vl.push(RESPONSE_CREATED)
    for _ in range(3):
        vl.push(audio_delta("a1", 100))
    vl.push(
        {
            "type": "response.audio_transcript.done",
            "response_id": "r1",
            "item_id": "a1",
            "transcript": "Tuesday at ten is free, shall I book it?",
        }
    )
    await until(lambda: len(ws.events("media")) == 3)
    await asyncio.sleep(0.02)
    vl.lose()
    await until(lambda: len(client.opened) == 2 and "response.create" in client.opened[1].types())
    ws.hang_up()
    await asyncio.wait_for(run, 3)
    assert len(ws.events("clear")) == 1
    replayed = [
        (event["item"]["role"], event["item"]["content"][0]["text"])
        for event in client.opened[1].sent
        if event["type"] == "conversation.item.create"
    ]
    assert replayed == [("user", "Can I book Tuesday?")]


async def test_a_stuck_breaker_store_at_shutdown_still_closes_the_session_and_writes_the_record() -> None:
    """The call end waited for the outcome's store write before closing Voice Live and the call log: with a
    stuck store and a cancellation (the server's graceful-shutdown timeout), the billed session stayed open
    and stream_ended was never written."""
    bridge, ws, client, _, breaker, store = make_bridge()
    stuck = asyncio.Event()

    async def never_answers(outcome: Outcome, *, trial: Any = None) -> None:
        stuck.set()
        await asyncio.Event().wait()

    breaker.record = never_answers  # type: ignore[method-assign]
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    ws.hang_up()
    await stuck.wait()
    await asyncio.sleep(0.05)
    run.cancel()
    await asyncio.gather(run, return_exceptions=True)
    assert client.opened[0].closed
    assert store.events[-1]["type"] == "stream_ended"


async def test_a_call_cancelled_before_its_session_was_ready_is_no_success_for_a_trial() -> None:
    permit = TrialPermit(round=3)
    client = FakeClient()
    client.gate = asyncio.Event()  # the first session never becomes ready
    bridge, _, client, _, breaker, _ = make_bridge(client=client, trial=permit)
    run = asyncio.create_task(bridge.run())
    await until(lambda: client.gate is None)
    run.cancel()
    await asyncio.gather(run, return_exceptions=True)
    assert breaker.recorded == []
    assert breaker.released == [permit]


async def test_frames_over_the_limit_are_dropped_unparsed_while_marks_are_owed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While a reply plays (marks owed), every frame over the limit used to be parsed to see whether it was
    an owed echo, and an owed echo was parsed twice: a flood during playback was no longer cheap."""
    parsed = 0

    def counting(frame: str | bytes) -> TwilioEvent:
        nonlocal parsed
        parsed += 1
        return parse_frame(frame)

    monkeypatch.setattr("realtime_pipeline.bridge.parse_frame", counting)
    config = BridgeConfig(max_frames_per_second=1.0, frame_burst=5.0, flood_close_after=10_000)
    bridge, ws, client, *_ = make_bridge(config=config)
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    vl = client.opened[0]
    vl.push(RESPONSE_CREATED)
    vl.push(audio_delta("a1", 20))
    await until(lambda: len(ws.events("mark")) == 1)
    for _ in range(200):
        ws.media(b"\xff" * 160)
    ws.mark(ws.events("mark")[0]["mark"]["name"])  # over the limit too, but owed
    await until(lambda: bridge.stats.get("flood", 0) >= 195)
    await asyncio.sleep(0.05)
    ws.hang_up()
    await asyncio.wait_for(run, 3)
    assert bridge._marks_owed == 0  # the echo got through
    assert parsed <= 6 + 1  # the frames within the burst, and the echo once


async def test_a_reply_never_begun_stops_blocking_the_renewal() -> None:
    """speech_stopped with no response after it (the service declined, or decided the caller had not
    finished): once ``reply_wait_seconds`` passed the renewal goes ahead, and asks for no reply."""
    config = BridgeConfig(session_max_age_seconds=0.2, reply_wait_seconds=0.3)
    bridge, ws, client, *_ = make_bridge(config=config)
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    vl = client.opened[0]
    vl.push(SPEECH_STARTED)
    vl.push(SPEECH_STOPPED)
    await until(lambda: bridge.stats["renewals"] == 1)
    ws.hang_up()
    await asyncio.wait_for(run, 3)
    assert "response.create" not in client.opened[1].types()


async def test_a_question_lost_with_its_session_before_its_transcript_is_asked_again() -> None:
    """The session was lost after speech_stopped but before the caller's words were transcribed: the new
    session never heard them, so instead of answering something else it asks the caller to repeat."""
    bridge, ws, client, *_ = make_bridge()
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    vl = client.opened[0]
    vl.push(SPEECH_STARTED)
    vl.push(SPEECH_STOPPED)
    await asyncio.sleep(0.05)
    vl.lose()
    await until(lambda: len(client.opened) == 2 and "response.create" in client.opened[1].types())
    ws.hang_up()
    await asyncio.wait_for(run, 3)
    (create,) = [event for event in client.opened[1].sent if event["type"] == "response.create"]
    assert create["response"]["instructions"] == repeat_request_instructions()


async def test_a_loop_that_dies_of_an_unexpected_error_is_logged_not_swallowed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug in one of the bridge's loops ends that call; the loops were gathered with return_exceptions, so
    the call ended with nothing in the log to say why."""
    bridge, ws, client, *_ = make_bridge()
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))

    with caplog.at_level("ERROR", logger="realtime_pipeline.bridge"):
        ws.inbox.put_nowait({})  # no ASGI message looks like this: the Twilio loop trips over it (KeyError)
        await until(lambda: run.done(), within=3)
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "unexpected error" in r.getMessage()]
    assert errors and errors[0].exc_info is not None
    assert isinstance(errors[0].exc_info[1], KeyError) and "twilio-" in errors[0].getMessage()


async def test_words_spoken_over_an_uninterruptible_reply_are_still_owed_a_reply_when_it_ends() -> None:
    """With ``interrupt_response: false`` Voice Live finishes the reply it is giving, then answers what the
    caller said over it. That reply's response.done cleared the one owed to the caller's words: a session
    lost before the answer began was asked for nothing, and the caller sat in silence."""
    session = {"input_audio_format": "g711_ulaw", "turn_detection": {"interrupt_response": False}}
    bridge, ws, client, *_ = make_bridge(session=session)
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    vl = client.opened[0]
    vl.push(RESPONSE_CREATED)
    vl.push(audio_delta("a1", 300))
    await until(lambda: len(ws.events("media")) == 1)
    vl.push(SPEECH_STARTED)  # the caller talks over it: no barge-in, it plays on
    vl.push(SPEECH_STOPPED)
    vl.push(USER_TRANSCRIPT)
    vl.push(RESPONSE_DONE)  # the reply they talked over ends; theirs is next
    await until(lambda: not bridge._response_active)
    vl.lose()
    await until(lambda: len(client.opened) == 2 and bridge.stats["reconnects"] == 1)
    ws.hang_up()
    await asyncio.wait_for(run, 3)
    assert client.opened[1].types().count("response.create") == 1
    assert not ws.events("clear")


async def test_a_reply_the_caller_is_talking_over_is_not_asked_again_after_a_loss() -> None:
    """The caller barged in (Voice Live cancels the reply) and the session dropped before the cancel's
    response.done: the new session was asked for a bare reply at once, and answered the old question while
    the caller was still talking. Their words, replayed to it, get the next reply."""
    bridge, ws, client, *_ = make_bridge()
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    vl = client.opened[0]
    vl.push(SPEECH_STARTED)
    vl.push(SPEECH_STOPPED)
    vl.push(RESPONSE_CREATED)
    vl.push(audio_delta("a1", 300))
    await until(lambda: len(ws.events("media")) == 1)
    vl.push({**SPEECH_STARTED, "item_id": "u2"})  # the caller talks over it
    await until(lambda: bool(ws.events("clear")))
    vl.lose()
    await until(lambda: bridge.stats["reconnects"] == 1)
    await asyncio.sleep(0.05)
    assert [e for e in client.opened[1].sent if e["type"] == "response.create"] == []
    ws.hang_up()
    await asyncio.wait_for(run, 3)


async def test_the_transcript_of_a_reply_spoken_over_uninterrupted_stays_out_of_the_callers_next_turn() -> (
    None
):
    """With ``interrupt_response: false`` the reply the caller talked over ends after their turn began: its
    transcript went into that turn's record, before the reply to their words."""
    session = {"input_audio_format": "g711_ulaw", "turn_detection": {"interrupt_response": False}}
    bridge, ws, client, _, _, store = make_bridge(session=session)
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    vl = client.opened[0]
    vl.push({**SPEECH_STOPPED, "item_id": "u0"})  # turn 1, answered by a1
    vl.push(RESPONSE_CREATED)
    vl.push(audio_delta("a1", 300))
    await until(lambda: len(ws.events("media")) == 1)
    vl.push(SPEECH_STARTED)  # the caller talks over it: it plays on
    vl.push(SPEECH_STOPPED)  # their turn (2) begins
    vl.push({"type": "response.audio_transcript.done", "item_id": "a1", "transcript": "We open at nine."})
    vl.push(RESPONSE_DONE)
    vl.push({"type": "response.created", "response": {"id": "r2"}})
    vl.push(audio_delta("a2", 100, "r2"))
    vl.push({"type": "response.audio_transcript.done", "item_id": "a2", "transcript": "Yes, Tuesday works."})
    vl.push({"type": "response.done", "response": {"id": "r2", "status": "completed"}})
    await until(lambda: len(ws.events("media")) == 2)
    ws.hang_up()
    await asyncio.wait_for(run, 3)
    assert [(t["turn"], t["assistant_text"]) for t in store.turns][-1] == (2, "Yes, Tuesday works.")


async def test_a_reply_of_a_lost_session_cut_off_later_is_replayed_only_as_far_as_it_was_heard() -> None:
    """The reply had ended at Voice Live but was still playing at Twilio when the session was lost: it plays on
    under the new session. The caller then cut it off: it was cleared, but the conversation kept all of it
    (only items of the current session were cut), so the next session, and legacy after a move, were told
    the caller had heard the whole answer."""
    bridge, ws, client, *_ = make_bridge()
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    vl = client.opened[0]
    await _reply_queued(ws, vl)
    vl.lose()  # between turns for Voice Live, 3 s of its reply still queued at Twilio
    await until(lambda: bridge.stats["reconnects"] == 1)
    assert not ws.events("clear"), "a reply that ended plays on"
    for mark in ws.events("mark")[:3]:
        ws.mark(mark["mark"]["name"])  # 900 ms of it heard
    second = client.opened[1]
    second.push({**SPEECH_STARTED, "item_id": "u2"})  # the caller cuts it off
    await until(lambda: bool(ws.events("clear")))
    second.push({"type": "response.created", "response": {"id": "r2"}})
    second.push({"type": "response.done", "response": {"id": "r2", "status": "completed"}})
    await asyncio.sleep(0.02)
    second.lose()
    await until(lambda: bridge.stats["reconnects"] == 2)
    ws.hang_up()
    await asyncio.wait_for(run, 3)
    replayed = [
        (event["item"]["role"], event["item"]["content"][0]["text"])
        for event in client.opened[2].sent
        if event["type"] == "conversation.item.create"
    ]
    assert replayed == [("user", "Can I book Tuesday?"), ("assistant", "one two three")]


async def test_a_greeting_after_a_slow_session_set_up_makes_the_call_slow() -> None:
    """The slow-call clock started once the session was ready: a caller who waited through a slow handshake
    and session.update in silence, then heard the greeting at once, made a fast call for the breaker."""
    client = FakeClient()
    client.gate = gate = asyncio.Event()
    config = BridgeConfig(greeting="Hello.", slow_call_seconds=0.3)
    bridge, ws, client, _, breaker, _ = make_bridge(config=config, client=client)
    run = asyncio.create_task(bridge.run())
    await asyncio.sleep(0.4)  # the caller hears nothing while the session is set up
    gate.set()
    await until(lambda: bool(client.opened) and "response.create" in client.opened[0].types())
    client.opened[0].push(RESPONSE_CREATED)
    client.opened[0].push(audio_delta("greeting", 100))
    await until(lambda: bool(breaker.recorded))
    assert breaker.recorded[0][0] == "slow"
    ws.hang_up()
    await asyncio.wait_for(run, 3)


async def _reply_queued(ws: Any, vl: Any) -> None:
    """The caller asks; the reply (3 s, ten words) has all reached Twilio and ended at Voice Live, none of it
    heard yet."""
    vl.push(SPEECH_STARTED)
    vl.push(SPEECH_STOPPED)
    vl.push(USER_TRANSCRIPT)
    vl.push(RESPONSE_CREATED)
    for _ in range(10):
        vl.push(audio_delta("a1", 300))
    words = "one two three four five six seven eight nine ten"
    vl.push(
        {"type": "response.audio_transcript.done", "response_id": "r1", "item_id": "a1", "transcript": words}
    )
    vl.push(RESPONSE_DONE)
    await until(lambda: len(ws.events("mark")) == 10)


async def _reply_mostly_unheard(ws: Any, vl: Any) -> None:
    """A queued reply (``_reply_queued``) of which the caller has heard the first 600 ms."""
    await _reply_queued(ws, vl)
    for mark in ws.events("mark")[:2]:
        ws.mark(mark["mark"]["name"])
    await asyncio.sleep(0.02)


async def test_a_move_hands_legacy_only_the_part_of_a_reply_the_caller_heard() -> None:
    """The session is lost (no reconnect) while its finished reply still plays at Twilio; the move ends the
    stream and what was queued is never heard. Legacy was handed the whole reply as said, and went on from
    words the caller never heard (a booking reference, say)."""
    bridge, ws, client, mover, _, store = make_bridge()
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    await _reply_mostly_unheard(ws, client.opened[0])
    client.fail_next = TimeoutError()
    client.opened[0].lose()
    await until(lambda: bool(mover.moves))
    ws.push({"event": "stop", "streamSid": STREAM_SID, "stop": {}})
    await asyncio.wait_for(run, 3)
    assert store.history == [
        {"role": "user", "content": "Can I book Tuesday?"},
        {"role": "assistant", "content": "one two"},
    ]
    assert mover.greets == [False]


async def test_a_stream_closed_without_stop_hands_legacy_only_the_part_of_a_reply_the_caller_heard() -> None:
    """A deploy closes the stream (1012) while a finished reply still plays: Twilio goes on at legacy, and what
    it had queued is never heard. The conversation left for legacy held the whole reply."""
    bridge, ws, client, _, _, store = make_bridge()
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    await _reply_mostly_unheard(ws, client.opened[0])
    ws.inbox.put_nowait({"type": "websocket.disconnect", "code": 1012})
    await asyncio.wait_for(run, 3)
    assert store.history == [
        {"role": "user", "content": "Can I book Tuesday?"},
        {"role": "assistant", "content": "one two"},
    ]


async def test_a_move_before_the_greeting_played_asks_legacy_to_greet() -> None:
    """The greeting had all reached Twilio (and its transcript had come) when the session was lost, but none
    of it had played: the move asked legacy to carry on ("Sorry about that. Let's carry on.") as the first
    words of the call, and handed it a greeting the caller never heard."""
    bridge, ws, client, mover, _, store = make_bridge(config=BridgeConfig(greeting="Welcome to Contoso."))
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    vl = client.opened[0]
    vl.push(RESPONSE_CREATED)
    for _ in range(5):
        vl.push(audio_delta("a0", 300))
    vl.push(
        {
            "type": "response.audio_transcript.done",
            "response_id": "r1",
            "item_id": "a0",
            "transcript": "Welcome to Contoso.",
        }
    )
    vl.push(RESPONSE_DONE)
    await until(lambda: len(ws.events("mark")) == 5)
    client.fail_next = TimeoutError()
    vl.lose()
    await until(lambda: bool(mover.moves))
    ws.push({"event": "stop", "streamSid": STREAM_SID, "stop": {}})
    await asyncio.wait_for(run, 3)
    assert mover.greets == [True]
    assert store.history == []
