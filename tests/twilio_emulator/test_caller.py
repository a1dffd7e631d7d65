"""The Twilio call simulator against a minimal router over real sockets (HTTP + WebSocket)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from emulators.runner import ServerThread
from emulators.twilio.audio import read_wav
from emulators.twilio.caller import DTMF_DIGIT_MS, TwilioCallSimulator, dtmf_ms
from emulators.twilio.rest import TwilioRestEmulator
from emulators.twilio.script import BargeIn, CallScript, HangUp, Pause, Say, Utterance, fixture_utterances
from emulators.twilio.twiml import PlayVerb, TwimlError, parse_twiml
from tests.twilio_emulator.fake_router import FakeRouter

ACCOUNT = "AC" + "2" * 32
TOKEN = "tw-token"
PUBLIC = "https://voice.example.test"
SCALE = 0.1


@pytest.fixture
def router():
    fake = FakeRouter(token=TOKEN, public=PUBLIC, account_sid=ACCOUNT)
    server = ServerThread(fake.app).start()
    fake.base = server.http_url  # type: ignore[attr-defined]
    try:
        yield fake
    finally:
        server.stop()


@pytest.fixture
def rest():
    emulator = TwilioRestEmulator(ACCOUNT, TOKEN).start()
    try:
        yield emulator
    finally:
        emulator.stop()


def simulator(router, rest, **options) -> TwilioCallSimulator:
    router.rest_url = rest.url
    return TwilioCallSimulator(
        router_url=router.base,
        public_base_url=PUBLIC,
        auth_token=TOKEN,
        account_sid=ACCOUNT,
        rest=rest,
        time_scale=SCALE,
        reply_end_gap_ms=500,
        **options,
    )


@pytest.fixture
async def sim(router, rest):
    async with simulator(router, rest) as started:
        yield started


def two_utterances() -> list[Say]:
    first, second = fixture_utterances()[:2]
    return [Say(first), Say(second)]


async def test_legacy_call_gathers_speech_and_reports_turns(sim, router):
    result = await sim.place_call(CallScript(steps=list(two_utterances())))
    assert router.rejected == []  # every request carried a valid signature for the public URL
    assert result.answered and result.status == "completed"
    assert result.pipeline == "legacy" and result.modes == ["legacy"]
    turns = [data for path, data in router.form_posts if path == "/legacy/turn"]
    assert [t["SpeechResult"] for t in turns] == [u.utterance.text for u in two_utterances()]
    assert all(0.0 < float(t["Confidence"]) <= 1.0 for t in turns)
    assert {t["CallSid"] for t in turns} == {result.call_sid}
    status = [data for path, data in router.form_posts if path == "/twilio/status"]
    assert len(status) == 1 and status[0]["CallStatus"] == "completed"
    assert int(status[0]["CallDuration"]) >= 1 or result.duration_s < 1
    assert result.play_formats and set(result.play_formats) == {"ulaw/8000/1"}
    # Turn 0 is the greeting; turns 1-2 include Twilio's end-of-speech wait (auto = 1 s, scaled).
    assert [t["turn"] for t in result.turns] == [0, 1, 2]
    for turn in result.turns[1:]:
        assert turn["turn_pipeline"] == "legacy", [
            (t["turn"], t["latency_ms"], t["error"], t["turn_pipeline"]) for t in result.turns
        ]
        assert turn["latency_ms"] >= sim.speech_timeout_auto_ms * SCALE
        assert turn["silence_ms"] >= turn["latency_ms"] - 1
    assert result.ended_by == "caller"


async def test_realtime_call_streams_and_echoes_marks(sim, router):
    router.mode = "realtime"
    result = await sim.place_call(CallScript(steps=list(two_utterances())))
    assert router.rejected == []
    assert result.pipeline == "realtime" and result.modes == ["realtime"]
    log = router.streams[0]
    connected, start = log.events[0], log.events[1]
    assert connected == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert start["sequenceNumber"] == "1"
    assert start["start"]["customParameters"] == {"token": "tok-1"}
    assert start["start"]["callSid"] == result.call_sid
    assert start["start"]["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    media = [e for e in log.events if e["event"] == "media"]
    assert [int(m["media"]["chunk"]) for m in media[:5]] == [1, 2, 3, 4, 5]
    assert [m["media"]["timestamp"] for m in media[:3]] == ["0", "20", "40"]
    sequence = [int(e["sequenceNumber"]) for e in log.events if "sequenceNumber" in e]
    assert sequence == list(range(1, len(sequence) + 1))
    assert log.events[-1]["event"] == "stop"
    assert log.events[-1]["stop"]["callSid"] == result.call_sid
    assert log.utterances == 2
    # Every mark the bot sent came back after its audio had been played out.
    assert log.marks_echoed == log.marks_sent
    stats = result.streams[0]
    assert stats.bytes_played == (router.greeting_ms + 2 * router.reply_ms) * 8
    assert stats.protocol_errors == []
    assert [t["turn"] for t in result.turns] == [0, 1, 2]
    assert all(t["latency_ms"] is not None and t["turn_pipeline"] == "realtime" for t in result.turns)
    assert all(t["error"] is None for t in result.turns)


async def test_a_slow_reply_is_waited_for_in_real_time_not_in_scaled_time(router, rest):
    """time_scale compresses the caller, not the bot: a reply 1 s late is 10 s of scaled caller time, but the
    caller's patience (reply_timeout_ms) is in real time, so it is heard, not counted as no_reply."""
    router.mode = "realtime"
    router.reply_delay_ms = 1000
    async with simulator(router, rest, reply_timeout_ms=3000) as sim:
        result = await sim.place_call(CallScript(steps=list(two_utterances()[:1])))
    reply = result.turns[1]
    assert reply["error"] is None
    assert reply["latency_ms"] is not None and reply["latency_ms"] >= 1000


