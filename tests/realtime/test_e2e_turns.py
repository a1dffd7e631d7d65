"""A normal turn, the greeting, barge-in and the PCM16 mode, end to end over real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np

from emulators.speechlike import silence_ulaw, speechlike_ulaw
from emulators.voicelive import VoiceLiveEmulator
from realtime_pipeline.audio import ulaw_to_pcm16
from tests.realtime.harness import Harness, new_call_sid

SPEECH = speechlike_ulaw(900, seed=1) + silence_ulaw(800)


async def test_normal_turn_streams_reply_and_records_latency(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness()
    call_sid = new_call_sid()
    await harness.register_call(call_sid)
    async with harness.client(call_sid) as twilio:
        await twilio.start()
        await twilio.send_audio(SPEECH)
        # The whole reply arrives and plays; every mark is echoed.
        await twilio.wait_for(lambda: len(twilio.marks_echoed) >= 3 and not twilio._queue)
        await twilio.wait_for(
            lambda: (
                harness.voicelive.sessions[0].responses.get(
                    next(iter(harness.voicelive.sessions[0].responses), ""), ""
                )
                == "completed"
            )
        )
        await twilio.stop()
        await twilio.wait_closed()

    session = harness.voicelive.sessions[0]
    assert session.session["input_audio_format"] == "g711_ulaw"
    assert session.session["output_audio_format"] == "g711_ulaw"
    assert session.session["voice"] == {"type": "azure-standard", "name": "en-US-AvaNeural"}
    assert session.client_events[0] == "session.update"
    assert session.appended_audio_ms == len(SPEECH) // 8  # every caller frame reached Voice Live
    # No greeting configured: the agent waited for the caller.
    assert "response.create" not in session.client_events
    assert twilio.audio and twilio.clears == 0
    names = [echo.name for echo in twilio.marks_echoed]
    assert len(set(names)) == len(names)  # unique mark per chunk

    outcome = await harness.wait_call_field(call_sid, "breaker_outcome")
    assert outcome == "success"
    assert await harness.breaker_window() == (1, 0, 0)
    turns = await harness.turns(call_sid)
    assert [t["turn"] for t in turns] == [1]
    turn = turns[0]
    assert turn["pipeline"] == "realtime"
    assert 0 < turn["response_ms"] <= turn["heard_ms"]
    assert turn["user_text"] == "Hi, I'd like to book a cleaning."
    assert turn["assistant_text"] == "Hello there, how can I help you today?"
    assert turn["usage"]["total_tokens"] > 0 and turn["usage"]["output_tokens"] > 0
    assert {"session_connect", "session_ready", "first_audio"} <= set(turn["stages"])
    assert not turn["interrupted"]
    assert turn["playback_gaps"] == 0, "a reply sent faster than it plays never runs dry"
    assert (
        harness.metric("voice_router_turn_latency_seconds_count", pipeline="realtime", stage="response") == 1
    )
    record = await harness.call(call_sid)
    assert record["realtime"]["frames_in"] == len(SPEECH) // 160
    assert not record["moved_to_legacy"]


async def test_greeting_plays_first(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(profile_overrides={"greeting": "Welcome to the test line."})
    call_sid = new_call_sid()
    await harness.register_call(call_sid)
    async with harness.client(call_sid) as twilio:
        await twilio.start()
        # Nothing sent by the caller, yet audio arrives: the agent speaks first.
        await twilio.wait_for(lambda: len(twilio.marks_echoed) >= 2)
        await twilio.stop()
        await twilio.wait_closed()
    session = harness.voicelive.sessions[0]
    assert list(session.client_events)[:2] == ["session.update", "response.create"]
    assert (
        "Welcome to the test line."
        in session.last_client_event["response.create"]["response"]["instructions"]
    )
    await harness.wait_call_field(call_sid, "breaker_outcome")
    turns = await harness.turns(call_sid)
    assert turns[0]["turn"] == 0
    assert turns[0]["response_ms"] > 0 and turns[0]["stages"]["first_audio"] > 0
    assert turns[0]["heard_ms"] >= turns[0]["response_ms"]


async def test_barge_in_clears_twilio_and_truncates_to_what_was_heard(
    make_harness: Callable[..., Harness],
) -> None:
    # Long greeting audio, played at 2x so the caller can talk over it.
    harness = make_harness(profile_overrides={"greeting": "Hello."})
    harness.voicelive.config.ms_per_char = 80
    call_sid = new_call_sid()
    await harness.register_call(call_sid)
    async with harness.client(call_sid, play_speed=2.0) as twilio:
        await twilio.start()
        await twilio.wait_for(lambda: len(twilio.marks_echoed) >= 2)
        heard_before_speaking = max(e.played_ms for e in twilio.marks_echoed)
        await twilio.send_audio(SPEECH)
        await twilio.wait_for(lambda: twilio.clears == 1)
        session = harness.voicelive.sessions[0]
        await twilio.wait_for(lambda: "conversation.item.truncate" in session.client_events)
        # The next reply (to the caller's interruption) plays normally afterwards.
        await twilio.wait_for(
            lambda: len(twilio.events("media")) > 0 and len({e.item_id for e in twilio.marks_echoed}) >= 2,
            within=15,
        )
        await twilio.stop()
        await twilio.wait_closed()

    truncate = session.last_client_event["conversation.item.truncate"]
    item_id = truncate["item_id"]
    echoed_positions = {e.played_ms for e in twilio.echoes if e.item_id == item_id and not e.cleared}
    assert truncate["content_index"] == 0
    assert truncate["audio_end_ms"] in {int(p) for p in echoed_positions}
    assert truncate["audio_end_ms"] >= int(heard_before_speaking)
    # Never more than what Twilio had played: the rest of that item was cleared unheard.
    assert twilio.played_by_item[item_id] >= truncate["audio_end_ms"]
    assert any(e.cleared and e.item_id == item_id for e in twilio.echoes)
    assert session.client_events.count("conversation.item.truncate") == 1
    assert "conversation.item.truncated" in session.server_events
    assert not session.errors_sent
    turns = await harness.turns(call_sid)
    assert turns[0]["interrupted"] is True
    assert turns[1]["heard_ms"] is not None  # late echoes of cleared marks did not confuse the next reply
    assert harness.metric("voice_router_barge_ins_total", pipeline="realtime") == 1


async def test_an_agent_the_profile_makes_uninterruptible_finishes_its_reply_over_the_caller(
    make_harness: Callable[..., Harness],
) -> None:
    """With ``interrupt_response: false`` Voice Live finishes the reply while the caller talks; the bridge
    used to clear Twilio and truncate anyway, so the caller heard the disclosure cut off while the model
    went on as if it had been said (and the rest of its audio was dropped as "cut")."""
    harness = make_harness(
        profile_overrides={"greeting": "Hello.", "turn_detection": {"interrupt_response": False}}
    )
    harness.voicelive.config.ms_per_char = 80
    call_sid = new_call_sid()
    await harness.register_call(call_sid)
    async with harness.client(call_sid, play_speed=2.0) as twilio:
        await twilio.start()
        await twilio.wait_for(lambda: len(twilio.marks_echoed) >= 2)
        await twilio.send_audio(SPEECH)  # over the greeting
        session = harness.voicelive.sessions[0]
        await twilio.wait_for(
            lambda: len(session.responses) >= 2, within=15
        )  # the caller is answered after it
        await twilio.wait_for(lambda: len({e.item_id for e in twilio.marks_echoed}) >= 2, within=15)
        await twilio.stop()
        await twilio.wait_closed()

    assert session.session["turn_detection"]["interrupt_response"] is False
    assert "input_audio_buffer.speech_started" in session.server_events
    assert twilio.clears == 0
    assert "conversation.item.truncate" not in session.client_events
    assert "conversation.item.delete" not in session.client_events
    greeting_id = next(iter(session.responses))
    assert session.responses[greeting_id] == "completed"
    turns = await harness.turns(call_sid)
    assert turns[0]["interrupted"] is False
    assert harness.metric("voice_router_barge_ins_total", pipeline="realtime") == 0


async def test_pcm16_mode_converts_both_directions(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(settings_overrides={"realtime_audio_mode": "pcm16"})
    call_sid = new_call_sid()
    await harness.register_call(call_sid)
    async with harness.client(call_sid) as twilio:
        await twilio.start()
        await twilio.send_audio(SPEECH)
        await twilio.wait_for(lambda: len(twilio.marks_echoed) >= 3 and not twilio._queue)
        await twilio.stop()
        await twilio.wait_closed()
    session = harness.voicelive.sessions[0]
    assert session.session["input_audio_format"] == "pcm16"
    assert session.session["input_audio_sampling_rate"] == 24000
    # soxr's stream emits in blocks (~60 ms at HQ for 20 ms input): at most that much is still held back.
    assert 0 <= len(SPEECH) // 8 - session.appended_audio_ms <= 80
    # ...and no append goes out empty while it fills a block: fewer appends than frames, all audio delivered.
    assert 0 < session.append_count < len(SPEECH) // 160
    assert "input_audio_buffer.speech_stopped" in session.server_events
    pcm = ulaw_to_pcm16(bytes(twilio.audio)).astype(np.float64)
    assert pcm.size > 8000 * 0.5  # reply audio came back as 8 kHz μ-law
    assert np.sqrt(np.mean(pcm**2)) > 300  # and it is not silence
    turns = await harness.turns(call_sid)
    assert turns and turns[0]["response_ms"] is not None


async def test_pcm16_barge_in_never_truncates_audio_still_inside_the_resampler(
    make_harness: Callable[..., Harness],
) -> None:
    """Mark positions used to count the 24 kHz audio received, which includes what soxr still holds and
    Twilio never got: the truncate then cut 17-72 ms the caller had not heard."""
    harness = make_harness(
        profile_overrides={"greeting": "Hello."}, settings_overrides={"realtime_audio_mode": "pcm16"}
    )
    harness.voicelive.config.ms_per_char = 80
    call_sid = new_call_sid()
    await harness.register_call(call_sid)
    async with harness.client(call_sid, play_speed=2.0) as twilio:
        await twilio.start()
        await twilio.wait_for(lambda: len(twilio.marks_echoed) >= 2)
        await twilio.send_audio(SPEECH)
        await twilio.wait_for(lambda: twilio.clears == 1)
        session = harness.voicelive.sessions[0]
        await twilio.wait_for(lambda: "conversation.item.truncate" in session.client_events)
        await twilio.stop()
        await twilio.wait_closed()
    truncate = session.last_client_event["conversation.item.truncate"]
    assert 0 < truncate["audio_end_ms"] <= twilio.played_by_item[truncate["item_id"]]


async def test_a_reply_voice_live_sends_slower_than_it_plays_is_recorded_as_choppy(
    make_harness: Callable[..., Harness],
) -> None:
    """The emulator streams the reply at a third of real time: Twilio plays each chunk out and waits for the
    next, and the caller hears the agent stutter. The turn, the call record and the metric say so."""
    harness = make_harness()
    harness.voicelive.faults.update(pace=1 / 3)
    call_sid = new_call_sid()
    await harness.register_call(call_sid)
    async with harness.client(call_sid) as twilio:
        await twilio.start()
        await twilio.send_audio(SPEECH)
        await twilio.wait_for(lambda: len(twilio.marks_echoed) >= 3, within=20)
        await twilio.stop()
        await twilio.wait_closed()

    (turn,) = await harness.turns(call_sid)
    assert turn["playback_gaps"] >= 2 and turn["playback_gap_ms"] >= 2 * 100
    record = await harness.call(call_sid)
    assert record["realtime"]["playback_gaps"] == turn["playback_gaps"]
    assert harness.metric("voice_router_playback_gap_seconds_count") == turn["playback_gaps"]


async def test_a_reply_stalled_for_a_second_then_resumed_plays_on_and_is_flagged_as_one_gap(
    make_harness: Callable[..., Harness],
) -> None:
    """A Voice Live hiccup mid-reply (the emulator holds its events, then delivers them): the call goes on on
    realtime, the reply plays to its end, and the caller's second of silence is on the turn."""
    harness = make_harness()
    harness.voicelive.faults.update(pace=2.0)  # twice real time: Twilio holds a little ahead, not a second
    harness.voicelive.config.ms_per_char = 80
    call_sid = new_call_sid()
    await harness.register_call(call_sid)
    async with harness.client(call_sid) as twilio:
        await twilio.start()
        await twilio.send_audio(SPEECH)
        await twilio.wait_for(lambda: len(twilio.events("media")) >= 2, within=15)
        harness.voicelive.faults.update(stall=True)
        await asyncio.sleep(1.0)
        harness.voicelive.faults.update(stall=False)
        session = harness.voicelive.sessions[0]
        await twilio.wait_for(lambda: "completed" in session.responses.values(), within=15)
        await twilio.wait_for(lambda: not twilio._queue, within=15)
        await twilio.stop()
        await twilio.wait_closed()

    (turn,) = await harness.turns(call_sid)
    assert turn["playback_gaps"] == 1 and turn["playback_gap_ms"] >= 500
    assert turn["error"] is None
    record = await harness.call(call_sid)
    assert record["breaker_outcome"] == "success" and not record["moved_to_legacy"]


