"""Every fault knob, over a real socket, plus the HTTP control surface."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import orjson
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from emulators.voicelive import ErrorSpec, Faults, VoiceLiveEmulator, VoiceLiveEmulatorConfig
from tests.voicelive_emulator.client import Client, open_client, types, ulaw_session


async def test_drop_connections_closes_tcp_without_http_response(emulator: VoiceLiveEmulator) -> None:
    emulator.faults.update(drop_connections=True)
    with pytest.raises((OSError, EOFError, websockets.exceptions.InvalidMessage)) as info:
        async with websockets.connect(
            emulator.realtime_url(), additional_headers={"api-key": "emulator-key"}
        ):
            pass
    assert not isinstance(info.value, InvalidStatus)
    assert emulator.state.connections_dropped == 1
    # The control endpoint on the same port still answers, so a drill can switch the fault off over HTTP.
    async with httpx.AsyncClient(base_url=emulator.url) as control:
        lifted = await control.post("/_emulator/faults", json={"drop_connections": False})
    assert lifted.status_code == 200 and lifted.json()["drop_connections"] is False
    client = await open_client(emulator)  # recovers once the fault is lifted
    await client.ws.close()


@pytest.mark.parametrize("status", [401, 403, 429, 503])
async def test_reject_handshake_with_status(emulator: VoiceLiveEmulator, status: int) -> None:
    emulator.faults.update(reject_handshake_status=status)
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(
            emulator.realtime_url(), additional_headers={"api-key": "emulator-key"}
        ):
            pass
    assert info.value.response.status_code == status
    assert orjson.loads(info.value.response.body)["error"]["code"] == str(status)
    assert emulator.state.connections_rejected == 1
    assert emulator.sessions == []


async def test_session_updated_delayed(emulator: VoiceLiveEmulator) -> None:
    emulator.faults.update(session_updated_delay_ms=1500)
    client = await open_client(emulator)
    await client.send({"type": "session.update", "session": {"temperature": 0.9}})
    with pytest.raises(TimeoutError):
        await client.recv(wait_s=0.3)
    assert (await client.recv(wait_s=5))["type"] == "session.updated"
    await client.ws.close()


async def test_a_slow_session_updated_does_not_hold_other_client_events(emulator: VoiceLiveEmulator) -> None:
    """The service keeps reading while it is slow to confirm: audio sent after the update is heard at once,
    with the new settings (μ-law input; the VAD reports speech), before ``session.updated`` arrives."""
    emulator.faults.update(session_updated_delay_ms=2000)
    client = await open_client(emulator)
    await client.send({"type": "session.update", "session": {"input_audio_format": "g711_ulaw"}})
    await client.speak(tail_ms=0)
    first = await client.recv()
    assert first["type"] == "input_audio_buffer.speech_started"
    events = await client.until("session.updated")
    assert events[-1]["session"]["input_audio_format"] == "g711_ulaw"
    assert emulator.sessions[0].append_count > 0
    await client.ws.close()


async def test_slow_session_updated_events_keep_the_order_of_their_updates(
    emulator: VoiceLiveEmulator,
) -> None:
    """Each update gets its own confirmation, in order, even when the delay is lifted in between (the later
    one waits for the earlier one); replies to other client events are not held behind them."""
    emulator.faults.update(session_updated_delay_ms=1500)
    client = await open_client(emulator)
    await client.send({"type": "session.update", "session": {"temperature": 0.7}})
    await client.send({"type": "input_audio_buffer.clear"})
    assert (await client.recv())["type"] == "input_audio_buffer.cleared"
    emulator.faults.update(session_updated_delay_ms=0)
    await client.send({"type": "session.update", "session": {"temperature": 0.9}})
    await client.send({"type": "input_audio_buffer.clear"})
    events = [await client.recv() for _ in range(3)]
    assert types(events) == ["input_audio_buffer.cleared", "session.updated", "session.updated"]
    assert [e["session"]["temperature"] for e in events[1:]] == [0.7, 0.9]
    await client.ws.close()


async def test_session_updated_dropped(emulator: VoiceLiveEmulator) -> None:
    emulator.faults.update(drop_session_updated=True)
    client = await open_client(emulator)
    await client.send({"type": "session.update", "session": {"input_audio_format": "g711_ulaw"}})
    await client.send({"type": "input_audio_buffer.clear"})
    # the next event is the answer to the clear: session.updated never comes
    assert (await client.recv())["type"] == "input_audio_buffer.cleared"
    assert emulator.sessions[0].session["input_audio_format"] == "g711_ulaw"  # applied, just not acknowledged
    await client.ws.close()


async def test_error_at_session_start(emulator: VoiceLiveEmulator) -> None:
    emulator.faults.update(
        error_at_session_start={"type": "server_error", "code": "overloaded", "message": "busy"}
    )
    client = await open_client(emulator)
    error = await client.recv()
    assert error["type"] == "error"
    assert (error["error"]["type"], error["error"]["code"], error["error"]["message"]) == (
        "server_error",
        "overloaded",
        "busy",
    )
    await client.ws.close()


async def test_error_mid_response_fails_the_response(emulator: VoiceLiveEmulator) -> None:
    emulator.faults.update(error_after_deltas=2, mid_response_error=True)
    client = await ulaw_session(emulator)
    await client.speak()
    events = await client.until("response.done")
    names = types(events)
    assert names.count("response.audio.delta") == 2
    error = events[names.index("error")]
    assert error["error"]["type"] == "server_error"
    done = events[-1]["response"]
    assert done["status"] == "failed"
    assert done["status_details"]["type"] == "failed"
    assert done["status_details"]["error"]["type"] == "server_error"
    await client.ws.close()


async def test_stall_mid_response_keeps_socket_open(emulator: VoiceLiveEmulator) -> None:
    emulator.faults.update(stall_after_deltas=2)
    client = await ulaw_session(emulator)
    await client.speak()
    events: list[dict] = []
    with pytest.raises(TimeoutError):
        while True:
            events.append(await client.recv(wait_s=0.5))
    assert types(events).count("response.audio.delta") == 2
    assert "response.done" not in types(events)
    pong = await client.ws.ping()
    await asyncio.wait_for(pong, 5)  # the socket is alive, the server just says nothing
    await client.send({"type": "response.cancel"})
    with pytest.raises(TimeoutError):
        await client.recv(wait_s=0.3)
    await client.ws.close()


async def test_global_stall_silences_everything(emulator: VoiceLiveEmulator) -> None:
    client = await open_client(emulator)
    emulator.faults.update(stall=True)
    await client.send({"type": "session.update", "session": {"temperature": 0.9}})
    with pytest.raises(TimeoutError):
        await client.recv(wait_s=0.3)
    await client.ws.close()


async def test_a_lifted_stall_delivers_what_was_held_in_order(emulator: VoiceLiveEmulator) -> None:
    """A stalled service sends what it had queued when it recovers: a whole turn produced during the stall
    arrives, in order and as produced, once ``stall`` is cleared over the control API; a reply to a client
    event sent after the lift comes after it."""
    client = await ulaw_session(emulator, input_audio_transcription={"model": "azure-speech"})
    record = emulator.sessions[0]
    emulator.faults.update(stall=True)
    await client.speak()
    await eventually(lambda: "completed" in record.responses.values())
    assert "input_audio_buffer.speech_started" not in record.server_events  # produced, held, not sent
    held = record.held_events
    async with httpx.AsyncClient(base_url=emulator.url) as http:
        lifted = await http.post("/_emulator/faults", json={"stall": False})
    assert lifted.status_code == 200
    await client.send({"type": "input_audio_buffer.clear"})
    events = await client.until("input_audio_buffer.cleared")
    names = types(events)
    assert len(events) == held + 1
    assert names[:4] == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.created",
    ]
    assert names[-2:] == ["response.done", "input_audio_buffer.cleared"]
    assert names.count("response.audio.delta") > 1
    assert events[-2]["response"]["status"] == "completed"
    user_item = events[3]["item"]
    assert user_item["content"][0]["transcript"] is None  # as produced, before its transcript was known
    assert "conversation.item.input_audio_transcription.completed" in names
    assert (record.held_events, record.held_dropped, record.held_unsent) == (0, 0, 0)
    await client.ws.close()


async def test_the_stall_hold_is_bounded_by_dropping_the_oldest_audio() -> None:
    """Past ``max_held_events`` the oldest audio deltas go (counted); every protocol event is still delivered."""
    config = VoiceLiveEmulatorConfig(
        faults=Faults(first_audio_ms=0, pace=0), replies=("a" * 100,), ms_per_char=65, max_held_events=30
    )
    with VoiceLiveEmulator(config) as emulator:
        client = await ulaw_session(emulator, turn_detection=None)
        record = emulator.sessions[0]
        emulator.faults.update(stall=True)
        await client.send({"type": "response.create"})
        await eventually(lambda: "completed" in record.responses.values())
        audio_deltas = 65  # 100 chars x 65 ms in 100 ms chunks
        protocol = [
            "response.created",
            "rate_limits.updated",
            "response.output_item.added",
            "conversation.item.created",
            "response.content_part.added",
            "response.audio_transcript.delta",  # the one word goes with the last chunk
            "response.audio.done",
            "response.audio_transcript.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.done",
        ]
        kept_audio = 30 - len(protocol)
        assert record.held_events == 30
        assert record.held_dropped == audio_deltas - kept_audio
        emulator.faults.update(stall=False)
        events = await client.until("response.done")
        names = types(events)
        assert [n for n in names if n != "response.audio.delta"] == protocol
        assert names.count("response.audio.delta") == kept_audio
        assert events[-1]["response"]["status"] == "completed"
        await client.ws.close()


async def test_a_permanent_stall_holds_what_it_produces_and_counts_it_unsent(
    emulator: VoiceLiveEmulator,
) -> None:
    """``stall_after_deltas`` never lifts, not even when ``stall`` is toggled; what the session produced
    meanwhile is not lost silently: it shows as held, then as unsent when the session ends."""
    emulator.faults.update(stall_after_deltas=2)
    client = await ulaw_session(emulator, turn_detection=None)
    record = emulator.sessions[0]
    await client.send({"type": "response.create"})
    events = [await client.recv() for _ in range(7)]
    assert types(events)[-2:] == ["response.audio.delta", "response.audio.delta"]
    await client.send({"type": "session.update", "session": {"temperature": 0.9}})
    await eventually(lambda: record.held_events == 1)
    emulator.faults.update(stall=True)
    emulator.faults.update(stall=False)
    with pytest.raises(TimeoutError):
        await client.recv(wait_s=0.3)
    assert list(record.server_events).count("session.updated") == 1  # ulaw_session's own update only
    await client.ws.close()
    await eventually(lambda: record.closed)
    assert (record.held_events, record.held_unsent) == (0, 1)


async def eventually(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait for the emulator (on its own thread) to reach ``condition``."""
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    assert condition()