async def test_barge_in_gets_cleared_and_pending_marks_echoed(sim, router):
    router.mode = "realtime"
    router.reply_ms = 4000
    first, second = fixture_utterances()[:2]
    script = CallScript(steps=[Say(first), BargeIn(second, after_ms=400), HangUp()])
    result = await sim.place_call(script)
    log = router.streams[0]
    assert log.clears >= 1
    assert result.streams[0].clears >= 1
    # The interrupted reply's mark was echoed when the clear dropped its audio.
    assert "reply-2" in log.marks_echoed
    assert result.streams[0].bytes_played < (router.greeting_ms + 2 * router.reply_ms) * 8
    barge = [t for t in result.turns if t["barge_in"]]
    assert len(barge) == 1 and result.barge_ins == 1
    assert barge[0]["interrupted_audio_ms"] is not None


async def test_rest_redirect_moves_a_live_stream_to_legacy(sim, router, rest):
    router.mode = "realtime"
    router.move_after_utterances = 1
    utterances = fixture_utterances()
    script = CallScript(steps=[Say(utterances[0]), Say(utterances[1]), Say(utterances[2])])
    result = await sim.place_call(script)
    assert result.moved and result.modes == ["realtime", "legacy"]
    assert rest.updates_for(result.call_sid) == [{"Url": f"{PUBLIC}/legacy/start", "Method": "POST"}]
    log = router.streams[0]
    assert log.events[-1]["event"] == "stop"  # Twilio ends the stream: stop, then close
    paths = [path for path, _ in router.form_posts]
    assert paths.index("/legacy/start") < paths.index("/legacy/turn")
    said = [data["SpeechResult"] for path, data in router.form_posts if path == "/legacy/turn"]
    assert said == [utterances[1].text, utterances[2].text]
    # The turn the move interrupted is answered by legacy, and its wait counts as dead air.
    moved_turn = result.turns[1]
    assert moved_turn["turn_pipeline"] == "legacy" and moved_turn["latency_ms"] is not None
    assert result.max_silence_ms >= moved_turn["silence_ms"] > 0
    assert rest.call_status(result.call_sid) == "completed"


async def test_record_posts_a_recording_served_with_basic_auth(sim, router, rest):
    router.legacy_first_twiml = '<Response><Record action="/rec" timeout="1" playBeep="false"/></Response>'
    router.turn_twiml = "<Response><Hangup/></Response>"
    utterance = Utterance.speechlike("leave a message", duration_ms=1200)
    result = await sim.place_call(CallScript(steps=[Say(utterance)]))
    posted = next(data for path, data in router.form_posts if path == "/rec")
    assert posted["RecordingSid"].startswith("RE") and posted["RecordingDuration"] == "2"
    url = posted["RecordingUrl"]
    assert url.startswith(rest.url)
    async with httpx.AsyncClient() as http:
        assert (await http.get(url)).status_code == 401
        wav = await http.get(url + ".wav", auth=(ACCOUNT, TOKEN))
    assert wav.status_code == 200
    info = read_wav(wav.content)
    assert (info.format_code, info.sample_rate, info.bits_per_sample) == (1, 8000, 16)
    assert info.duration_ms == pytest.approx(1200, abs=1)
    assert result.ended_by == "twiml_hangup"


