"""Item 6: every Voice Live failure is one breaker outcome, and the caller never sits in silence."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from emulators.runner import free_port
from emulators.speechlike import silence_ulaw, speechlike_ulaw
from flags.breaker import Outcome, TrialPermit
from tests.realtime.controlled_connector import ControlledConnector
from tests.realtime.harness import PUBLIC_BASE_URL, Harness, new_call_sid
from tests.realtime.twilio_client import TwilioMediaClient, wait_until

SPEECH = speechlike_ulaw(900, seed=2) + silence_ulaw(800)
LEGACY_REDIRECT = {"Url": f"{PUBLIC_BASE_URL}/legacy/start", "Method": "POST"}
LEGACY_GREET = {"Url": f"{PUBLIC_BASE_URL}/legacy/start?greet=1", "Method": "POST"}


def _saw(harness: Harness, index: int, server_event: str) -> bool:
    sessions = harness.voicelive.sessions
    return (
        len(sessions) > (index if index >= 0 else -index - 1)
        and server_event in sessions[index].server_events
    )


async def _lose_the_session_after_a_played_reply(
    harness: Harness, connector: ControlledConnector, twilio: TwilioMediaClient
) -> None:
    """The caller speaks, the reply is done and has played; then the first session's socket drops."""
    await twilio.send_audio(SPEECH)
    await twilio.wait_for(lambda: _saw(harness, 0, "response.done"))
    await twilio.wait_for(lambda: not twilio._queue and len(twilio.marks_echoed) >= 1)
    assert harness.server.loop is not None
    harness.server.loop.call_soon_threadsafe(connector.abort, 0)


async def _assert_moved(
    harness: Harness, twilio: TwilioMediaClient, call_sid: str, reason: str, *, heard_agent: bool = False
) -> None:
    """``heard_agent``: the caller heard the agent before the move, so legacy carries on; otherwise it greets."""
    await wait_until(lambda: bool(harness.rest.updates_for(call_sid)))
    # Twilio runs the redirect and ends the stream itself; the bridge must not hang up first.
    assert not twilio.closed.is_set()
    await twilio.stop()
    await twilio.wait_closed()
    assert harness.rest.updates_for(call_sid) == [LEGACY_REDIRECT if heard_agent else LEGACY_GREET]
    record = await harness.call(call_sid)
    assert record["moved_to_legacy"] is True
    assert record["move_reason"] == reason
    assert harness.metric("voice_router_fallbacks_total", reason=reason) == 1