async def test_close_mid_response_with_code(emulator: VoiceLiveEmulator) -> None:
    emulator.faults.update(close_after_deltas=3, close_code=1011)
    client = await ulaw_session(emulator, turn_detection=None)
    await speak_then_ask(client)
    events = await drain_until_closed(client)
    assert types(events).count("response.audio.delta") == 3
    assert client.ws.close_code == 1011
    assert client.ws.protocol.close_rcvd is not None
    await asyncio.sleep(0)
    assert emulator.sessions[0].close_code == 1011


async def test_close_mid_response_abruptly(emulator: VoiceLiveEmulator) -> None:
    emulator.faults.update(close_after_deltas=1, close_abruptly=True)
    client = await ulaw_session(emulator, turn_detection=None)
    await speak_then_ask(client)
    events = await drain_until_closed(client)
    assert types(events).count("response.audio.delta") == 1
    assert client.ws.protocol.close_rcvd is None  # no close frame: TCP reset
    assert client.ws.close_code == 1006


async def test_session_expires(emulator: VoiceLiveEmulator) -> None:
    emulator.faults.update(expire_after_s=0.3)
    client = await open_client(emulator)
    events = await drain_until_closed(client)
    assert events[-1]["type"] == "error"
    assert events[-1]["error"]["code"] == "session_expired"
    assert events[-1]["error"]["type"] == "invalid_request_error"
    assert client.ws.close_code == 1001


