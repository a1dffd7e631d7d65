"""Unit tests of the protocol modules, playback tracking, session building and Voice Live auth."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import orjson
import pytest

from realtime_pipeline.guards import FrameRateLimiter, RateLimitedLog
from realtime_pipeline.history import ConversationHistory
from realtime_pipeline.playback import PlaybackTracker
from realtime_pipeline.session_config import build_session, voice_object
from realtime_pipeline.twilio_media import (
    Mark,
    Media,
    MediaFrameError,
    Start,
    Stop,
    TwilioFrameWriter,
    parse_frame,
)
from realtime_pipeline.voicelive_client import ApiKeyAuth, EntraIdAuth, realtime_url
from realtime_pipeline.voicelive_events import (
    AudioDelta,
    ErrorEvent,
    OtherEvent,
    ResponseDone,
    VoiceLiveEventError,
    append_audio,
    is_fatal,
    message_items,
    parse_event,
    truncate_item,
)
from router.agent_profile import AgentProfile
from router.tool_calls import ToolCall

# Twilio wire format ------------------------------------------------------------------------------------


def test_parse_twilio_events() -> None:
    start = parse_frame(
        orjson.dumps(
            {
                "event": "start",
                "sequenceNumber": "1",
                "start": {
                    "accountSid": "AC1",
                    "streamSid": "MZ1",
                    "callSid": "CA1",
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": {"token": "t"},
                },
                "streamSid": "MZ1",
            }
        )
    )
    assert start == Start("MZ1", "CA1", "AC1", {"token": "t"}, "audio/x-mulaw", 8000)
    media = parse_frame(
        '{"event":"media","streamSid":"MZ1","media":{"track":"inbound","chunk":"2","timestamp":"20","payload":"AAEC"}}'
    )
    assert media == Media("MZ1", "AAEC", b"\x00\x01\x02", 20)
    assert parse_frame('{"event":"mark","streamSid":"MZ1","mark":{"name":"a:1"}}') == Mark("MZ1", "a:1")
    assert parse_frame('{"event":"stop","streamSid":"MZ1","stop":{"callSid":"CA1"}}') == Stop("MZ1", "CA1")


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("nope", "not_json"),
        ("[]", "not_object"),
        ('{"event":"warp"}', "unknown_event"),
        ('{"event":"media","streamSid":"MZ1","media":{"payload":"@@@"}}', "bad_base64"),
        ('{"event":"media","streamSid":"MZ1"}', "bad_media"),
        ('{"event":"mark","streamSid":"MZ1","mark":{}}', "bad_mark"),
        ('{"event":"start","start":{"streamSid":"MZ1"}}', "bad_start"),
        ("x" * (64 * 1024 + 1), "frame_too_large"),
        # 16,385 characters, 65,540 bytes on the wire: the limit is in bytes.
        ('{"event":"media","x":"' + "\U0001f600" * 16_385 + '"}', "frame_too_large"),
    ],
)
def test_bad_twilio_frames_raise_with_a_reason(frame: str, reason: str) -> None:
    with pytest.raises(MediaFrameError) as caught:
        parse_frame(frame)
    assert caught.value.reason == reason


def test_writer_emits_exactly_twilios_three_messages() -> None:
    writer = TwilioFrameWriter('MZ"1')
    assert orjson.loads(writer.media("AAEC")) == {
        "event": "media",
        "streamSid": 'MZ"1',
        "media": {"payload": "AAEC"},
    }
    assert orjson.loads(writer.mark('it"em:1')) == {
        "event": "mark",
        "streamSid": 'MZ"1',
        "mark": {"name": 'it"em:1'},
    }
    assert orjson.loads(writer.clear()) == {"event": "clear", "streamSid": 'MZ"1'}


# Voice Live wire format --------------------------------------------------------------------------------


def test_voicelive_events() -> None:
    delta = parse_event('{"type":"response.audio.delta","response_id":"r","item_id":"i","delta":"AA=="}')
    assert delta == AudioDelta("r", "i", "AA==")
    done = parse_event(
        orjson.dumps(
            {
                "type": "response.done",
                "response": {
                    "id": "r",
                    "status": "completed",
                    "usage": {
                        "total_tokens": 9,
                        "input_tokens": 4,
                        "output_token_details": {"audio_tokens": 3},
                    },
                },
            }
        )
    )
    assert done == ResponseDone(
        "r", "completed", {"total_tokens": 9, "input_tokens": 4, "output_audio_tokens": 3}
    )
    assert parse_event('{"type":"rate_limits.updated","rate_limits":[]}') == OtherEvent("rate_limits.updated")
    assert parse_event('{"type":"error"}') == ErrorEvent("", "", "")
    for bad in ("{", "[]", '{"type": 3}'):
        with pytest.raises(VoiceLiveEventError):
            parse_event(bad)
    assert is_fatal(ErrorEvent("server_error", "", "")) and not is_fatal(
        ErrorEvent("invalid_request_error", "x", "")
    )
    assert orjson.loads(append_audio("AAEC")) == {"type": "input_audio_buffer.append", "audio": "AAEC"}
    assert orjson.loads(truncate_item("i", 120)) == {
        "type": "conversation.item.truncate",
        "item_id": "i",
        "content_index": 0,
        "audio_end_ms": 120,
    }


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        (
            "https://res.services.ai.azure.com",
            "wss://res.services.ai.azure.com/voice-live/realtime?api-version=2025-10-01&model=gpt-realtime",
        ),
        (
            "https://res.cognitiveservices.azure.com/",
            "wss://res.cognitiveservices.azure.com/voice-live/realtime?api-version=2025-10-01&model=gpt-realtime",
        ),
        (
            "http://127.0.0.1:9000",
            "ws://127.0.0.1:9000/voice-live/realtime?api-version=2025-10-01&model=gpt-realtime",
        ),
        (
            "https://x/?foo=bar&api-version=old",
            "wss://x/voice-live/realtime?api-version=2025-10-01&model=gpt-realtime&foo=bar",
        ),
    ],
)
def test_realtime_url(endpoint: str, expected: str) -> None:
    assert realtime_url(endpoint, api_version="2025-10-01", model="gpt-realtime") == expected


def test_realtime_url_rejects_non_http_endpoints() -> None:
    with pytest.raises(ValueError):
        realtime_url("ftp://x", api_version="v", model="m")


@dataclass
class _Token:
    token: str
    expires_on: int


class FakeCredential:
    def __init__(self, now: list[float]) -> None:
        self.now = now
        self.calls: list[tuple[str, ...]] = []
        self.closed = False

    async def get_token(self, *scopes: str, **kwargs: object) -> _Token:
        self.calls.append(scopes)
        return _Token(f"token-{len(self.calls)}", int(self.now[0]) + 3600)

    async def close(self) -> None:
        self.closed = True


async def test_entra_token_is_cached_and_refreshed_before_expiry() -> None:
    now = [1_000_000.0]
    credential = FakeCredential(now)
    auth = EntraIdAuth(credential, refresh_margin_seconds=300, clock=lambda: now[0])
    assert await auth.headers() == {"Authorization": "Bearer token-1"}
    now[0] += 3000  # still more than 5 minutes left
    assert await auth.headers() == {"Authorization": "Bearer token-1"}
    assert credential.calls == [("https://ai.azure.com/.default",)]
    now[0] += 301  # inside the refresh margin: a new token before the old one expires
    assert await auth.headers() == {"Authorization": "Bearer token-2"}
    await auth.close()
    assert credential.closed


async def test_entra_credential_is_built_lazily_and_concurrent_calls_share_one_fetch() -> None:
    import asyncio

    now = [1_000_000.0]
    built: list[FakeCredential] = []

    def factory() -> FakeCredential:
        built.append(FakeCredential(now))
        return built[-1]

    auth = EntraIdAuth(factory, clock=lambda: now[0])
    assert built == []
    tokens = await asyncio.gather(*(auth.token() for _ in range(10)))
    assert set(tokens) == {"token-1"} and len(built) == 1 and len(built[0].calls) == 1


async def test_api_key_auth() -> None:
    assert await ApiKeyAuth("k").headers() == {"api-key": "k"}


# Session ----------------------------------------------------------------------------------------------


def test_session_from_profile() -> None:
    profile = AgentProfile.model_validate(
        {
            "instructions": "Be brief.",
            "voice": "en-US-AvaNeural",
            "temperature": 0.7,
            "max_output_tokens": 200,
            "turn_detection": {
                "type": "azure_semantic_vad",
                "silence_duration_ms": 400,
                "remove_filler_words": True,
            },
            "noise_suppression": True,
            "echo_cancellation": True,
            "input_transcription": "azure-speech",
        }
    )
    session = build_session(profile)
    assert session["voice"] == {"type": "azure-standard", "name": "en-US-AvaNeural"}
    assert session["input_audio_format"] == session["output_audio_format"] == "g711_ulaw"
    assert session["turn_detection"]["type"] == "azure_semantic_vad"
    assert session["turn_detection"]["silence_duration_ms"] == 400
    assert session["turn_detection"]["remove_filler_words"] is True
    assert session["input_audio_noise_reduction"] == {"type": "azure_deep_noise_suppression"}
    assert session["input_audio_echo_cancellation"] == {"type": "server_echo_cancellation"}
    assert session["input_audio_transcription"] == {"model": "azure-speech", "language": "en-US"}
    assert session["temperature"] == 0.7 and session["max_response_output_tokens"] == 200
    pcm = build_session(profile, audio_mode="pcm16", voice_override="Alloy", instructions_override="Other.")
    assert pcm["voice"] == {"type": "openai", "name": "alloy"}
    assert pcm["instructions"] == "Other."
    assert pcm["input_audio_format"] == "pcm16" and pcm["input_audio_sampling_rate"] == 24000
    assert voice_object("en-US-Ava:DragonHDLatestNeural")["type"] == "azure-standard"


# Playback ---------------------------------------------------------------------------------------------


def test_marks_give_heard_position_and_late_echoes_after_clear_are_stale() -> None:
    tracker = PlaybackTracker()
    item = tracker.add_audio("A", 100)
    first = tracker.mark_after(item)
    tracker.add_audio("A", 100)
    second = tracker.mark_after(item)
    tracker.add_audio("A", 100)
    third = tracker.mark_after(item)
    assert len({first, second, third}) == 3
    echo = tracker.echoed(first)
    assert echo is not None and echo.first_for_item and echo.heard_ms == 100
    assert tracker.audio_queued
    cut = tracker.clear()
    assert [(c.item_id, c.heard_ms, c.sent_ms) for c in cut] == [("A", 100, 300)]
    assert not tracker.audio_queued
    # Twilio echoes the cleared marks late; a new response is already queued.
    item_b = tracker.add_audio("B", 100)
    b_mark = tracker.mark_after(item_b)
    assert tracker.echoed(second) is None and tracker.echoed(third) is None
    assert tracker.stale_echoes == 2
    assert tracker.audio_queued  # B's audio is still queued: the late echoes did not pop it
    echo_b = tracker.echoed(b_mark)
    assert echo_b is not None and echo_b.item_id == "B"


def test_an_echo_implies_earlier_marks_played() -> None:
    tracker = PlaybackTracker()
    item = tracker.add_audio("A", 40)
    names = [tracker.mark_after(item)]
    tracker.add_audio("A", 40)
    names.append(tracker.mark_after(item))
    echo = tracker.echoed(names[1])
    assert echo is not None and echo.heard_ms == 80 and not tracker.audio_queued


def test_a_long_reply_echoed_mark_by_mark_gives_every_position() -> None:
    tracker = PlaybackTracker()
    names = []
    for _ in range(500):  # a 10 s reply in 20 ms deltas, all queued at Twilio before the first plays
        item = tracker.add_audio("A", 20)
        names.append(tracker.mark_after(item))
    for n, name in enumerate(names, start=1):
        echo = tracker.echoed(name)
        assert echo is not None and echo.heard_ms == 20 * n and echo.first_for_item == (n == 1)
        assert tracker.audio_queued == (n < 500)
    assert tracker.echoed(names[10]) is None  # a repeated echo is stale
    assert tracker.stale_echoes == 1


def test_echoes_across_interleaved_items_credit_each_item_its_own_position() -> None:
    tracker = PlaybackTracker()
    a = tracker.add_audio("A", 100)
    a1 = tracker.mark_after(a)
    b = tracker.add_audio("B", 40)
    tracker.mark_after(b)
    tracker.add_audio("A", 100)
    tracker.mark_after(a)
    b2 = tracker.mark_after(tracker.add_audio("B", 40))
    echo = tracker.echoed(b2)  # everything before B's second mark has played
    assert echo is not None and echo.item_id == "B" and echo.heard_ms == 80
    assert a.heard_ms == 200 and not tracker.audio_queued
    assert tracker.echoed(a1) is None


def test_unknown_forged_and_malformed_mark_names_are_stale_and_change_nothing() -> None:
    tracker = PlaybackTracker()
    item = tracker.add_audio("A", 100)
    name = tracker.mark_after(item)
    seq = name.rpartition(":")[2]
    for bogus in ("", "A", "A:", "A:x", f"B:{seq}", "A:999", ":1", f"A:{seq}:extra"):
        assert tracker.echoed(bogus) is None
    assert tracker.stale_echoes == 8 and tracker.audio_queued and item.heard_ms == 0
    echo = tracker.echoed(name)
    assert echo is not None and echo.heard_ms == 100


def test_pending_marks_cost_bytes_not_hundreds_of_bytes_each() -> None:
    import tracemalloc

    tracker = PlaybackTracker()
    item = tracker.add_audio("item_Cz3kq9", 20)
    tracker.mark_after(item)  # the first run exists before the measurement
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(1000):
            tracker.add_audio("item_Cz3kq9", 20)
            tracker.mark_after(item)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 16 * 1000  # was 183 bytes a mark: a name, a tuple and an OrderedDict entry


def test_cleared_items_are_remembered_as_cut_and_others_are_not() -> None:
    tracker = PlaybackTracker()
    item_a = tracker.add_audio("A", 100)
    tracker.mark_after(item_a)
    tracker.clear()
    assert tracker.is_cut("A")
    item_b = tracker.add_audio("B", 100)  # the reply to the interruption
    tracker.mark_after(item_b)
    assert not tracker.is_cut("B") and not tracker.is_cut("unknown")


def test_a_long_call_tracks_a_bounded_number_of_items() -> None:
    tracker = PlaybackTracker(max_items=4)
    for n in range(100):  # a reply per turn, each played to the end
        item = tracker.add_audio(f"item{n}", 100)
        echo = tracker.echoed(tracker.mark_after(item))
        assert echo is not None and echo.heard_ms == 100
    assert tracker.tracked_items == 4
    # The newest items keep their positions: more audio of the current reply continues its timeline.
    item = tracker.add_audio("item99", 50)
    assert item.sent_ms == 150


def test_nothing_heard_gives_zero() -> None:
    tracker = PlaybackTracker()
    item = tracker.add_audio("A", 100)
    tracker.mark_after(item)
    assert [(c.heard_ms, c.sent_ms) for c in tracker.clear()] == [(0.0, 100.0)]


# History and guards -----------------------------------------------------------------------------------


def test_history_replays_in_order_and_cuts_interrupted_replies() -> None:
    history = ConversationHistory()
    history.add("user", "u1")
    history.add("assistant", "a1")
    history.set_text("assistant", "a1", "one two three four")
    history.set_text("user", "u1", "hello")  # transcript arrives after the reply started
    history.cut("a1", 0.5)
    assert history.replay_items() == [("user", "hello"), ("assistant", "one two")]
    assert history.chat_messages() == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "one two"},
    ]


def test_history_replays_answered_function_calls_in_place() -> None:
    history = ConversationHistory()
    history.set_text("user", "u1", "Is Tuesday free?")
    history.add_function_call(ToolCall("call_1", "check_availability", '{"day":"Tuesday"}'))
    history.add_function_call(ToolCall("call_2", "never_answered", "{}"))
    history.set_function_output("call_1", '{"free_slots":["09:30"]}')
    history.set_text("assistant", "a1", "Tuesday at nine thirty.")
    assert history.replay_items() == [
        ("user", "Is Tuesday free?"),
        (ToolCall("call_1", "check_availability", '{"day":"Tuesday"}'), '{"free_slots":["09:30"]}'),
        ("assistant", "Tuesday at nine thirty."),
    ]
    # The legacy pipeline gets the answered call as its tool exchange, in its place; the unanswered one not.
    assert history.chat_messages() == [
        {"role": "user", "content": "Is Tuesday free?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "check_availability", "arguments": '{"day":"Tuesday"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"free_slots":["09:30"]}'},
        {"role": "assistant", "content": "Tuesday at nine thirty."},
    ]
    events = [orjson.loads(e) for e in message_items(history.replay_items())]
    assert [e["item"]["type"] for e in events] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
    ]
    assert events[1]["item"] == {
        "type": "function_call",
        "name": "check_availability",
        "call_id": "call_1",
        "arguments": '{"day":"Tuesday"}',
    }
    assert events[2]["item"] == {
        "type": "function_call_output",
        "call_id": "call_1",
        "output": '{"free_slots":["09:30"]}',
    }


def test_rate_limiter_and_rate_limited_log(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limiter = FrameRateLimiter(50, 10, lambda: now[0])
    assert sum(limiter.allow() for _ in range(20)) == 10
    now[0] += 0.1
    assert sum(limiter.allow() for _ in range(20)) == 5
    log = RateLimitedLog(logging.getLogger("test.ratelog"), lambda: now[0], interval=10)
    with caplog.at_level(logging.WARNING, logger="test.ratelog"):
        for _ in range(100):
            log.log(logging.WARNING, "r", "bad")
        now[0] += 11
        log.log(logging.WARNING, "r", "bad")
    assert [r.getMessage() for r in caplog.records] == ["bad", "bad (99 more since last report)"]


def test_a_profile_that_turns_off_reply_creation_fails_at_load() -> None:
    """``create_response: false`` went to Voice Live as it was: it then waits for the client to ask for each
    reply, which the bridge never does, so every caller met an agent that never answered."""
    from pydantic import ValidationError

    from router.agent_profile import TurnDetection

    with pytest.raises(ValidationError, match="create_response"):
        TurnDetection(create_response=False)
    assert TurnDetection().create_response is True