async def test_gather_empty_result_falls_through_or_posts_action(sim, router):
    silent = CallScript(steps=[Pause(10_000)], hang_up_when_done=False)
    result = await sim.place_call(silent)
    assert [p for p, _ in router.form_posts if p == "/legacy/turn"] == []
    assert result.ended_by == "twiml_hangup"  # fell through to <Say>Goodbye</Say><Hangup/>

    router.form_posts.clear()
    router.legacy_first_twiml = (
        '<Response><Gather input="speech" action="/legacy/turn" timeout="1" actionOnEmptyResult="true">'
        "<Say>Hello?</Say></Gather></Response>"
    )
    router.turn_twiml = "<Response><Hangup/></Response>"
    await sim.place_call(CallScript(steps=[Pause(5_000)], hang_up_when_done=False))
    posted = [data for path, data in router.form_posts if path == "/legacy/turn"]
    assert len(posted) == 1 and "SpeechResult" not in posted[0]


async def test_wrong_auth_token_is_refused_by_the_router(router, rest):
    async with TwilioCallSimulator(
        router_url=router.base, public_base_url=PUBLIC, auth_token="wrong", account_sid=ACCOUNT, rest=rest
    ) as sim:
        result = await sim.place_call(CallScript(steps=[]))
    assert not result.answered
    assert result.errors and result.errors[0].startswith("11200")


async def test_unplayable_audio_is_reported(sim, router):
    router.legacy_first_twiml = "<Response><Play>/audio/prompt.mp3</Play><Hangup/></Response>"
    result = await sim.place_call(CallScript(steps=[]))
    assert any(e.startswith("13227") for e in result.errors)
    assert result.play_formats == []


async def test_rest_hangup_ends_the_call(sim, router, rest):
    router.mode = "realtime"
    router.reply_ms = 200
    script = CallScript(steps=[Pause(60_000)], hang_up_when_done=False)

    task = asyncio.create_task(sim.place_call(script))
    while not router.streams or len(router.streams[0].events) < 3:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    call_sid = router.streams[0].events[1]["start"]["callSid"]
    await asyncio.to_thread(
        httpx.post,
        f"{rest.url}/2010-04-01/Accounts/{ACCOUNT}/Calls/{call_sid}.json",
        data={"Status": "completed"},
        auth=(ACCOUNT, TOKEN),
    )
    result = await asyncio.wait_for(task, 30)
    assert result.ended_by == "api"
    assert router.streams[0].events[-1]["event"] == "stop"


def _connect(url: str, extra: str = "") -> str:
    return f'<Response><Connect><Stream url="{url}" {extra}/></Connect><Hangup/></Response>'


async def test_stream_status_callback_is_signed_and_reports_start_and_stop(sim, router):
    """twilio.md 3.1: statusCallback gets StreamEvent stream-started / stream-stopped (POST by default)."""
    router.legacy_first_twiml = _connect(
        router.validator.ws_url("/twilio/media"), f'name="bot" statusCallback="{PUBLIC}/twilio/status"'
    )
    result = await sim.place_call(CallScript(steps=[Pause(500), HangUp()]))
    assert router.rejected == []  # signed like every other Twilio request
    posts = [data for path, data in router.form_posts if path == "/twilio/status" and "StreamEvent" in data]
    assert [p["StreamEvent"] for p in posts] == ["stream-started", "stream-stopped"]
    stream_sid = result.streams[0].stream_sid
    for post in posts:
        assert (post["StreamSid"], post["CallSid"], post["AccountSid"]) == (
            stream_sid,
            result.call_sid,
            ACCOUNT,
        )
        assert post["StreamName"] == "bot" and post["Timestamp"].endswith("Z")
    # the stream callbacks come before the call's own completed callback
    statuses = [data for path, data in router.form_posts if path == "/twilio/status"]
    assert statuses[-1].get("CallStatus") == "completed" and "StreamEvent" not in statuses[-1]