async def speak_then_ask(client: Client) -> None:
    """Send the whole utterance before asking for the response the fault cuts short.

    With server VAD the response starts while the tail silence is still being sent, so a close
    (or TCP reset) could land on the client's own send instead of its receive: a flaky race
    that says nothing about the fault."""
    await client.speak(tail_ms=0)
    await client.send({"type": "input_audio_buffer.commit"})
    await client.send({"type": "response.create"})


async def drain_until_closed(client: Client) -> list[dict]:
    events: list[dict] = []
    with pytest.raises(ConnectionClosed):
        while True:
            events.append(await client.recv(wait_s=5))
    return events


async def test_latency_knobs_shape_delta_pacing() -> None:
    faults = Faults(pace=4.0)
    assert faults.delta_interval_s(100) == pytest.approx(0.025)
    faults.update(pace=0)
    assert faults.delta_interval_s(100) == 0.0
    faults.update(delta_delay_ms=40)
    assert faults.delta_interval_s(100) == pytest.approx(0.04)


def test_faults_reject_unknown_knobs_and_bad_values() -> None:
    faults = Faults()
    with pytest.raises(ValueError, match="unknown"):
        faults.update(explode=True)
    with pytest.raises(ValueError):
        faults.update(reject_handshake_status=200)
    with pytest.raises(ValueError):
        faults.update(close_after_deltas=-1)
    faults.update(error_at_session_start={"code": "x"})
    assert faults.error_at_session_start == ErrorSpec(code="x")
    faults.update(stall=True, first_audio_ms=5)
    faults.reset()
    assert faults.to_dict() == Faults().to_dict()


