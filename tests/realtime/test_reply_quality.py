"""Mid-reply silences and false barge-ins: what the caller hears go wrong in a realtime reply."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from realtime_pipeline.playback_gaps import GAP_MS, PlaybackGaps
from tests.realtime.bridge_fakes import audio_delta, make_bridge, until


def test_audio_that_arrives_before_the_queue_drains_leaves_no_gap() -> None:
    gaps = PlaybackGaps()
    assert gaps.sent("a", 10.0, 100) == 0.0
    assert gaps.sent("a", 10.05, 100) == 0.0  # 50 ms in: 150 ms still queued
    assert gaps.sent("a", 10.2, 100) == 0.0  # drains at 10.3
    assert gaps.sent("a", 10.35, 20) == 0.0  # 50 ms dry: under the threshold, not counted
    assert (gaps.count, gaps.total_ms) == (0, 0.0)


def test_a_chunk_of_the_same_reply_after_the_queue_drained_is_a_gap_of_the_difference() -> None:
    gaps = PlaybackGaps()
    gaps.sent("a", 10.0, 100)  # plays until 10.1
    assert gaps.sent("a", 10.35, 100) == pytest.approx(250.0)
    assert gaps.sent("a", 10.4, 100) == 0.0  # the queue restarted at 10.35: plays until 10.55
    assert gaps.sent("a", 10.75, 100) == pytest.approx(200.0)
    assert gaps.count == 2
    assert (gaps.total_ms, gaps.longest_ms) == pytest.approx((450.0, 250.0))


def test_silence_between_replies_and_after_a_clear_is_not_a_gap() -> None:
    gaps = PlaybackGaps()
    gaps.sent("a", 10.0, 100)
    assert gaps.sent("b", 15.0, 100) == 0.0  # the next reply, seconds later
    gaps.cleared(15.05)  # barge-in: Twilio dropped the rest
    assert gaps.sent("b", 16.0, 100) == 0.0  # audio after a clear starts a new stretch
    assert gaps.count == 0


def test_a_new_reply_queued_behind_the_last_one_starts_when_it_ends() -> None:
    gaps = PlaybackGaps()
    gaps.sent("a", 10.0, 1000)  # plays until 11.0
    gaps.sent("b", 10.1, 100)  # queued behind it: plays 11.0-11.1
    assert gaps.sent("b", 11.05, 100) == 0.0
    assert gaps.sent("b", 11.5, 100) == pytest.approx(300.0)  # dry from 11.2


async def test_a_reply_that_stalls_mid_sentence_is_counted_in_its_turn_and_the_call() -> None:
    bridge, ws, client, _, _, store = make_bridge()
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    vl = client.opened[0]
    vl.push({"type": "input_audio_buffer.speech_stopped", "item_id": "u1", "audio_end_ms": 900})
    vl.push({"type": "response.created", "response": {"id": "r1"}})
    vl.push(audio_delta("a1", 100))
    await until(lambda: len(ws.events("media")) == 1)
    await asyncio.sleep((100 + 2 * GAP_MS) / 1000)  # Voice Live stalls: Twilio plays out and waits
    vl.push(audio_delta("a1", 500))
    vl.push(audio_delta("a1", 500))  # and the reply flows again (ahead of its playback): no second gap
    await until(lambda: len(ws.events("media")) == 3)
    ws.hang_up()
    await asyncio.wait_for(run, 3)
    (turn,) = [t for t in store.turns if t["turn"] == 1]
    assert turn["playback_gaps"] == 1 and turn["playback_gap_ms"] >= 2 * GAP_MS - 5
    realtime = store.merged["realtime"]
    # The call counts whole ms, the turn record keeps a tenth: 206.5 in the turn is 206 or 207 in the call.
    assert (
        realtime["playback_gaps"] == 1 and abs(realtime["playback_gap_ms"] - turn["playback_gap_ms"]) <= 0.5
    )


async def _barge_in_turn(transcript: str | None) -> dict[str, Any]:
    """A reply plays; the caller's utterance u2 cuts it off; its transcript (if any) arrives; the record of u2's
    turn."""
    bridge, ws, client, _, _, store = make_bridge()
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    vl = client.opened[0]
    vl.push({"type": "input_audio_buffer.speech_stopped", "item_id": "u1", "audio_end_ms": 900})
    vl.push({"type": "response.created", "response": {"id": "r1"}})
    vl.push(audio_delta("a1", 500))
    await until(lambda: len(ws.events("mark")) == 1)
    vl.push({"type": "input_audio_buffer.speech_started", "item_id": "u2", "audio_start_ms": 1500})
    await until(lambda: bool(ws.events("clear")))
    vl.push({"type": "input_audio_buffer.speech_stopped", "item_id": "u2", "audio_end_ms": 1900})
    if transcript is not None:
        vl.push(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": "u2",
                "content_index": 0,
                "transcript": transcript,
            }
        )
    vl.push({"type": "input_audio_buffer.speech_stopped", "item_id": "u3", "audio_end_ms": 5000})
    await until(lambda: len(store.turns) >= 2)
    ws.hang_up()
    await asyncio.wait_for(run, 3)
    (turn,) = [t for t in store.turns if t["turn"] == 2]
    assert [t["interrupted"] for t in store.turns if t["turn"] == 1] == [True]
    return turn


@pytest.mark.parametrize(
    ("transcript", "false_interrupt"), [("", True), ("  ", True), ("wait, no", False), (None, None)]
)
async def test_a_barge_in_with_no_words_in_it_is_a_false_interrupt(
    transcript: str | None, false_interrupt: bool | None
) -> None:
    """Line noise or a cough that Voice Live's VAD takes for speech cuts the agent off (pain point P9): the
    turn of that utterance says so when its transcription came back empty, and says nothing without one."""
    assert (await _barge_in_turn(transcript))["false_interrupt"] is false_interrupt


async def test_an_utterance_that_cut_nothing_off_is_no_false_interrupt() -> None:
    bridge, ws, client, _, _, store = make_bridge()
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    vl = client.opened[0]
    vl.push({"type": "input_audio_buffer.speech_started", "item_id": "u1", "audio_start_ms": 0})
    vl.push({"type": "input_audio_buffer.speech_stopped", "item_id": "u1", "audio_end_ms": 900})
    transcription = {"type": "conversation.item.input_audio_transcription.completed", "item_id": "u1"}
    vl.push({**transcription, "content_index": 0, "transcript": ""})
    await asyncio.sleep(0.05)
    ws.hang_up()
    await asyncio.wait_for(run, 3)
    (turn,) = store.turns
    assert turn["false_interrupt"] is None and not ws.events("clear")


async def test_a_stall_in_the_reply_asked_again_after_a_reconnect_clear_is_a_gap() -> None:
    """A reply lost mid-playback is cleared at Twilio before the new session answers again: the cleared
    audio no longer plays, so a stall in the new reply is silence the caller hears. The clear used to leave
    Twilio's modelled queue seconds long, and every stall shorter than that went uncounted."""
    bridge, ws, client, _, _, store = make_bridge()
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    vl = client.opened[0]
    vl.push({"type": "input_audio_buffer.speech_stopped", "item_id": "u1", "audio_end_ms": 900})
    vl.push(
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": "u1",
            "content_index": 0,
            "transcript": "Can I book Tuesday?",
        }
    )
    vl.push({"type": "response.created", "response": {"id": "r1"}})
    vl.push(audio_delta("a1", 3000))  # three seconds queued at Twilio, none of it played yet
    await until(lambda: len(ws.events("media")) == 1)
    vl.lose()
    await until(lambda: len(client.opened) == 2 and "response.create" in client.opened[1].types())
    assert len(ws.events("clear")) == 1
    second = client.opened[1]
    second.push({"type": "response.created", "response": {"id": "r2"}})
    second.push(audio_delta("b1", 100, "r2"))
    await until(lambda: len(ws.events("media")) == 2)
    await asyncio.sleep((100 + 2 * GAP_MS) / 1000)  # the new reply stalls: Twilio plays it out and waits
    second.push(audio_delta("b1", 100, "r2"))
    await until(lambda: len(ws.events("media")) == 3)
    ws.hang_up()
    await asyncio.wait_for(run, 3)
    assert bridge.stats["playback_gaps"] == 1
    (turn,) = [t for t in store.turns if t["turn"] == 1]
    assert turn["playback_gaps"] == 1 and turn["playback_gap_ms"] >= 2 * GAP_MS - 5


