"""A caller who goes quiet on a realtime call (realtime_pipeline/silence.py), in process: the agent re-prompts,
then says goodbye and hangs up once the goodbye has been heard, and never while someone is talking."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from realtime_pipeline.bridge import BridgeConfig, CallBridge
from tests.realtime.bridge_fakes import (
    CALL_SID,
    STREAM_SID,
    FakeClient,
    FakeConnection,
    FakeMover,
    FakeStore,
    FakeWS,
    audio_delta,
    make_bridge,
    until,
)

QUIET = 0.15  # seconds of silence before the agent re-prompts
CONFIG = BridgeConfig(
    silence_reprompt_seconds=QUIET,
    silence_reprompt="Still there?",
    silence_max_reprompts=2,
    silence_goodbye="Bye now.",
)


@dataclass
class Call:
    bridge: CallBridge
    ws: FakeWS
    vl: FakeConnection
    mover: FakeMover
    store: FakeStore
    echoed: int = 0

    def prompts(self) -> list[str]:
        """The instructions of every response.create the bridge sent, oldest first."""
        return [e["response"]["instructions"] for e in self.vl.sent if e["type"] == "response.create"]

    def speak(self, response_id: str, ms: int = 100) -> None:
        """Voice Live answers the newest response.create with ``ms`` of audio."""
        self.vl.push({"type": "response.created", "response": {"id": response_id}})
        self.vl.push(audio_delta(f"item_{response_id}", ms, response_id))
        self.vl.push({"type": "response.done", "response": {"id": response_id, "status": "completed"}})

    async def hear_all(self) -> None:
        """Twilio plays what it was sent: every mark so far comes back."""
        await until(lambda: len(self.ws.events("mark")) > self.echoed or bool(self.mover.hang_ups))
        marks = self.ws.events("mark")
        for mark in marks[self.echoed :]:
            self.ws.mark(mark["mark"]["name"])
        self.echoed = len(marks)


@contextlib.asynccontextmanager
async def calling(config: BridgeConfig = CONFIG, **options: Any) -> AsyncIterator[Call]:
    bridge, ws, client, mover, _, store = make_bridge(config=config, **options)
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    yield Call(bridge, ws, client.opened[0], mover, store)
    ws.hang_up()
    await asyncio.wait_for(run, 3)


def speech(item_id: str) -> list[dict[str, Any]]:
    return [
        {"type": "input_audio_buffer.speech_started", "item_id": item_id, "audio_start_ms": 0},
        {"type": "input_audio_buffer.speech_stopped", "item_id": item_id, "audio_end_ms": 900},
    ]


async def test_a_quiet_caller_is_reprompted_then_told_goodbye_and_hung_up_on_once_it_is_heard() -> None:
    async with calling(session={"input_audio_format": "g711_ulaw", "tools": [{"name": "t"}]}) as call:
        for n, response_id in enumerate(("r_prompt1", "r_prompt2"), start=1):
            await until(lambda n=n: len(call.prompts()) == n)  # type: ignore[misc]
            assert call.prompts()[-1].endswith("Say exactly this, and nothing else: Still there?")
            call.speak(response_id)
            await call.hear_all()
        await until(lambda: len(call.prompts()) == 3)
        assert call.prompts()[-1].endswith("Say exactly this, and nothing else: Bye now.")
        assert all(
            e["response"]["tool_choice"] == "none" for e in call.vl.sent if e["type"] == "response.create"
        )
        call.speak("r_bye", ms=300)
        await until(lambda: len(call.ws.events("mark")) > call.echoed)
        await asyncio.sleep(QUIET * 2)
        assert call.mover.hang_ups == [], "not before the caller has heard the goodbye (P11)"
        await call.hear_all()
        await until(lambda: bool(call.mover.hang_ups))
        assert call.mover.hang_ups == [(CALL_SID, "silence")]
    assert call.bridge.stats["silence_reprompts"] == 2
    assert call.store.merged["ended_by"] == "agent" and call.store.merged["end_reason"] == "silence"
    kinds = [e["type"] for e in call.store.events]
    assert kinds.count("silence_reprompt") == 2 and "silence_goodbye" in kinds and "hang_up" in kinds


async def test_a_caller_who_answers_starts_the_count_again() -> None:
    async with calling() as call:
        await until(lambda: len(call.prompts()) == 1)
        call.speak("r_prompt1")
        await call.hear_all()
        await until(lambda: len(call.prompts()) == 2)
        for event in speech("u1"):  # "yes, I'm here" (over the second re-prompt: a barge-in)
            call.vl.push(event)
        call.speak("r_answer")
        await call.hear_all()
        await until(lambda: len(call.prompts()) == 4)  # two more re-prompts before any goodbye
        assert all(p.endswith("Still there?") for p in call.prompts()[2:])
        assert call.mover.hang_ups == []


async def test_a_caller_who_speaks_over_the_goodbye_is_not_hung_up_on() -> None:
    async with calling(BridgeConfig(silence_reprompt_seconds=QUIET, silence_max_reprompts=0)) as call:
        await until(lambda: len(call.prompts()) == 1)  # straight to the goodbye
        call.vl.push({"type": "response.created", "response": {"id": "r_bye"}})
        call.vl.push(audio_delta("item_bye", 300, "r_bye"))
        await until(lambda: bool(call.ws.events("media")))
        for event in speech("u1"):
            call.vl.push(event)
        call.vl.push({"type": "response.done", "response": {"id": "r_bye", "status": "cancelled"}})
        await asyncio.sleep(QUIET / 2)
        assert call.mover.hang_ups == []
        assert call.ws.events("clear"), "the goodbye was cut off by the caller"


async def test_no_reprompt_while_the_agent_is_still_being_heard() -> None:
    """Silence is counted from the end of the agent's audio at Twilio, not from when Voice Live sent it."""
    async with calling() as call:
        call.speak("r_long", ms=2000)
        await until(lambda: bool(call.ws.events("mark")))
        await asyncio.sleep(QUIET * 3)  # Twilio is still playing it: no mark came back
        assert call.prompts() == []
        await call.hear_all()
        await asyncio.sleep(QUIET / 3)
        assert call.prompts() == []
        await until(lambda: len(call.prompts()) == 1)