@pytest.mark.parametrize("code", [1004, 1005, 1006, 1015, 2000, 5000, True])
def test_close_code_must_fit_in_a_close_frame(code: object) -> None:
    """Reserved codes can't be sent in a close frame, so the knob refuses them (the client would see another)."""
    faults = Faults()
    with pytest.raises(ValueError, match="close_code"):
        faults.update(close_code=code)
    assert faults.close_code == 1011
    faults.update(close_code=4000)
    assert faults.close_code == 4000


async def test_control_endpoints(emulator: VoiceLiveEmulator) -> None:
    async with httpx.AsyncClient(base_url=emulator.url) as http:
        response = await http.post(
            "/_emulator/faults", json={"reject_handshake_status": 503, "first_audio_ms": 7}
        )
        assert response.status_code == 200
        assert response.json()["reject_handshake_status"] == 503
        assert emulator.faults.first_audio_ms == 7
        with pytest.raises(InvalidStatus):
            async with websockets.connect(
                emulator.realtime_url(), additional_headers={"api-key": "emulator-key"}
            ):
                pass
        bad = await http.post("/_emulator/faults", json={"nonsense": 1})
        assert bad.status_code == 400
        assert "nonsense" in bad.json()["error"]["message"]
        reset = await http.post("/_emulator/faults", json={"reset": True})
        assert reset.json()["reject_handshake_status"] is None
        client = await ulaw_session(emulator)
        await client.speak(300, tail_ms=600)
        await client.until("response.done")
        state = (await http.get("/_emulator/state")).json()
        assert state["connections_rejected"] == 1
        assert state["connections_accepted"] == 1
        session = state["sessions"][0]
        assert session["client_events"] == ["session.update"]
        assert list(session["responses"].values()) == ["completed"]
        assert session["session"]["input_audio_format"] == "g711_ulaw"
        assert state["faults"]["first_audio_ms"] == 120
        await client.ws.close()


@pytest.mark.parametrize("abrupt", [False, True])
async def test_client_gone_mid_response_leaves_no_response_in_progress(abrupt: bool) -> None:
    """A response whose client disconnected is finalised (cancelled) in the recorded state."""
    config = VoiceLiveEmulatorConfig(faults=Faults(first_audio_ms=0, delta_delay_ms=1000))
    with VoiceLiveEmulator(config) as emulator:
        client = await ulaw_session(emulator, turn_detection=None)
        await client.send({"type": "response.create"})
        await client.until("response.audio.delta")
        if abrupt:
            client.ws.transport.abort()
        else:
            await client.ws.close()
        record = emulator.sessions[0]
        for _ in range(500):  # the emulator notices the disconnect on its own thread
            if record.closed:
                break
            await asyncio.sleep(0.01)
        assert record.closed
        assert list(record.responses.values()) == ["cancelled"]