async def test_a_caller_who_talks_into_a_gap_of_a_slow_reply_barges_in() -> None:
    """Twilio has played all it had of the reply (Voice Live is slow) when the caller starts talking: nothing
    to clear, but the reply is not over. Its late audio would play over the caller (P1), and Voice Live would
    believe it was all heard; it counts as the barge-in it is."""
    bridge, ws, client, _, _, store = make_bridge()
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    vl = client.opened[0]
    vl.push({"type": "input_audio_buffer.speech_stopped", "item_id": "u1", "audio_end_ms": 900})
    vl.push({"type": "response.created", "response": {"id": "r1"}})
    vl.push(audio_delta("a1", 100))
    await until(lambda: len(ws.events("mark")) == 1)
    ws.mark(ws.events("mark")[0]["mark"]["name"])  # played out: nothing queued at Twilio
    await asyncio.sleep(0.05)
    vl.push({"type": "input_audio_buffer.speech_started", "item_id": "u2", "audio_start_ms": 1500})
    await until(lambda: any(e["type"] == "conversation.item.truncate" for e in vl.sent))
    [truncate] = [e for e in vl.sent if e["type"] == "conversation.item.truncate"]
    assert (truncate["item_id"], truncate["audio_end_ms"]) == ("a1", 100)
    vl.push(audio_delta("a1", 200))  # in flight when Voice Live cancelled the reply
    vl.push({"type": "response.done", "response": {"id": "r1", "status": "cancelled"}})
    await asyncio.sleep(0.05)
    assert len(ws.events("media")) == 1, "the reply's late audio is not played over the caller"
    assert bridge.stats["barge_ins"] == 1
    ws.hang_up()
    await asyncio.wait_for(run, 3)
    [turn] = [t for t in store.turns if t["turn"] == 1]
    assert turn["interrupted"] is True