async def test_a_goodbye_the_service_never_speaks_still_ends_the_call() -> None:
    async with calling(BridgeConfig(silence_reprompt_seconds=QUIET, silence_max_reprompts=0)) as call:
        await until(lambda: len(call.prompts()) == 1)
        await until(lambda: bool(call.mover.hang_ups), within=QUIET * 10)


async def test_a_refused_hang_up_is_recorded_and_the_line_left_open() -> None:
    async with calling(BridgeConfig(silence_reprompt_seconds=QUIET, silence_max_reprompts=0)) as call:
        call.mover.accept_hang_up = False
        await until(lambda: len(call.prompts()) == 1)
        call.speak("r_bye")
        await call.hear_all()
        await until(lambda: bool(call.mover.hang_ups))
        await asyncio.sleep(QUIET * 3)
        assert len(call.mover.hang_ups) == 1 and len(call.prompts()) == 1, "not tried again, no more prompts"
    assert call.store.merged["hang_up_failed"] == "silence" and call.store.merged["ended_by"] is None


async def test_off_by_default_in_the_bridge() -> None:
    async with calling(BridgeConfig()) as call:
        await asyncio.sleep(0.3)
        assert call.prompts() == []


async def test_a_goodbye_asked_of_a_session_lost_before_it_began_is_asked_of_the_next() -> None:
    """The goodbye is what the caller is owed until it begins: a session lost before it began is replaced,
    and the new one says it, rather than the call being ended unannounced (P11)."""
    async with calling(BridgeConfig(silence_reprompt_seconds=QUIET, silence_max_reprompts=0)) as call:
        client = call.bridge._client
        await until(lambda: len(call.prompts()) == 1)
        call.vl.lose()
        await until(lambda: call.bridge.stats["reconnects"] == 1)
        second = client.opened[1]  # type: ignore[attr-defined]
        asked = [e for e in second.sent if e["type"] == "response.create"]
        assert [e["response"]["instructions"] for e in asked] == call.prompts()
        call.vl = second
        call.speak("r_bye")
        await until(lambda: bool(call.ws.events("media")))
        assert call.mover.hang_ups == []
        await call.hear_all()
        await until(lambda: bool(call.mover.hang_ups))


