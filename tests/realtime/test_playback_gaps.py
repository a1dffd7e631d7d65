"""Mid-reply silences: Twilio's playback queue running dry while a reply is still arriving."""

from __future__ import annotations

import asyncio

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
    vl.push(audio_delta("a1", 100))
    vl.push(audio_delta("a1", 100))  # and the reply flows again: no second gap
    await until(lambda: len(ws.events("media")) == 3)
    ws.hang_up()
    await asyncio.wait_for(run, 3)
    (turn,) = [t for t in store.turns if t["turn"] == 1]
    assert turn["playback_gaps"] == 1 and turn["playback_gap_ms"] >= 2 * GAP_MS - 5
    realtime = store.merged["realtime"]
    assert realtime["playback_gaps"] == 1 and realtime["playback_gap_ms"] == round(turn["playback_gap_ms"])