async def test_stream_status_callback_method_get_and_stream_error(sim, router):
    """statusCallbackMethod GET puts the parameters in the query; a refused upgrade reports stream-error."""
    router.legacy_first_twiml = _connect(
        router.validator.ws_url("/nowhere"), 'statusCallback="/legacy/turn" statusCallbackMethod="GET"'
    )
    router.turn_twiml = "<Response/>"
    result = await sim.place_call(CallScript(steps=[]))
    assert router.rejected == []
    calls = [data for path, data in router.form_posts if path == "/legacy/turn"]
    assert [c["StreamEvent"] for c in calls] == ["stream-error"]
    assert calls[0]["StreamError"].startswith("31920")
    assert ("GET", f"{PUBLIC}/legacy/turn", 200) in result.requests


async def test_relative_stream_url_is_resolved_against_the_document_as_wss(sim, router):
    """twilio.md 3.1: Stream url is "relative or absolute; wss only": /twilio/media → wss://<host>/twilio/media."""
    router.legacy_first_twiml = _connect("/twilio/media")
    result = await sim.place_call(CallScript(steps=[Pause(500), HangUp()]))
    assert result.errors == []
    assert router.rejected == []  # signed over wss://voice.example.test/twilio/media
    assert result.modes == ["realtime"] and len(router.streams) == 1


async def test_play_digits_without_a_url_is_played(sim, router):
    """twilio.md 4.3: play(url=None, loop=None, digits=None): <Play digits="ww1234"/> is valid TwiML."""
    router.legacy_first_twiml = '<Response><Play digits="ww1234"/><Say>Hi</Say><Hangup/></Response>'
    result = await sim.place_call(CallScript(steps=[]))
    assert result.errors == []
    assert result.ended_by == "twiml_hangup"
    assert result.play_formats == []  # nothing was fetched


def test_play_needs_a_url_or_valid_digits() -> None:
    assert parse_twiml('<Response><Play digits="w1#"/></Response>') == [PlayVerb(url=None, digits="w1#")]
    assert dtmf_ms("ww1234") == 2 * 500 + 4 * DTMF_DIGIT_MS
    for bad in ("<Play/>", '<Play digits="12x"/>', '<Play digits=""/>'):
        with pytest.raises(TwimlError):
            parse_twiml(f"<Response>{bad}</Response>")


async def test_dtmf_gather_action_on_empty_result_requests_the_action(sim, router):
    """twilio.md 4.2: actionOnEmptyResult true → request the action even with no input (DTMF gathers too)."""
    router.legacy_first_twiml = (
        '<Response><Gather input="dtmf" action="/legacy/turn" timeout="1" actionOnEmptyResult="true">'
        "<Say>Press 1</Say></Gather><Say>fell through</Say></Response>"
    )
    router.turn_twiml = "<Response><Hangup/></Response>"
    result = await sim.place_call(CallScript(steps=[], hang_up_when_done=False))
    posted = [data for path, data in router.form_posts if path == "/legacy/turn"]
    assert len(posted) == 1 and "Digits" not in posted[0]
    assert result.ended_by == "twiml_hangup"


async def test_record_keeps_recording_through_a_pause_shorter_than_its_timeout(sim, router):
    """<Record timeout> is the silence that *ends* the recording: a caller quiet for less than it and then
    speaking is recorded; only a silence as long as the timeout ends it with nothing recorded."""
    router.legacy_first_twiml = (
        '<Response><Record action="/rec" timeout="3" playBeep="false"/>'
        "<Say>fell through</Say><Hangup/></Response>"
    )
    router.turn_twiml = "<Response><Hangup/></Response>"
    utterance = Utterance.speechlike("after a breath", duration_ms=800)
    await sim.place_call(CallScript(steps=[Pause(1000), Say(utterance)]))
    posted = [data for path, data in router.form_posts if path == "/rec"]
    assert len(posted) == 1 and posted[0]["RecordingDuration"] == "1"

    router.form_posts.clear()
    result = await sim.place_call(CallScript(steps=[Pause(3000), Say(utterance)], hang_up_when_done=False))
    assert [path for path, _ in router.form_posts if path == "/rec"] == []
    assert result.ended_by == "twiml_hangup"  # fell through to <Say>, <Hangup/>


async def test_the_call_is_completed_in_the_rest_api_before_its_status_callback(sim, router, rest):
    """Twilio sends the final status callback after the call has ended: by then the Call resource says
    completed and an update is refused (21220), not accepted for a call that is already over."""
    router.legacy_first_twiml = "<Response><Say>Bye</Say><Hangup/></Response>"
    result = await sim.place_call(CallScript(steps=[]))
    assert result.status_callback == 204
    assert router.rest_status_at_callback == ["completed"]