async def test_a_renewal_does_not_swap_out_a_session_asked_for_a_silence_prompt() -> None:
    """The prompt went to the serving session while the next one was opening: swapped in, the next session
    would never say it (and a goodbye asked that way would end the call unannounced)."""
    config = BridgeConfig(
        silence_reprompt_seconds=QUIET, silence_max_reprompts=0, session_max_age_seconds=0.1
    )
    client = FakeClient()
    async with calling(config, client=client) as call:
        gate = client.gate = asyncio.Event()  # the renewal's open waits
        await until(lambda: len(call.prompts()) == 1)  # the goodbye, asked meanwhile
        gate.set()
        await until(lambda: len(client.opened) >= 2)
        await asyncio.sleep(0.02)
        call.speak("r_bye")
        await until(lambda: bool(call.ws.events("media")) or bool(call.mover.hang_ups))
        assert call.ws.events("media") and call.mover.hang_ups == [], "the goodbye plays before the hang-up"
        await call.hear_all()
        await until(lambda: bool(call.mover.hang_ups))


async def _answered_then_goodbye_asked(call: Call) -> str:
    """The caller speaks and hears the answer, then stays quiet until the goodbye is asked for; returns its
    instructions."""
    for event in speech("u1"):
        call.vl.push(event)
    call.speak("r_answer")
    await call.hear_all()
    await until(lambda: len(call.prompts()) == 1)
    return call.prompts()[-1]


async def _goodbye_heard_and_hang_up_sent(call: Call) -> None:
    """An answered turn, the goodbye asked for, spoken and heard: the agent has asked Twilio to hang up."""
    await _answered_then_goodbye_asked(call)
    call.speak("r_bye")
    await call.hear_all()
    await until(lambda: bool(call.mover.hang_ups))


def _asked_of(connection: Any) -> list[str | None]:
    return [e["response"].get("instructions") for e in connection.sent if e["type"] == "response.create"]


async def test_a_goodbye_asked_again_after_a_loss_keeps_its_words_and_fails_no_answered_turn() -> None:
    """The caller's last words were answered (their transcript never came): a session lost before the goodbye
    began is no lost reply to them, and the new session says the goodbye, not "could you repeat that?"."""
    async with calling(BridgeConfig(silence_reprompt_seconds=QUIET, silence_max_reprompts=0)) as call:
        client = call.bridge._client
        goodbye = await _answered_then_goodbye_asked(call)
        call.vl.lose()
        await until(lambda: call.bridge.stats["reconnects"] == 1)
        second = client.opened[1]  # type: ignore[attr-defined]
        assert _asked_of(second) == [goodbye]
    [turn] = call.store.turns
    assert turn["error"] is None, "its reply was heard before the session was lost"


async def test_a_goodbye_cut_off_by_a_lost_session_is_said_again_in_full_then_the_call_ends() -> None:
    """Asked again with a bare response.create, the new session would say whatever it liked, and the hang-up
    would follow that instead of the goodbye."""
    async with calling(BridgeConfig(silence_reprompt_seconds=QUIET, silence_max_reprompts=0)) as call:
        client = call.bridge._client
        goodbye = await _answered_then_goodbye_asked(call)
        call.vl.push({"type": "response.created", "response": {"id": "r_bye"}})
        call.vl.push(audio_delta("item_bye", 300, "r_bye"))
        await until(lambda: len(call.ws.events("mark")) > call.echoed)
        call.vl.lose()
        await until(lambda: call.bridge.stats["reconnects"] == 1)
        second = client.opened[1]  # type: ignore[attr-defined]
        assert _asked_of(second) == [goodbye]
        assert call.ws.events("clear"), "the rest of the cut goodbye is not played"
        await call.hear_all()  # Twilio echoes the marks of what it cleared at once
        call.vl = second
        call.speak("r_bye2")
        await call.hear_all()
        await until(lambda: bool(call.mover.hang_ups))
    [turn] = call.store.turns
    assert turn["error"] is None, "the answered turn did not fail with the goodbye's session"


