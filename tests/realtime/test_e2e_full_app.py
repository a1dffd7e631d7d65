"""The path a real Twilio call takes through the whole service (``create_app`` on uvicorn), over real sockets:
webhook → TwiML → signed Media Streams upgrade with the token from that TwiML → Voice Live → agent audio →
records → status callback; and what happens when the token is wrong or Voice Live is down."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import orjson
import pytest
import yaml

from emulators.speechlike import silence_ulaw, speechlike_ulaw
from emulators.tool_backend import ToolBackendEmulator
from emulators.twilio.media_stream import FRAME_BYTES
from emulators.twilio.rest import TwilioRestEmulator
from emulators.voicelive import VoiceLiveEmulator
from router.settings import DEFAULT_PROFILE
from tests.realtime.full_app import FullApp
from tests.realtime.harness import PUBLIC_BASE_URL, new_call_sid
from tests.realtime.twilio_client import TwilioMediaClient

SPEECH = speechlike_ulaw(900, seed=5) + silence_ulaw(800)
REAL_PACE = 0.02  # seconds between 20 ms frames, as Twilio sends them
LEGACY_START = f"{PUBLIC_BASE_URL}/legacy/start"

FullAppFactory = Callable[..., Awaitable[FullApp]]


def _all_played(twilio: TwilioMediaClient) -> bool:
    """Agent audio came, and everything received so far has played (or was cleared) and been echoed."""
    return bool(twilio.audio) and not twilio._queue and twilio._pending_bytes == 0


@pytest.fixture
async def full_app(
    tmp_path: Path, voicelive: VoiceLiveEmulator, rest: TwilioRestEmulator
) -> AsyncIterator[FullAppFactory]:
    started: list[FullApp] = []

    async def start(**settings_overrides: Any) -> FullApp:
        state_dir = tmp_path / f"app{len(started)}"  # each app its own SQLite file
        state_dir.mkdir()
        app = FullApp(tmp_path=state_dir, voicelive=voicelive, rest=rest, **settings_overrides).start()
        started.append(app)
        return app

    yield start
    for app in started:
        await app.aclose()


async def test_a_call_at_full_rollout_is_served_by_voice_live_and_recorded(full_app: FullAppFactory) -> None:
    app = await full_app()
    call_sid = new_call_sid()

    routed = await app.incoming_call(call_sid)
    assert (routed.pipeline, routed.reason) == ("realtime", "rollout_in")
    assert routed.stream_url == PUBLIC_BASE_URL.replace("https://", "wss://") + "/twilio/media"
    # If the stream ends without a redirect, Twilio continues with legacy rather than hanging up.
    assert routed.connect_action == LEGACY_START

    async with app.media_client(routed) as twilio:
        await twilio.start()
        # The profile has a greeting: the agent speaks first, and the caller listens to the end of it.
        await twilio.wait_for(lambda: len(app.voicelive.sessions) == 1)
        session = app.voicelive.sessions[0]
        await twilio.wait_for(lambda: "completed" in session.responses.values())
        await twilio.wait_for(lambda: _all_played(twilio))
        greeting_items = {echo.item_id for echo in twilio.marks_echoed}
        assert len(greeting_items) == 1
        await twilio.send_audio(SPEECH, pace=REAL_PACE)
        # The reply to the caller's speech streams back (a new item) and plays to the end.
        await twilio.wait_for(lambda: list(session.responses.values()).count("completed") == 2)
        await twilio.wait_for(lambda: _all_played(twilio))
        reply_items = {echo.item_id for echo in twilio.marks_echoed} - greeting_items
        assert len(reply_items) == 1
        assert twilio.played_by_item[reply_items.pop()] > 0
        await twilio.stop()
        assert await twilio.wait_closed() == 1000

    assert len(app.voicelive.sessions) == 1
    assert session.appended_audio_ms == len(SPEECH) // 8  # every caller frame reached Voice Live

    record = await app.eventually(
        lambda: app.call_record(call_sid), lambda r: r.get("breaker_outcome") is not None
    )
    assert record["pipeline"] == "realtime"
    assert record["reason"] == "rollout_in"
    assert record["breaker_outcome"] == "success"
    assert record["moved_to_legacy"] is False
    assert record["realtime"]["frames_in"] == len(SPEECH) // FRAME_BYTES
    assert record["ended_at"] is None

    turns = await app.eventually(lambda: app.turns(call_sid), lambda t: len(t) == 2)
    assert [t["turn"] for t in turns] == [0, 1]  # the greeting, then the reply to the caller
    for turn in turns:
        assert turn["pipeline"] == "realtime"
        assert 0 < turn["response_ms"] <= turn["heard_ms"]
        assert turn["stages"]["first_audio"] > 0
        assert turn["assistant_text"]
    assert turns[1]["user_text"]

    # Twilio reports the end of the call.
    ended = await app.status_callback(call_sid, "completed", duration_s=4)
    assert ended.status_code == 204
    record = await app.call_record(call_sid)
    assert record["status"] == "completed"
    assert record["duration_s"] == 4.0
    assert record["ended_at"] is not None and record["ended_at"] >= record["started_at"]
    # The end merges into what the bridge wrote: nothing of the call's own record is lost.
    assert record["pipeline"] == "realtime" and record["breaker_outcome"] == "success"
    assert record["realtime"]["frames_in"] == len(SPEECH) // FRAME_BYTES


async def test_a_media_stream_that_offers_compression_is_answered_without_it(
    full_app: FullAppFactory,
) -> None:
    """Deflating base64 audio costs far more CPU per frame than the bridge's own work and ~46 KB of zlib state
    per call (see ``router.server_options``): a client that offers it gets an uncompressed stream that works."""
    app = await full_app()
    routed = await app.incoming_call(new_call_sid())

    async with app.media_client(routed, compression="deflate") as twilio:
        assert twilio.ws is not None
        offered = twilio.ws.request.headers["Sec-WebSocket-Extensions"] if twilio.ws.request else ""
        assert offered.startswith("permessage-deflate")
        assert twilio.ws.response is not None
        assert "Sec-WebSocket-Extensions" not in twilio.ws.response.headers
        await twilio.start()
        await twilio.wait_for(lambda: _all_played(twilio))  # the greeting streams and plays
        await twilio.stop()
        assert await twilio.wait_closed() == 1000


async def test_a_token_of_another_call_or_an_expired_one_is_closed_1008_with_no_session(
    full_app: FullAppFactory,
) -> None:
    app = await full_app()
    caller_sid, other_sid = new_call_sid(), new_call_sid()
    routed = await app.incoming_call(caller_sid)
    other = await app.incoming_call(other_sid)
    assert routed.pipeline == other.pipeline == "realtime"

    # The other call's genuine token, presented on this call's stream.
    async with app.media_client(routed, token=other.token) as twilio:
        await twilio.start()
        assert await twilio.wait_closed() == 1008
    # This call's own token, once it has expired (the server's wall clock moved past its lifetime).
    app.clock.skew = app.settings.stream_token_ttl_seconds + 1.0
    async with app.media_client(routed) as twilio:
        await twilio.start()
        assert await twilio.wait_closed() == 1008
    assert app.voicelive.state.connections_accepted == 0
    assert app.voicelive.sessions == []
    assert app.metric("voice_router_rejected_requests_total", route="/twilio/media", reason="token") == 2

    # The same stream with its own token, in time, is served: the refusals above were the token's doing.
    app.clock.skew = 0.0
    async with app.media_client(routed) as twilio:
        await twilio.start()
        await twilio.wait_for(lambda: len(twilio.marks_echoed) >= 1)
        await twilio.stop()
        assert await twilio.wait_closed() == 1000
    assert app.voicelive.state.connections_accepted == 1
    assert len(app.voicelive.sessions) == 1


async def _outage_call(app: FullApp) -> str:
    """One call while Voice Live is down: routed to realtime, moved to legacy by Twilio's REST API."""
    call_sid = new_call_sid()
    routed = await app.incoming_call(call_sid)
    assert (routed.pipeline, routed.reason) == ("realtime", "rollout_in")
    async with app.media_client(routed) as twilio:
        await twilio.start()
        await twilio.send_audio(SPEECH[: 40 * FRAME_BYTES])  # the caller talks while it fails
        await twilio.wait_for(lambda: bool(app.rest.updates_for(call_sid)))
        # The caller heard nothing of realtime: legacy is asked to greet them, not to carry on (they used to
        # hear "Sorry about that. Let's carry on." as the first words of their call, all through an outage).
        assert app.rest.updates_for(call_sid) == [{"Url": LEGACY_START + "?greet=1", "Method": "POST"}]
        # Twilio ends the stream itself when it runs the redirect: the bridge must not hang up first.
        assert not twilio.closed.is_set()
        # Twilio fetches the new URL: the legacy pipeline of the same service picks the call up.
        redirect = await app.twilio_post(LEGACY_START + "?greet=1", app.call_params(call_sid, "in-progress"))
        assert redirect.status_code == 200
        assert f'<Gather action="{PUBLIC_BASE_URL}/legacy/turn"' in redirect.text
        assert app.settings.legacy_resume_phrase not in redirect.text
        greeting = app.components.profile.greeting
        assert greeting and escape(greeting) in redirect.text, redirect.text
        await twilio.stop()
        assert await twilio.wait_closed() == 1000
    record = await app.eventually(
        lambda: app.call_record(call_sid), lambda r: r.get("breaker_outcome") is not None
    )
    assert record["pipeline"] == "realtime"
    assert record["moved_to_legacy"] is True
    assert record["move_reason"] == "voicelive_handshake_failed"
    assert record["breaker_outcome"] == "connect_failure"
    return call_sid