async def test_words_transcribed_after_the_callers_next_utterance_still_reach_their_turn() -> None:
    """Voice Live's transcription of an utterance is asynchronous: it can come after the caller's next
    utterance has ended (and that turn begun). The turn's record was written at that moment, so its words
    (and whether its barge-in was a false one) were lost, though the bridge kept the turn for them."""
    bridge, ws, client, _, _, store = make_bridge(
        session={"input_audio_format": "g711_ulaw", "input_audio_transcription": {"model": "azure-speech"}}
    )
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    vl = client.opened[0]
    transcription = {"type": "conversation.item.input_audio_transcription.completed", "content_index": 0}
    vl.push({"type": "input_audio_buffer.speech_stopped", "item_id": "u1", "audio_end_ms": 900})
    vl.push({"type": "response.created", "response": {"id": "r1"}})
    vl.push(audio_delta("a1", 2000))
    await until(lambda: len(ws.events("media")) == 1)
    vl.push({"type": "input_audio_buffer.speech_started", "item_id": "u2", "audio_start_ms": 1000})
    vl.push({"type": "response.done", "response": {"id": "r1", "status": "cancelled"}})
    vl.push({"type": "input_audio_buffer.speech_stopped", "item_id": "u2", "audio_end_ms": 1200})
    vl.push({"type": "input_audio_buffer.speech_started", "item_id": "u3", "audio_start_ms": 1800})
    vl.push({"type": "input_audio_buffer.speech_stopped", "item_id": "u3", "audio_end_ms": 2900})
    vl.push({**transcription, "item_id": "u1", "transcript": "Can I book Tuesday?"})
    vl.push({**transcription, "item_id": "u2", "transcript": ""})
    vl.push({**transcription, "item_id": "u3", "transcript": "Hello?"})
    await asyncio.sleep(0.05)
    ws.hang_up()
    await asyncio.wait_for(run, 3)
    turns = {t["turn"]: t for t in store.turns}
    assert sorted(turns) == [1, 2, 3] and [t["turn"] for t in store.turns] == [1, 2, 3]
    assert [turns[n]["user_text"] for n in (1, 2, 3)] == ["Can I book Tuesday?", "", "Hello?"]
    assert turns[2]["false_interrupt"] is True, "a barge-in with no words in it"