async def test_a_session_lost_once_the_call_is_being_hung_up_is_not_replaced_nor_the_call_moved() -> None:
    """After the goodbye was heard and the hang-up sent, the session's socket may close with the call: a new
    (billed) session, a breaker failure and a move of an ending call to legacy would all be wrong."""
    config = BridgeConfig(silence_reprompt_seconds=QUIET, silence_max_reprompts=0)
    bridge, ws, client, mover, breaker, store = make_bridge(config=config)
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    call = Call(bridge, ws, client.opened[0], mover, store)
    await _goodbye_heard_and_hang_up_sent(call)
    call.vl.lose()  # Twilio has not ended the stream yet
    await asyncio.sleep(0.1)
    assert len(client.opened) == 1, "no new session"
    assert mover.moves == []
    assert ("failure", None) not in breaker.recorded
    ws.hang_up()
    await asyncio.wait_for(run, 3)


async def test_a_session_lost_while_twilio_is_still_asked_to_hang_up_does_not_end_the_stream_first() -> None:
    """The bridge used to end the moment the session was lost once the hang-up was sent: the REST call still on
    its way was cancelled, and the stream closed, so Twilio went on with <Connect action> (legacy's greeting)
    for the caller who had just been told goodbye, instead of hanging up."""
    config = BridgeConfig(silence_reprompt_seconds=QUIET, silence_max_reprompts=0)
    bridge, ws, client, mover, _, store = make_bridge(config=config)
    twilio_answers = asyncio.Event()
    cancelled: list[bool] = []

    async def slow_hang_up(call_sid: str, reason: str) -> bool:
        mover.hang_ups.append((call_sid, reason))
        try:
            await twilio_answers.wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return True

    mover.hang_up = slow_hang_up  # type: ignore[method-assign]
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    call = Call(bridge, ws, client.opened[0], mover, store)
    await _goodbye_heard_and_hang_up_sent(call)
    call.vl.lose()  # Twilio's REST API has not answered yet
    await asyncio.sleep(0.1)
    assert not run.done(), "the stream is left for Twilio to end"
    twilio_answers.set()
    await asyncio.sleep(0.05)
    assert cancelled == [], "the hang-up reached Twilio"
    ws.hang_up()  # Twilio ends the stream as it ends the call
    await asyncio.wait_for(run, 3)
    assert store.merged["ended_by"] == "agent"
    assert len(client.opened) == 1 and mover.moves == []


async def test_a_reprompt_after_words_that_got_no_reply_is_not_recorded_as_their_reply() -> None:
    """The caller's words began no reply (a filler the service did not answer), and the line went quiet: the
    "are you still there?" that followed, seconds later, was recorded as that turn's reply, a response_ms and
    heard_ms of the silence plus the prompt in the turn's record and in the latency histogram."""
    config = BridgeConfig(silence_reprompt_seconds=QUIET, silence_max_reprompts=1, reply_wait_seconds=0.05)
    async with calling(config) as call:
        for event in speech("u1"):
            call.vl.push(event)
        await until(lambda: len(call.prompts()) == 1)
        call.speak("r_prompt1")
        await call.hear_all()
        await until(lambda: len(call.prompts()) == 2)  # the goodbye: the reprompt was heard
        metrics = call.bridge._metrics
    [turn] = call.store.turns
    assert turn["turn"] == 1
    assert turn["response_ms"] is None and turn["heard_ms"] is None, "no reply to the caller's words came"
    assert "first_audio" not in turn["stages"]
    count = "voice_router_turn_latency_seconds_count"
    assert not metrics.registry.get_sample_value(count, {"pipeline": "realtime", "stage": "response"})