async def test_voice_live_outage_moves_calls_to_legacy_and_opens_the_breaker(
    full_app: FullAppFactory,
) -> None:
    app = await full_app(
        breaker_window_seconds=30,
        breaker_minimum_calls=10,  # out of reach: only the fast trip can open the breaker here
        breaker_consecutive_connect_failures=2,
        breaker_wait_open_seconds=60.0,
    )
    # Every upgrade is reset before any answer (a TCP reset after connect, as a gateway in front of a dead
    # service does). No session was ever had, so each counts toward the fast trip like a refused connection.
    app.voicelive.faults.update(drop_connections=True)

    first = await _outage_call(app)
    assert (await app.admin("GET", "/admin/breaker"))["state"] == "closed"  # one failure is not enough
    await _outage_call(app)

    assert app.voicelive.state.connections_dropped == 2
    assert app.voicelive.sessions == []
    assert app.metric("voice_router_fallbacks_total", reason="voicelive_handshake_failed") == 2
    breaker = await app.admin("GET", "/admin/breaker")
    assert breaker["state"] == "open"
    assert breaker["calls_in_window"] == 2
    assert breaker["failure_rate"] == 100.0

    # The moved call ends on legacy; its end is recorded on the same record.
    assert (await app.status_callback(first, "completed", duration_s=9)).status_code == 204
    record = await app.call_record(first)
    assert record["status"] == "completed" and record["duration_s"] == 9.0
    assert record["moved_to_legacy"] is True and record["ended_at"] is not None

    # The breaker opened on this replica: the very next calls go to legacy, not after the config cache.
    for _ in range(3):
        routed = await app.incoming_call(new_call_sid())
        assert (routed.pipeline, routed.reason) == ("legacy", "breaker_open")
        assert "<Connect" not in routed.twiml
        assert f'<Gather action="{PUBLIC_BASE_URL}/legacy/turn"' in routed.twiml
    assert app.voicelive.state.connections_dropped == 2