async def test_connection_refused_is_a_connect_failure_and_moves_the_call(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(voicelive_endpoint=f"http://127.0.0.1:{free_port()}")
    call_sid = new_call_sid()
    await harness.register_call(call_sid)
    async with harness.client(call_sid) as twilio:
        await twilio.start()
        await twilio.send_audio(SPEECH[:1600])
        await _assert_moved(harness, twilio, call_sid, "voicelive_unreachable")
    assert await harness.wait_call_field(call_sid, "breaker_outcome") == "connect_failure"
    assert await harness.breaker_window() == (1, 1, 0)
    assert not twilio.events("media")


async def test_handshake_rejected_is_a_connect_failure(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness()
    harness.voicelive.faults.update(reject_handshake_status=503)
    recorded: list[tuple[str, TrialPermit | None]] = []
    real_record = harness.breaker.record

    async def spy(outcome: Outcome, *, trial: TrialPermit | None = None) -> None:
        recorded.append((outcome.value, trial))
        await real_record(outcome, trial=trial)

    harness.breaker.record = spy  # type: ignore[method-assign]
    call_sid = new_call_sid()
    await harness.register_call(call_sid, trial=TrialPermit(7))
    async with harness.client(call_sid) as twilio:
        await twilio.start()
        await _assert_moved(harness, twilio, call_sid, "voicelive_handshake_failed")
    assert await harness.wait_call_field(call_sid, "breaker_outcome") == "connect_failure"
    assert harness.voicelive.state.connections_rejected == 1
    record = await harness.call(call_sid)
    (failed,) = [event for event in record["events"] if event["type"] == "voicelive_failed"]
    assert (failed["reason"], failed["code"]) == ("voicelive_handshake_failed", 503), "the upgrade's status"
    # The router admitted it as a half-open trial: its outcome is recorded as the trial's.
    assert recorded == [("connect_failure", TrialPermit(7))]


async def test_session_updated_timeout_is_a_failure(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(settings_overrides={"realtime_session_ready_timeout_seconds": 0.3})
    harness.voicelive.faults.update(drop_session_updated=True)
    call_sid = new_call_sid()
    await harness.register_call(call_sid)
    async with harness.client(call_sid) as twilio:
        await twilio.start()
        await twilio.send_audio(SPEECH[:1600])
        await _assert_moved(harness, twilio, call_sid, "voicelive_session_not_ready")
    assert await harness.wait_call_field(call_sid, "breaker_outcome") == "failure"
    session = harness.voicelive.sessions[0]
    # Nothing but the session.update was sent to an unconfirmed session.
    assert list(session.client_events) == ["session.update"]
    assert session.append_count == 0


async def test_slow_first_audio_is_recorded_slow_and_the_call_goes_on(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(
        settings_overrides={"breaker_slow_call_seconds": 0.3},
        profile_overrides={"greeting": "Hi."},
    )
    # 1.2 s past the 0.3 s deadline, so that the outcome is written and read back before the audio comes even
    # on a slow box (a 0.4 s gap was not enough under CPU contention).
    harness.voicelive.faults.update(first_audio_ms=1500)
    call_sid = new_call_sid()
    await harness.register_call(call_sid)
    async with harness.client(call_sid) as twilio:
        await twilio.start()
        assert await harness.wait_call_field(call_sid, "breaker_outcome") == "slow"
        assert not twilio.events("media")  # recorded at the deadline, before any audio came
        await twilio.wait_for(lambda: len(twilio.marks_echoed) >= 1)
        await twilio.stop()
        await twilio.wait_closed()
    assert await harness.breaker_window() == (1, 0, 1)
    assert not harness.rest.updates_for(call_sid)


async def test_fatal_error_reconnects_once_then_moves_to_legacy(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(profile_overrides={"greeting": "Hi."})
    harness.voicelive.faults.update(error_after_deltas=0)  # every response fails with server_error
    call_sid = new_call_sid()
    await harness.register_call(call_sid)
    async with harness.client(call_sid) as twilio:
        await twilio.start()
        await _assert_moved(harness, twilio, call_sid, "voicelive_error")
    assert await harness.wait_call_field(call_sid, "breaker_outcome") == "failure"
    sessions = harness.voicelive.sessions
    assert len(sessions) == 2  # exactly one quick reconnect
    # The reconnect re-asked for the reply the caller was waiting for.
    assert "response.create" in sessions[1].client_events
    assert await harness.breaker_window() == (1, 1, 0)
    record = await harness.call(call_sid)
    losses = [(e["cause"], e["code"]) for e in record["events"] if e["type"] == "voicelive_lost"]
    assert losses == [("error", "internal_server_error")] * 2, "the error event's code"


async def test_socket_loss_reconnects_with_the_conversation(make_harness: Callable[..., Harness]) -> None:
    connector = ControlledConnector()
    harness = make_harness(connector=connector)
    call_sid = new_call_sid()
    await harness.register_call(call_sid)
    async with harness.client(call_sid) as twilio:
        await twilio.start()
        await _lose_the_session_after_a_played_reply(harness, connector, twilio)
        await twilio.wait_for(lambda: len(harness.voicelive.sessions) == 2)
        second = harness.voicelive.sessions[1]
        await twilio.wait_for(lambda: second.client_events.count("conversation.item.create") == 2)
        # The call goes on in the new session: the next utterance gets a reply.
        before = len(twilio.marks_echoed)
        await twilio.send_audio(speechlike_ulaw(900, seed=3) + silence_ulaw(800))
        await twilio.wait_for(lambda: len(twilio.marks_echoed) > before + 1)
        await twilio.stop()
        await twilio.wait_closed()
    replayed = second.last_client_event["conversation.item.create"]["item"]
    assert replayed["role"] == "assistant"
    assert replayed["content"] == [{"type": "text", "text": "Hello there, how can I help you today?"}]
    record = await harness.call(call_sid)
    assert record["realtime"]["reconnects"] == 1
    assert not record["moved_to_legacy"]
    # Success was decided at first audio; the later loss is reported too, as a second sample, so a service
    # that drops calls mid-way still trips the breaker.
    assert record["breaker_outcome"] == "success"
    assert record["breaker_late_failure"] == "failure"
    assert await harness.breaker_window() == (2, 1, 0)
    lost = [event for event in record["events"] if event["type"] == "voicelive_lost"]
    assert [(e["cause"], e["code"]) for e in lost] == [("lost", 1006)], "dropped with no close frame: 1006"


async def test_socket_loss_with_refused_reconnect_moves_the_call(
    make_harness: Callable[..., Harness],
) -> None:
    connector = ControlledConnector()
    connector.refuse_after = 1
    harness = make_harness(connector=connector)
    call_sid = new_call_sid()
    await harness.register_call(call_sid)
    async with harness.client(call_sid) as twilio:
        await twilio.start()
        await twilio.wait_for(lambda: bool(connector.connections))
        # The bridge forwards caller audio only once session.updated has confirmed the session: from then on a
        # lost socket is a mid-call loss (before, it is a failure at call start, with its own reason).
        await twilio.send_audio(silence_ulaw(100))
        await twilio.wait_for(
            lambda: bool(harness.voicelive.sessions) and harness.voicelive.sessions[0].append_count > 0
        )
        assert harness.server.loop is not None
        harness.server.loop.call_soon_threadsafe(connector.abort, 0)
        await _assert_moved(harness, twilio, call_sid, "voicelive_lost")
    assert await harness.wait_call_field(call_sid, "breaker_outcome") == "failure"
    assert await harness.breaker_window() == (1, 1, 0)


async def test_a_call_moved_mid_call_hands_its_conversation_to_legacy(
    make_harness: Callable[..., Harness],
) -> None:
    """The legacy pipeline reads a moved call's history (its greeting is not implied); nothing wrote it, so
    the first legacy turn of a moved call saw only the caller's newest words."""
    connector = ControlledConnector()
    connector.refuse_after = 1
    harness = make_harness(connector=connector)
    call_sid = new_call_sid()
    await harness.register_call(call_sid)
    async with harness.client(call_sid) as twilio:
        await twilio.start()
        await _lose_the_session_after_a_played_reply(harness, connector, twilio)
        await _assert_moved(harness, twilio, call_sid, "voicelive_lost", heard_agent=True)
    # The call log writes in order: the history goes before the move's event.
    for _ in range(250):
        if any(event["type"] == "moved_to_legacy" for event in (await harness.call(call_sid))["events"]):
            break
        await asyncio.sleep(0.02)
    history = await harness.on_server(harness.store.get_history(call_sid))
    assert [message["role"] for message in history] == ["user", "assistant"]
    assert history[1]["content"] == "Hello there, how can I help you today?"
    assert history[0]["content"]  # the emulator's transcript of the caller's words


async def test_session_expired_reconnects_without_a_failure(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(profile_overrides={"greeting": "Hi."})
    harness.voicelive.faults.update(expire_after_s=0.6)
    call_sid = new_call_sid()
    await harness.register_call(call_sid)
    async with harness.client(call_sid) as twilio:
        await twilio.start()
        await twilio.wait_for(lambda: len(harness.voicelive.sessions) >= 2)
        first = harness.voicelive.sessions[0]
        assert first.close_reason == "session_expired"
        harness.voicelive.faults.update(expire_after_s=None)
        await twilio.send_audio(SPEECH)
        await twilio.wait_for(lambda: _saw(harness, -1, "response.done"))
        await twilio.stop()
        await twilio.wait_closed()
    assert await harness.wait_call_field(call_sid, "breaker_outcome") == "success"
    assert not harness.rest.updates_for(call_sid)
    record = await harness.call(call_sid)
    assert record["realtime"]["reconnects"] >= 1


async def test_session_is_renewed_at_a_turn_boundary(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(settings_overrides={"realtime_session_max_age_seconds": 0.5})
    call_sid = new_call_sid()
    await harness.register_call(call_sid)
    async with harness.client(call_sid) as twilio:
        await twilio.start()
        await twilio.send_audio(SPEECH)
        await twilio.wait_for(lambda: _saw(harness, 0, "response.done"))
        await twilio.wait_for(lambda: len(harness.voicelive.sessions) >= 2)
        renewed = harness.voicelive.sessions[1]
        await twilio.wait_for(lambda: renewed.client_events.count("conversation.item.create") >= 2)
        # The old session was closed by us, cleanly, after the new one took over.
        await twilio.wait_for(lambda: harness.voicelive.sessions[0].closed)
        await twilio.stop()
        await twilio.wait_closed()
    record = await harness.call(call_sid)
    assert record["realtime"]["renewals"] >= 1
    assert record["breaker_outcome"] == "success"
    assert not record["moved_to_legacy"]
    texts = [renewed.last_client_event["conversation.item.create"]["item"]["content"][0]["text"]]
    assert texts == ["Hello there, how can I help you today?"]


def _held_breaker_store(harness: Harness) -> threading.Event:
    """The breaker's store does not answer (Redis near its socket timeout, say) until the event is set."""
    record = harness.breaker.record
    answer = threading.Event()

    async def held(outcome: Outcome, *, trial: TrialPermit | None = None) -> None:
        await asyncio.get_running_loop().run_in_executor(None, answer.wait, 30.0)
        await record(outcome, trial=trial)

    harness.breaker.record = held  # type: ignore[method-assign]
    return answer


async def test_a_stuck_breaker_store_does_not_hold_up_the_first_reply(
    make_harness: Callable[..., Harness],
) -> None:
    """The first audio decides the call's outcome; the greeting's later chunks used to wait for its write."""
    harness = make_harness(profile_overrides={"greeting": "Hi."})
    answer = _held_breaker_store(harness)
    call_sid = new_call_sid()
    await harness.register_call(call_sid)
    try:
        async with harness.client(call_sid) as twilio:
            await twilio.start()
            await twilio.wait_for(lambda: len(twilio.events("media")) >= 3)  # while the write is stuck
            answer.set()
            await twilio.stop()
            await twilio.wait_closed()
    finally:
        answer.set()
    await wait_until(lambda: harness.metric("voice_router_breaker_outcomes_total", outcome="success") == 1)
    assert await harness.breaker_window() == (1, 0, 0)


async def test_a_stuck_breaker_store_does_not_delay_the_move_to_legacy(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(voicelive_endpoint=f"http://127.0.0.1:{free_port()}")
    answer = _held_breaker_store(harness)
    call_sid = new_call_sid()
    await harness.register_call(call_sid)
    try:
        async with harness.client(call_sid) as twilio:
            await twilio.start()
            await wait_until(lambda: bool(harness.rest.updates_for(call_sid)))  # while the write is stuck
            answer.set()
            await twilio.stop()
            await twilio.wait_closed()
    finally:
        answer.set()
    assert (await harness.call(call_sid))["move_reason"] == "voicelive_unreachable"


async def test_a_turn_whose_reply_voice_live_lost_is_recorded_as_failed(
    make_harness: Callable[..., Harness],
) -> None:
    """The report's realtime turn errors were always 0: a turn whose reply died with its session (here the
    greeting, every response failing until the call moves to legacy) was written with no error, while the
    legacy pipeline records each failed turn with its stage."""
    harness = make_harness(profile_overrides={"greeting": "Hi."})
    harness.voicelive.faults.update(error_after_deltas=0)  # every response fails with server_error
    call_sid = new_call_sid()
    await harness.register_call(call_sid)
    async with harness.client(call_sid) as twilio:
        await twilio.start()
        await _assert_moved(harness, twilio, call_sid, "voicelive_error")
    turns: list[dict[str, object]] = []
    for _ in range(250):
        turns = await harness.turns(call_sid)
        if turns:
            break
        await asyncio.sleep(0.02)
    assert [(t["turn"], t["response_ms"]) for t in turns] == [(0, None)]
    assert turns[0]["error"] and "server_error" in str(turns[0]["error"])
    assert turns[0]["error_stage"] == "voicelive_error"


async def test_a_turn_answered_before_a_later_session_loss_is_not_failed(
    make_harness: Callable[..., Harness],
) -> None:
    """A loss after the reply played (nothing owed) fails no turn: the next one runs on the new session."""
    connector = ControlledConnector()
    harness = make_harness(connector=connector)
    call_sid = new_call_sid()
    await harness.register_call(call_sid)
    async with harness.client(call_sid) as twilio:
        await twilio.start()
        await _lose_the_session_after_a_played_reply(harness, connector, twilio)
        await twilio.wait_for(lambda: len(harness.voicelive.sessions) == 2)
        await twilio.stop()
        await twilio.wait_closed()
    turns: list[dict[str, object]] = []
    for _ in range(250):
        turns = await harness.turns(call_sid)
        if turns:
            break
        await asyncio.sleep(0.02)
    assert turns and all(t["error"] is None for t in turns)


async def test_sessions_that_stall_mid_reply_are_replaced_once_then_the_call_moves_to_legacy(
    make_harness: Callable[..., Harness],
) -> None:
    """Over real sockets: each emulated session goes quiet two deltas into its reply with its socket open. The
    bridge drops the first after ``REALTIME_STALL_SECONDS`` and asks a new one for the greeting; when that
    one stalls too, the call is moved to legacy instead of leaving the caller in silence."""
    harness = make_harness(
        settings_overrides={"realtime_stall_seconds": 0.5}, profile_overrides={"greeting": "Hi there."}
    )
    harness.voicelive.faults.update(stall_after_deltas=2)
    call_sid = new_call_sid()
    await harness.register_call(call_sid)
    async with harness.client(call_sid) as twilio:
        await twilio.start()
        await _assert_moved(harness, twilio, call_sid, "voicelive_stalled")
    first, second = harness.voicelive.sessions
    assert first.client_events.count("response.create") == second.client_events.count("response.create") == 1
    assert first.closed and second.closed
    record = await harness.call(call_sid)
    assert [e["cause"] for e in record["events"] if e["type"] == "voicelive_lost"] == ["stalled", "stalled"]
    assert (
        harness.metric("voice_router_turn_failures_total", pipeline="realtime", stage="voicelive_stalled")
        == 2
    )