async def test_a_reprompt_voice_live_fails_does_not_fail_the_answered_turn_before_it() -> None:
    """A failed response fails the turn whose reply it was. A silence prompt is no turn's reply: its failure
    marked the caller's last turn, answered and heard seconds before, as a turn error."""
    async with calling(BridgeConfig(silence_reprompt_seconds=QUIET, silence_max_reprompts=1)) as call:
        for event in speech("u1"):
            call.vl.push(event)
        call.speak("r_answer")
        await call.hear_all()
        await until(lambda: len(call.prompts()) == 1)
        call.vl.push({"type": "response.created", "response": {"id": "r_prompt"}})
        call.vl.push({"type": "response.done", "response": {"id": "r_prompt", "status": "failed"}})
        await asyncio.sleep(0.02)
    [turn] = call.store.turns
    assert turn["turn"] == 1 and turn["response_ms"] is not None
    assert turn["error"] is None, "its reply was given and heard"


async def test_no_session_is_renewed_once_the_agent_is_hanging_up() -> None:
    """Twilio takes a moment to end the stream after it accepts the hang-up: a session renewal falling due in
    that moment opened a new (billed) Voice Live session for a call that was over."""
    config = BridgeConfig(
        silence_reprompt_seconds=QUIET,
        silence_max_reprompts=0,
        silence_goodbye="Bye now.",
        session_max_age_seconds=0.8,
    )
    bridge, ws, client, mover, _, _ = make_bridge(config=config)
    run = asyncio.create_task(bridge.run())
    await until(lambda: bool(client.opened))
    call = Call(bridge, ws, client.opened[0], mover, FakeStore())
    await until(lambda: len(call.prompts()) == 1)  # straight to the goodbye
    call.speak("r_bye")
    await call.hear_all()
    await until(lambda: bool(mover.hang_ups))
    await asyncio.sleep(1.2)  # the session's age passes its limit while Twilio has not yet ended the stream
    assert len(client.opened) == 1
    ws.hang_up()
    await asyncio.wait_for(run, 3)


async def test_a_caller_pressing_keys_is_not_taken_for_a_silent_one() -> None:
    """A key press is the caller on the line: someone keying in a number was re-prompted, then hung up on."""
    async with calling() as call:
        for _ in range(8):  # 0.8 s of key presses, well past the 0.15 s of quiet that prompts
            call.ws.push(
                {"event": "dtmf", "streamSid": STREAM_SID, "dtmf": {"track": "inbound_track", "digit": "5"}}
            )
            await asyncio.sleep(0.1)
        assert call.prompts() == []
        await until(lambda: len(call.prompts()) == 1)  # quiet again: the silence counts from the last key


async def test_talking_over_a_reprompt_interrupts_no_turn() -> None:
    """A caller answering "are you still there?" over it marked their previous turn, answered and heard
    long before, as interrupted, and their answer as a barge-in on it (the report's interruption figures)."""
    async with calling(BridgeConfig(silence_reprompt_seconds=QUIET, silence_max_reprompts=1)) as call:
        for event in speech("u1"):
            call.vl.push(event)
        call.speak("r_answer")
        await call.hear_all()
        await until(lambda: len(call.prompts()) == 1)
        call.speak("r_prompt", ms=2000)  # queued at Twilio, not played yet
        await until(lambda: bool(call.ws.events("mark")) and len(call.ws.events("mark")) > call.echoed)
        for event in speech("u2"):
            call.vl.push(event)
        await until(lambda: bool(call.ws.events("clear")))  # the prompt is cut off
        call.speak("r_second")
        await call.hear_all()
    first, second = sorted(call.store.turns, key=lambda t: t["turn"])[:2]
    assert first["turn"] == 1 and not first["interrupted"]
    assert second["turn"] == 2 and second["false_interrupt"] is None  # no barge-in: nothing to judge