async def test_when_the_worker_is_full_the_next_call_is_answered_by_legacy_at_once(
    full_app: FullAppFactory,
) -> None:
    app = await full_app(realtime_max_calls=1)
    first, second, third = new_call_sid(), new_call_sid(), new_call_sid()
    routed = await app.incoming_call(first)
    assert (routed.pipeline, routed.reason) == ("realtime", "rollout_in")
    async with app.media_client(routed) as twilio:
        await twilio.start()
        await twilio.wait_for(lambda: len(app.voicelive.sessions) == 1)
        # The webhook sees this process's own media stream holding its one slot.
        full = await app.incoming_call(second)
        assert (full.pipeline, full.reason) == ("legacy", "realtime_full")
        assert app.metric("voice_router_decisions_total", pipeline="legacy", reason="realtime_full") == 1
        await twilio.stop()
        await twilio.wait_closed()
    realtime = app.components.realtime

    async def capacity() -> bool:
        return realtime.has_capacity()

    await app.eventually(capacity, bool)  # the slot is freed when the bridge has finished
    again = await app.incoming_call(third)
    assert (again.pipeline, again.reason) == ("realtime", "rollout_in")
    assert len(app.voicelive.sessions) == 1  # the call answered by legacy never opened a session
    record = await app.call_record(second)
    assert record["pipeline"] == "legacy" and record["reason"] == "realtime_full"


async def test_the_profile_s_tools_are_wired_through_create_app(
    full_app: FullAppFactory, tmp_path: Path
) -> None:
    """AGENT_PROFILE's tools (contract.md) reach Voice Live's session, and a call of one reaches the tool's
    URL through the one ToolRunner the app factory builds."""
    with ToolBackendEmulator() as backend:
        profile = yaml.safe_load(DEFAULT_PROFILE.read_text())
        profile["greeting"] = ""
        profile["tools"] = [
            {
                "name": "check_availability",
                "description": "Free slots on a day",
                "parameters": {"type": "object", "properties": {"day": {"type": "string"}}},
                "url": backend.tool_url("check_availability"),
            }
        ]
        path = tmp_path / "agent-with-tools.yaml"
        path.write_text(yaml.safe_dump(profile))
        app = await full_app(agent_profile=path)
        app.voicelive.config.replies = (
            {"tool_calls": [{"name": "check_availability", "arguments": {"day": "Friday"}}]},
            "Friday: {tool_output}",
        )
        call_sid = new_call_sid()
        routed = await app.incoming_call(call_sid)
        async with app.media_client(routed) as twilio:
            await twilio.start()
            await twilio.wait_for(lambda: len(app.voicelive.sessions) == 1)
            session = app.voicelive.sessions[0]
            await twilio.send_audio(SPEECH)
            await twilio.wait_for(lambda: session.function_outputs_received == 1)
            await twilio.wait_for(lambda: list(session.responses.values()).count("completed") == 2)
            await twilio.stop()
            await twilio.wait_closed()
        assert [tool["name"] for tool in session.session["tools"]] == ["check_availability"]
        [output] = session.function_outputs
        assert orjson.loads(output["output"])["day"] == "Friday"
        assert [c["body"]["call_sid"] for c in backend.calls] == [call_sid]
        turns = await app.eventually(lambda: app.turns(call_sid), lambda t: len(t) == 1)
        assert turns[0]["tool_calls"][0]["ok"] is True
