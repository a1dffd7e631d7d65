"""A deploy stops a worker with live realtime calls on it: the callers must not be dropped."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from emulators.speechlike import silence_ulaw, speechlike_ulaw
from router.store.factory import open_store
from tests.realtime.harness import Harness, new_call_sid
from tests.realtime.twilio_client import wait_until

SPEECH = speechlike_ulaw(900, seed=2) + silence_ulaw(800)


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
