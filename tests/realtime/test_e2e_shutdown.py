"""A deploy stops a worker with live realtime calls on it: the callers must not be dropped."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from emulators.speechlike import silence_ulaw, speechlike_ulaw
from router.store.factory import open_store
from tests.realtime.harness import Harness, new_call_sid
from tests.realtime.twilio_client import TwilioMediaClient, wait_until

SPEECH = speechlike_ulaw(900, seed=2) + silence_ulaw(800)


def _reply_played(harness: Harness, twilio: TwilioMediaClient) -> bool:
    sessions = harness.voicelive.sessions
    done = bool(sessions) and "response.done" in sessions[0].server_events
    return done and not twilio._queue and len(twilio.marks_echoed) >= 1


async def test_a_worker_shutting_down_hands_its_live_calls_to_twilio_with_1012(
    make_harness: Callable[..., Harness],
) -> None:
    """A deploy stops a worker with calls on it. uvicorn closes each media stream with 1012 (service restart);
    Twilio then runs the ``<Connect action>`` of the call's TwiML, which is ``/legacy/start``
    (``test_e2e_full_app``), so the caller goes on with legacy on another replica. Here: the close code Twilio
    sees, the Voice Live session closed rather than leaked, and no breaker failure for Voice Live."""
    harness = make_harness()
    call_sid = new_call_sid()
    await harness.register_call(call_sid)
    async with harness.client(call_sid) as twilio:
        await twilio.start()
        await twilio.send_audio(SPEECH[:1600])
        await wait_until(lambda: any(session.append_count > 0 for session in harness.voicelive.sessions))
        await asyncio.to_thread(harness.server.stop)
        assert await twilio.wait_closed() == 1012
    session = harness.voicelive.sessions[0]
    await wait_until(lambda: session.closed)
    # The worker is gone; read what it left in its store.
    store = open_store(harness.state_url)
    await store.open()
    try:
        record = await store.get_call(call_sid)
        assert record is not None and record["breaker_outcome"] == "success"  # not a Voice Live failure
        assert record["events"][-1]["type"] == "stream_ended"
    finally:
        await store.close()


async def test_a_call_handed_to_twilio_at_shutdown_leaves_its_conversation_for_legacy(
    make_harness: Callable[..., Harness],
) -> None:
    """Only a move through the REST API wrote the conversation for legacy. A stream closed by a deploy (1012),
    like one closed for a flood of frames, also goes on at ``/legacy/start``: its legacy turns started with
    no history, and the agent asked again what the caller had just said."""
    harness = make_harness()
    call_sid = new_call_sid()
    await harness.register_call(call_sid)
    async with harness.client(call_sid) as twilio:
        await twilio.start()
        await twilio.send_audio(SPEECH)
        await twilio.wait_for(lambda: _reply_played(harness, twilio))
        await asyncio.to_thread(harness.server.stop)
        assert await twilio.wait_closed() == 1012
    store = open_store(harness.state_url)
    await store.open()
    try:
        history = await store.get_history(call_sid)
        assert [message["role"] for message in history] == ["user", "assistant"], history
        assert history[1]["content"] == "Hello there, how can I help you today?"
    finally:
        await store.close()


async def test_a_call_the_caller_ended_writes_no_handover_history(
    make_harness: Callable[..., Harness],
) -> None:
    """Twilio's ``stop``: the call is over, and nothing goes on at legacy."""
    harness = make_harness()
    call_sid = new_call_sid()
    await harness.register_call(call_sid)
    async with harness.client(call_sid) as twilio:
        await twilio.start()
        await twilio.send_audio(SPEECH)
        await twilio.wait_for(lambda: _reply_played(harness, twilio))
        await twilio.stop()
        await twilio.wait_closed()
    await harness.wait_call_field(call_sid, "realtime")
    assert await harness.on_server(harness.store.get_history(call_sid)) == []