async def test_a_silent_caller_is_reprompted_then_hung_up_on_once_the_goodbye_has_played(
    make_harness: Callable[..., Harness], voicelive: VoiceLiveEmulator
) -> None:
    """The profile's ``silence``: after the quiet spell the agent asks once, then says goodbye, and the call
    is ended through Twilio's REST API only when the goodbye's last mark has come back (P11)."""
    voicelive.config.replies = (
        "Are you still there?",
        "I can't hear you, so I'll end the call now. Goodbye!",
    )
    harness = make_harness(profile_overrides={"silence": {"reprompt_after_seconds": 0.4, "max_reprompts": 1}})
    call_sid = new_call_sid()
    await harness.register_call(call_sid)
    # Played at real time: the goodbye (about a second of audio) arrives far faster than it plays.
    async with harness.client(call_sid, play_speed=1.0) as twilio:
        await twilio.start()  # and says nothing
        await twilio.wait_for(lambda: bool(harness.rest.updates_for(call_sid)))
        assert len(twilio.marks_echoed) == len(twilio.events("mark")), "every mark heard before the hang-up"
        await twilio.stop()
        await twilio.wait_closed()
    assert harness.rest.updates_for(call_sid) == [{"Status": "completed"}]
    session = voicelive.sessions[0]
    assert list(session.responses.values()) == ["completed", "completed"]
    record = await harness.call(call_sid)
    assert (record["ended_by"], record["end_reason"]) == ("agent", "silence")
    assert record["realtime"]["silence_reprompts"] == 1
    assert harness.metric("voice_router_silence_hang_ups_total", pipeline="realtime") == 1
    assert not record["moved_to_legacy"]
