"""One call's bridge: Twilio media frames in → Voice Live events out, and back.

Two loops run per call. The Twilio loop reads frames, forwards caller audio as ``input_audio_buffer.append``
and turns mark echoes into playback positions. The Voice Live loop forwards response audio to Twilio as
``media`` + a unique ``mark``, handles barge-in (``clear`` + ``truncate``), keeps per-turn latency and
transcripts, and recovers from a lost session (one quick reconnect with the conversation replayed, else the
call moves to legacy). A timer renews the session at a turn boundary before it gets too old.

Everything here exists once per call, hundreds of times per worker: the bridge has ``__slots__``, the buffer
for caller audio exists only while a session is being replaced, and the renewal is a timer, not a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.websockets import WebSocket

from flags.breaker import Outcome
from flags.clock import Clock
from realtime_pipeline.audio import ULAW_BYTES_PER_MS, AudioPath, b64_size
from realtime_pipeline.call_log import CallLog
from realtime_pipeline.call_mover import CallMover
from realtime_pipeline.guards import FrameRateLimiter, RateLimitedLog
from realtime_pipeline.history import ConversationHistory
from realtime_pipeline.outcome import OutcomeReporter
from realtime_pipeline.playback import Interrupted, PlaybackTracker
from realtime_pipeline.playback_gaps import PlaybackGaps
from realtime_pipeline.session_config import (
    greeting_instructions,
    repeat_request_instructions,
    silence_goodbye_instructions,
    silence_reprompt_instructions,
    wait_phrase_instructions,
)
from realtime_pipeline.silence import SilenceAction, SilenceWatch
from realtime_pipeline.stall import StallWatch
from realtime_pipeline.turns import LATE_TRANSCRIPT_TURNS, Turn, TurnTracker
from realtime_pipeline.twilio_media import (
    Dtmf,
    Mark,
    Media,
    MediaFrameError,
    Start,
    Stop,
    TwilioFrameWriter,
    parse_frame,
)
from realtime_pipeline.voicelive_client import (
    ReadySession,
    SessionNotReady,
    VoiceLiveClient,
    VoiceLiveClosed,
    VoiceLiveConnection,
    VoiceLiveError,
    VoiceLiveHandshakeError,
    VoiceLiveUnreachable,
)
from realtime_pipeline.voicelive_events import (
    SESSION_EXPIRED_CODE,
    AssistantTranscriptDone,
    AudioDelta,
    AudioDone,
    ErrorEvent,
    ResponseCreated,
    ResponseDone,
    SpeechStarted,
    SpeechStopped,
    UserTranscriptDone,
    VoiceLiveEvent,
    VoiceLiveEventError,
    append_audio,
    delete_item,
    function_call_output,
    is_fatal,
    message_items,
    parse_event,
    response_create,
    truncate_item,
)
from router.observability import Metrics
from router.records import REALTIME_FULL
from router.tool_calls import ToolCall, ToolResult, ToolRunner, chat_exchange, unavailable_tool

log = logging.getLogger(__name__)

PIPELINE = "realtime"
PREROLL_FRAMES = 25  # 500 ms of caller audio replayed into a renewed session (speech not yet detected)
FLOOD_WINDOW_SECONDS = 10.0
_MARK_TEXT = '"mark"'
_MARK_BYTES = b'"mark"'


class FrameProbe(Protocol):
    """Optional per-frame timing hook (benchmarks): nanoseconds from frame received to frame forwarded."""

    def inbound(self, nanoseconds: int) -> None: ...

    def outbound(self, nanoseconds: int) -> None: ...


@dataclass(frozen=True)
class BridgeConfig:
    greeting: str = ""
    tool_wait_phrase: str = ""  # said when a tool takes longer than tool_wait_seconds ("" says nothing)
    tool_wait_seconds: float = 1.5
    # A call moved to legacy while a tool runs (a booking) waits this long for it as its stream ends, so its
    # answer joins the history legacy goes on from instead of being cut off.
    tool_handover_seconds: float = 10.0
    reply_wait_seconds: float = 10.0  # a reply not begun this long after it was asked is not awaited any more
    handover_history_messages: int = 20  # the legacy history cap (profile legacy.max_history_messages)
    slow_call_seconds: float = 4.0
    open_timeout: float = 5.0
    ready_timeout: float = 5.0
    reconnect_timeout: float = 3.0
    session_max_age_seconds: float = 28 * 60
    move_grace_seconds: float = 10.0
    max_frames_per_second: float = 200.0
    frame_burst: float = 500.0
    flood_close_after: int = 1000  # frames dropped by the rate limiter before the stream is closed
    max_buffered_frames: int = 150  # caller audio held while a session is replaced (3 s)
    # A caller who goes quiet (the profile's ``silence``): 0 seconds turns it off.
    silence_reprompt_seconds: float = 0.0
    silence_reprompt: str = "Are you still there?"
    silence_max_reprompts: int = 2
    silence_goodbye: str = "Goodbye!"
    # A session that sends nothing this long while it owes events (a response under way or asked for) is
    # stuck: it is dropped and handled as lost (stall.py). 0 turns it off.
    stall_seconds: float = 6.0


ACTIVE_RESPONSE_CODE = "conversation_already_has_active_response"
"""The refusal of a ``response.create`` while a response is under way (OpenAI realtime's code, which the
emulator uses; unconfirmed for Voice Live, where a refusal under another code leaves the phrase marked as
playing until a response ends)."""


class _TwilioGone(Exception):
    """Sending to Twilio failed: the stream is over."""


class _BridgeDone(Exception):
    """The Voice Live side is finished (call moved to legacy)."""


class CallBridge:
    __slots__ = (
        "_admitted",
        "_after_tools_choice",
        "_audio",
        "_barge_in",
        "_buffer",
        "_call_sid",
        "_client",
        "_clock",
        "_closers",
        "_closing",
        "_config",
        "_first_audio_anchor",
        "_flood_count",
        "_flood_since",
        "_gaps",
        "_generation",
        "_greeting_requested",
        "_hanging_up",
        "_history",
        "_limiter",
        "_log",
        "_marks_owed",
        "_metrics",
        "_moved",
        "_mover",
        "_no_tools_choice",
        "_outcome",
        "_pending_stages",
        "_playback",
        "_preroll",
        "_probe",
        "_prompt_item",
        "_prompt_playing",
        "_ratelog",
        "_reconnect_spent",
        "_renewal_timer",
        "_replace_lock",
        "_reply_after_response",
        "_reply_awaits_tools",
        "_reply_owed",
        "_reply_owed_at",
        "_response_active",
        "_response_request",
        "_session",
        "_session_started",
        "_silence",
        "_silence_prompt",
        "_speaking_item",
        "_stall",
        "_stalled",
        "_start",
        "_stream_sid",
        "_stream_started",
        "_tasks",
        "_tool_tasks",
        "_tools",
        "_tools_running",
        "_transcribing",
        "_turns",
        "_twilio_stopped",
        "_unwritten",
        "_user_speaking",
        "_vl",
        "_vl_ready",
        "_wait_phrase_playing",
        "_writer",
        "_ws",
        "stats",
    )

    def __init__(
        self,
        *,
        websocket: WebSocket,
        start: Start,
        client: VoiceLiveClient,
        session: dict[str, Any],
        audio: AudioPath,
        mover: CallMover,
        outcome: OutcomeReporter,
        call_log: CallLog,
        metrics: Metrics,
        clock: Clock,
        config: BridgeConfig,
        ratelog: RateLimitedLog,
        probe: FrameProbe | None = None,
        admitted: bool = True,
        tools: ToolRunner | None = None,
    ) -> None:
        self._ws = websocket
        self._tools = tools
        self._tools_running = 0  # tool rounds in flight: no session swap until their answers are in
        self._tool_tasks: set[asyncio.Task[None]] = set()  # those rounds (a subset of _tasks)
        self._wait_phrase_playing = False  # the response covering a slow tool is under way
        self._reply_after_response = False  # the tools answered during it: ask for the reply when it is done
        # The greeting and the silence prompts never call a tool; and a session whose tool_choice is "required"
        # would call one in every response, the reply after the tools' answers included (a loop), so that
        # reply may speak.
        offers_tools = bool(session.get("tools"))
        self._no_tools_choice = "none" if offers_tools else None
        self._after_tools_choice = "auto" if session.get("tool_choice") == "required" else None
        self._admitted = admitted  # False: the worker is full (see realtime_pipeline.admission)
        self._start = start
        self._call_sid = start.call_sid
        self._stream_sid = start.stream_sid
        self._client = client
        self._session = session
        # The profile can make the agent uninterruptible (turn_detection.interrupt_response: false, e.g. for a
        # disclosure that must play whole): Voice Live then finishes the reply over the caller, and so must we.
        turn_detection = session.get("turn_detection")
        self._barge_in = (
            not isinstance(turn_detection, dict) or turn_detection.get("interrupt_response") is not False
        )
        self._audio = audio
        self._mover = mover
        self._outcome = outcome
        self._log = call_log
        self._metrics = metrics
        self._clock = clock
        self._config = config
        self._ratelog = ratelog
        self._probe = probe

        self._writer = TwilioFrameWriter(start.stream_sid)
        self._playback = PlaybackTracker()
        self._gaps = PlaybackGaps()
        self._turns = TurnTracker()
        # Finished turns whose caller transcript is still on its way (it can come after their next utterance
        # has ended), oldest first: each written once it is in, or when more than LATE_TRANSCRIPT_TURNS wait.
        self._unwritten: list[Turn] = []
        self._transcribing = bool(session.get("input_audio_transcription"))
        self._history = ConversationHistory()
        self._limiter = FrameRateLimiter(config.max_frames_per_second, config.frame_burst, clock.monotonic)

        self._vl: VoiceLiveConnection | None = None
        self._vl_ready = False
        self._generation = 0
        self._session_started = 0.0
        self._buffer: deque[str] | None = None  # caller audio held while no session is ready
        self._preroll: deque[str] | None = None  # the newest caller audio, kept while a renewal is opening
        self._replace_lock = asyncio.Lock()
        self._response_active = False
        # The audio item of the response under way, once it has sent some (a barge-in into a gap cuts it).
        self._speaking_item: str | None = None
        # The response.create that began the response under way (None: Voice Live began it on its own), asked
        # again with its own words and tool_choice if a lost session cuts that response off.
        self._response_request: str | None = None
        # The response.create to send again if the session is replaced before the reply it asked for is done
        # (the greeting, or the reply to a finished question).
        self._reply_owed: str | None = None
        self._reply_owed_at = 0.0
        self._reply_awaits_tools = False  # the owed reply is the one the running tools' answers will ask for
        self._marks_owed = 0  # marks sent to Twilio and not yet echoed: after a clear all come back at once
        self._flood_count = 0
        self._flood_since = 0.0
        self._user_speaking = False
        self._reconnect_spent = False
        self._moved = False
        self._hanging_up = False  # the agent is ending the call (Twilio accepted or is asked to)
        self._twilio_stopped = False  # Twilio sent stop: the call is over (no <Connect action> follows)
        self._closing = False
        self._stream_started = clock.monotonic()
        self._first_audio_anchor: float | None = None
        self._greeting_requested: float | None = None
        self._pending_stages: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # side tasks still running, cancelled at the end
        self._closers: set[asyncio.Task[None]] = set()
        self._renewal_timer: asyncio.TimerHandle | None = None
        self._silence_prompt: str | None = None  # the newest silence prompt asked for (_on_silence)
        self._prompt_playing = False  # the response under way is that prompt
        self._prompt_item: str | None = None  # the newest silence prompt's spoken item
        self._silence = SilenceWatch(
            after_seconds=config.silence_reprompt_seconds,
            max_reprompts=config.silence_max_reprompts,
            monotonic=clock.monotonic,
            line_idle=self._line_idle,
            act=self._on_silence,
        )
        self._stall = StallWatch(
            after_seconds=config.stall_seconds, monotonic=clock.monotonic, on_stall=self._on_stall
        )
        self._stalled: VoiceLiveConnection | None = None  # the session dropped because it stalled
        self.stats = {
            "frames_in": 0,
            "frames_out": 0,
            "dropped": 0,
            "barge_ins": 0,
            "reconnects": 0,
            "renewals": 0,
            "playback_gaps": 0,  # Twilio ran out of a reply's audio mid-reply (see playback_gaps.py)
            "playback_gap_ms": 0,
            "tool_calls": 0,
            "tool_waits": 0,  # wait phrases said while a tool was slow
            "silence_reprompts": 0,  # "are you still there?" to a quiet caller
        }

    # Lifecycle -------------------------------------------------------------------------------------------

    async def run(self) -> None:
        self._log.event("stream_started", self._clock.time(), stream_sid=self._stream_sid)
        try:
            if not self._admitted:
                await self._refuse()
            elif await self._open_first_session():
                await self._bridge()
            else:
                await self._wait_for_twilio_stop()
        finally:
            await self._finish()

    async def _bridge(self) -> None:
        self._silence.start()
        twilio = asyncio.create_task(self._twilio_loop(), name=f"twilio-{self._call_sid}")
        voicelive = asyncio.create_task(self._voicelive_loop(), name=f"voicelive-{self._call_sid}")
        try:
            done, _ = await asyncio.wait({twilio, voicelive}, return_when=asyncio.FIRST_COMPLETED)
            if voicelive in done and twilio not in done and (self._moved or self._hanging_up):
                # Twilio ends the stream itself once it runs the redirect (or the agent's hang-up, its REST
                # call perhaps still on its way); closing first would make it run the TwiML after <Connect>
                # instead: legacy, for a moved call or one the agent has just said goodbye to.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(twilio), self._config.move_grace_seconds)
        finally:
            for task in (twilio, voicelive):
                task.cancel()
            results = await asyncio.gather(twilio, voicelive, return_exceptions=True)
            for task, result in zip((twilio, voicelive), results, strict=True):
                # Each loop handles every failure it expects; anything else is a bug that ended this call
                # (and only this call). Gathered with return_exceptions it would vanish without a trace.
                if isinstance(result, Exception):
                    log.error(
                        "%s ended the call with an unexpected error",
                        task.get_name(),
                        exc_info=result,
                        extra={"call_sid": self._call_sid},
                    )
                    self._log.event(
                        "bridge_error", self._clock.time(), loop=task.get_name(), error=repr(result)[:200]
                    )

    async def _finish(self) -> None:
        self._closing = True
        if self._renewal_timer is not None:
            self._renewal_timer.cancel()
        self._silence.stop()
        self._stall.settle()
        # A stream Twilio did not end (a deploy's 1012, a flood's 1008, a lost connection) goes on at the
        # <Connect action>, legacy, as a moved call does.
        to_legacy = self._moved or (self._admitted and not (self._hanging_up or self._twilio_stopped))
        handover = set(self._tool_tasks) if to_legacy else set()
        tasks = [task for task in self._tasks if task not in handover]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if handover:
            # The call goes on at legacy: a tool under way (a booking, whose backend may already have acted)
            # runs to its end, and its answer joins the history legacy reads (_run_tools). It needs no
            # Voice Live session: that is closed first, so it is not billed through the wait.
            if self._vl is not None:
                await _close_quietly(self._vl)
                self._vl = None
            await asyncio.wait(handover, timeout=self._config.tool_handover_seconds)
            for task in handover:
                task.cancel()
            await asyncio.gather(*handover, return_exceptions=True)
        release_trial = False
        if not self._outcome.decided and self._admitted:
            release_trial = not self._report_at_end()
        turn = self._turns.finish()
        if turn is not None:
            self._unwritten.append(turn)
        self._write_finished(everything=True)
        if to_legacy and not self._moved:
            self._hand_over_history()
        try:
            if self._vl is not None:
                await _close_quietly(self._vl)
                self._vl = None
            if self._closers:
                await asyncio.gather(*self._closers, return_exceptions=True)
            self._log.merge({"realtime": {"audio_mode": self._audio.mode, **self.stats}})
            self._log.event("stream_ended", self._clock.time(), **self.stats)
            await self._log.close()
        finally:
            # The breaker's store last: a slow one must not keep the session billed or the record unwritten.
            if release_trial:
                await self._outcome.release_trial()
            await self._outcome.drain()

    def _report_at_end(self) -> bool:
        """The call ended with no outcome yet; False when it says nothing either way. A session that became
        ready and owed the caller nothing is a success. No session ready yet (cancelled while opening), or
        first audio still awaited within the slow-call threshold (the caller hung up early), is no verdict:
        a half-open trial then gives its permit back instead of closing the breaker."""
        anchor = self._first_audio_anchor
        if anchor is None:
            if self._generation == 0:
                return False
            self._outcome.report(Outcome.SUCCESS, "call ended")
        elif self._clock.monotonic() - anchor > self._config.slow_call_seconds:
            self._outcome.report(Outcome.SLOW, "call ended")
        else:
            return False
        return True

    # Voice Live sessions ---------------------------------------------------------------------------------

    async def _open_first_session(self) -> bool:
        try:
            ready = await self._client.open_session(
                self._session,
                open_timeout=self._config.open_timeout,
                ready_timeout=self._config.ready_timeout,
            )
        except VoiceLiveUnreachable as exc:
            return await self._fail_at_start(Outcome.CONNECT_FAILURE, "voicelive_unreachable", exc)
        except VoiceLiveHandshakeError as exc:
            # A refused or reset upgrade leaves no session, like a refused connection: an outage signal
            # for the fast trip (a gateway in front of a dead service resets or answers 503).
            return await self._fail_at_start(Outcome.CONNECT_FAILURE, "voicelive_handshake_failed", exc)
        except SessionNotReady as exc:
            return await self._fail_at_start(Outcome.FAILURE, "voicelive_session_not_ready", exc)
        except VoiceLiveError as exc:
            return await self._fail_at_start(Outcome.FAILURE, "voicelive_closed", exc)
        self._adopt(ready)
        self._vl_ready = True
        self._pending_stages = {"session_connect": ready.connect_ms, "session_ready": ready.ready_ms}
        self._metrics.observe_turn(PIPELINE, "session_connect", ready.connect_ms)
        self._metrics.observe_turn(PIPELINE, "session_ready", ready.ready_ms)
        self._log.merge({"realtime_session": {"connect_ms": ready.connect_ms, "ready_ms": ready.ready_ms}})
        if self._config.greeting:
            now = self._clock.monotonic()
            self._begin_turn(self._stream_started, self._clock.time() - (now - self._stream_started), "")
            self._greeting_requested = now
            greeting = response_create(
                greeting_instructions(self._config.greeting), tool_choice=self._no_tools_choice
            )
            self._ask(greeting)
            await self._request(greeting)
            # From the stream's start: the caller waited in silence through the session's set-up too.
            self._arm_first_audio(self._stream_started)
        else:
            self._turns.skip_greeting()
        return True

    async def _refuse(self) -> None:
        """The worker already serves its limit of realtime calls: move this one to legacy before any Voice
        Live session is opened. Not a Voice Live outcome, so the breaker hears nothing of it, but a half-open
        trial call gives its permit back."""
        self._ratelog.log(
            logging.WARNING,
            REALTIME_FULL,
            "worker at its realtime call limit: call moved to legacy",
            self._call_sid,
        )
        await self._move_to_legacy(REALTIME_FULL)
        await self._outcome.release_trial()  # after the move: the caller does not wait on the store
        await self._wait_for_twilio_stop()

    async def _fail_at_start(self, outcome: Outcome, reason: str, exc: Exception) -> bool:
        log.warning("voice live unavailable at call start: %s", exc, extra={"reason": reason})
        self._metrics.turn_failures.labels(PIPELINE, reason).inc()
        # The WebSocket close code or the upgrade's HTTP status, for the report's failure counts.
        code = exc.status if isinstance(exc, VoiceLiveHandshakeError) else getattr(exc, "code", None)
        self._log.event(
            "voicelive_failed", self._clock.time(), reason=reason, code=code, detail=str(exc)[:200]
        )
        self._outcome.report(outcome, reason)
        await self._move_to_legacy(reason)
        return False

    def _adopt(self, ready: ReadySession) -> None:
        """``ready`` is the call's session from now on (caller audio flows once ``_vl_ready`` is set)."""
        self._vl = ready.connection
        self._generation += 1
        self._stall.settle()  # the new session owes nothing until it is asked
        self._session_started = self._clock.monotonic()
        self._schedule_renewal(self._config.session_max_age_seconds)

    async def _open_next_session(self) -> ReadySession:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation (the caller hung
        # up) that arrives as the session becomes ready, and the bridge would live on with an open session.
        async with asyncio.timeout(self._config.reconnect_timeout * 2):
            return await self._client.open_session(
                self._session,
                open_timeout=self._config.reconnect_timeout,
                ready_timeout=self._config.reconnect_timeout,
            )

    async def _switch_to(self, ready: ReadySession) -> None:
        """Make ``ready`` the call's session: first the conversation so far, then the caller audio held
        meanwhile, in order; only then does new caller audio go to it directly."""
        old = self._vl
        self._vl_ready = False  # from here until the flush ends, caller audio is held, in order
        self._adopt(ready)
        self._response_active = False
        self._speaking_item = None
        self._response_request = None
        self._user_speaking = False
        self._wait_phrase_playing = self._reply_after_response = self._prompt_playing = False
        self._audio.discard_outbound()
        if old is not None and old is not ready.connection:
            self._close_later(old)
        try:
            for event in message_items(self._history.replay_items()):
                await ready.connection.send(event)
        except VoiceLiveClosed:
            return  # lost already: the Voice Live loop sees it and recovers
        await self._flush_buffer()

    def _close_later(self, connection: VoiceLiveConnection) -> None:
        """Close a session no longer used without waiting for it here; the call's end waits for it."""
        closing = asyncio.create_task(_close_quietly(connection))
        self._closers.add(closing)
        closing.add_done_callback(self._closers.discard)

    async def _replace_session(self, reason: str, failed: VoiceLiveConnection | None) -> bool:
        """After ``failed`` was lost or broke: a new session with the conversation so far, and the reply the
        caller is owed asked again. True when it took over."""
        async with self._replace_lock:
            if self._vl is not failed:
                return True  # a renewal replaced it while we waited
            self._vl_ready = False
            try:
                ready = await self._open_next_session()
            except (VoiceLiveError, TimeoutError) as exc:
                log.warning("voice live %s failed: %s", reason, exc, extra={"reason": reason})
                return False
            reply = self._owed_reply()
            if self._reply_awaits_tools and self._tools_running:
                # Asked now, the new session (which never saw the calls) would answer the question afresh
                # and could call a tool that acts (a booking) a second time. The running tools give it their
                # calls and answers when they are in, and ask it for the reply then (_run_tools).
                reply = None
            elif reply is None and self._response_active and not (self._user_speaking and self._barge_in):
                # What was under way is asked again as it was asked: a greeting or a silence prompt (a goodbye)
                # with its own words, the reply after the tools' answers with its tool_choice. Not one the
                # caller is talking over (Voice Live was cancelling it): their words get the next reply.
                reply = self._response_request or response_create()
            asked_of_silence = reply is not None and reply is self._silence_prompt  # no reply to their words
            if reply is not None and not asked_of_silence and self._history.last_question_unknown():
                # Its transcript never came: an apology, no tool call (under "required" it would be one).
                reply = response_create(repeat_request_instructions(), tool_choice=self._no_tools_choice)
            # Audio queued at Twilio is the lost reply's only while that reply was under way; a reply that
            # ended (one the caller spoke over, uninterruptible) plays on before the one owed.
            clear = reply is not None and self._response_active and self._playback.audio_queued
            if clear:
                # The lost reply is asked again: stop what is left of it at Twilio rather than play its
                # beginning twice, and keep in the replayed conversation only the part the caller heard.
                self._cut_history(self._playback.clear())
            await self._switch_to(ready)
            if clear:
                await self._to_twilio(self._writer.clear())
                self._gaps.cleared(self._clock.monotonic())
            if reply is not None:
                self._ask(reply)
                await self._request(reply)
            self.stats["reconnects"] += 1
            self._log.event("voicelive_session_replaced", self._clock.time(), reason=reason)
            return True

    async def _recover(self, cause: str, detail: str, code: int | str | None = None) -> None:
        """The session is unusable: record it, reconnect once, else move the call. Raises _BridgeDone."""
        if self._hanging_up:
            # The goodbye was heard and the call is being ended: no new (billed) session, no move of an ending
            # call to legacy, and no verdict on the service for a socket closing as the call does.
            self._log.event("voicelive_lost", self._clock.time(), cause=cause, code=code, hanging_up=True)
            raise _BridgeDone
        failed = self._vl
        waiting_turn: Turn | None = None  # fails only if no session takes over (see below)
        if cause != SESSION_EXPIRED_CODE:
            self._metrics.turn_failures.labels(PIPELINE, f"voicelive_{cause}").inc()
            self._outcome.report(Outcome.FAILURE, cause)
            # The turn whose reply was owed or playing lost it: a failed turn, as the legacy pipeline
            # records its own (a loss between turns fails none).
            turn = self._turns.current
            owed = self._owed_reply()
            # A reply that waits on running tools is owed for as long as they run (a tool may outlast
            # reply_wait_seconds), and comes once they answer.
            awaiting_tools = bool(self._reply_awaits_tools and self._tools_running)
            if turn is not None and (
                awaiting_tools
                or (self._response_active and not self._prompt_playing)
                or (owed is not None and owed is not self._silence_prompt)
            ):
                if awaiting_tools and (not self._response_active or self._wait_phrase_playing):
                    # Nothing of the reply was lost: it waits on the running tools, and the session that
                    # takes over is asked for it once they answer (_run_tools).
                    waiting_turn = turn
                else:
                    turn.fail(f"voicelive_{cause}", detail)
        self._log.event("voicelive_lost", self._clock.time(), cause=cause, code=code, detail=detail[:200])
        # One quick reconnect per failure: if the new session fails again before completing a response,
        # the service is not healthy enough for this call.
        retry = cause == SESSION_EXPIRED_CODE or not self._reconnect_spent
        if cause != SESSION_EXPIRED_CODE:
            self._reconnect_spent = True
        if retry and await self._replace_session(cause, failed):
            return
        if waiting_turn is not None:
            waiting_turn.fail(f"voicelive_{cause}", detail)
        await self._move_to_legacy(f"voicelive_{cause}")
        raise _BridgeDone

    async def _move_to_legacy(self, reason: str) -> None:
        if self._moved:
            return
        self._moved = True
        self._vl_ready = False
        self._buffer = None
        # Recorded before the REST call: once Twilio accepts the redirect it ends this stream at once,
        # and the bridge may be torn down before the call returns.
        self._metrics.fallbacks.labels(reason).inc()
        self._log.merge({"moved_to_legacy": True, "move_reason": reason})
        heard_agent = self._hand_over_history()
        moved = await self._mover.move_to_legacy(self._call_sid, reason, greet=not heard_agent)
        self._log.event("moved_to_legacy", self._clock.time(), reason=reason, accepted=moved)
        if not moved:
            self._log.merge({"moved_to_legacy": False, "move_failed": reason})
            await self._close_twilio(1011, "realtime unavailable")

    def _hand_over_history(self) -> bool:
        """The legacy pipeline goes on from what was said here (its history, as a moved call's is not implied
        by a greeting of its own); False when the caller never heard the agent."""
        # The audio still queued at Twilio is never heard: the redirect (or the stream's end) drops it.
        self._cut_history(self._playback.clear())
        conversation = self._history.chat_messages()
        if conversation:
            self._log.history(conversation, self._config.handover_history_messages)
        # A tool exchange's assistant message holds the model's calls, not words the caller heard.
        return any(message["role"] == "assistant" and message["content"] for message in conversation)

    def _schedule_renewal(self, delay: float) -> None:
        if self._renewal_timer is not None:
            self._renewal_timer.cancel()
        self._renewal_timer = asyncio.get_running_loop().call_later(delay, self._renewal_due)

    def _renewal_retry_seconds(self) -> float:
        return max(0.01, min(1.0, self._config.session_max_age_seconds / 4))

    def _between_turns(self) -> bool:
        """No one is speaking, no reply is owed or playing: a session can be swapped unheard."""
        return (
            self._vl_ready
            and self._owed_reply() is None
            and not self._response_active
            and not self._user_speaking
            and not self._playback.audio_queued
            and not self._tools_running
        )

    def _renewal_due(self) -> None:
        """Renew an ageing session at a turn boundary, before the service's own limit ends it."""
        self._renewal_timer = None
        if self._moved or self._closing:  # the call is legacy's now, or over
            return
        if self._hanging_up:  # ending: Twilio ends the stream in a moment (a refused hang-up renews later)
            self._schedule_renewal(self._renewal_retry_seconds())
            return
        age = self._clock.monotonic() - self._session_started
        if age < self._config.session_max_age_seconds:  # the session was replaced meanwhile
            self._schedule_renewal(self._config.session_max_age_seconds - age)
        elif self._between_turns() and not self._replace_lock.locked():
            self._spawn(self._renew())
        else:  # mid-turn: look again shortly
            self._schedule_renewal(self._renewal_retry_seconds())

    async def _renew(self) -> None:
        """Open the next session while the old one goes on serving the caller, then switch between turns.
        The switch replays the newest caller audio (``PREROLL_FRAMES``) so that speech starting just then,
        not yet detected by the old session, reaches the new one."""
        async with self._replace_lock:
            if self._clock.monotonic() - self._session_started < self._config.session_max_age_seconds:
                return  # a reconnect replaced the session while we waited (and scheduled its renewal)
            old = self._vl
            self._preroll = deque(maxlen=PREROLL_FRAMES)
            try:
                ready = await self._open_next_session()
            except (VoiceLiveError, TimeoutError) as exc:
                log.warning("voice live renewal failed: %s", exc, extra={"reason": "renewal"})
                ready = None
            preroll, self._preroll = self._preroll, None
            if ready is not None and self._vl is old and self._between_turns():
                held = self._buffer or ()
                self._buffer = deque((*preroll, *held), maxlen=self._config.max_buffered_frames)
                await self._switch_to(ready)  # reschedules the renewal (in _adopt)
                self.stats["renewals"] += 1
                self._log.event("voicelive_session_replaced", self._clock.time(), reason="renewal")
                return
            if ready is not None:  # a turn began meanwhile, or the old session was lost: not now
                self._close_later(ready.connection)
            if self._vl is old and not self._moved and not self._closing:
                self._schedule_renewal(self._renewal_retry_seconds())

    # Twilio → Voice Live ---------------------------------------------------------------------------------

    async def _twilio_loop(self) -> None:
        receive = self._ws.receive
        probe = self._probe
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            received = time.perf_counter_ns() if probe is not None else 0
            frame = message.get("text")
            if frame is None:
                frame = message.get("bytes")
                if frame is None:
                    continue
            paid = self._limiter.allow()
            if paid:
                try:
                    event = parse_frame(frame)
                except MediaFrameError as exc:
                    if exc.reason == "frame_too_large":
                        self._drop(exc.reason)
                        await self._close_twilio(1009, "frame too large")
                        return
                    self._drop(exc.reason)
                    continue
            else:
                owed = self._owed_echo(frame)
                if owed is None:
                    if self._flooded():
                        await self._close_twilio(1008, "too many frames")
                        return
                    continue
                event = owed
            if type(event) is Media:
                if event.stream_sid != self._stream_sid:
                    self._drop("wrong_stream")
                    continue
                if self._moved:
                    continue
                self.stats["frames_in"] += 1
                payload = self._audio.inbound(event.payload, event.audio)
                if not payload:
                    continue  # the pcm16 resampler is still filling its blocks: nothing to append yet
                vl = self._vl
                if self._vl_ready and vl is not None:
                    try:
                        await vl.send(append_audio(payload))
                    except VoiceLiveClosed:
                        if self._vl is vl:
                            self._hold(payload)  # this session is lost: the reconnect flushes it
                        else:
                            await self._forward_late(payload)
                    else:
                        if self._vl is not vl:
                            await self._forward_late(payload)
                        elif self._preroll is not None:
                            self._preroll.append(payload)
                    if probe is not None:
                        probe.inbound(time.perf_counter_ns() - received)
                else:
                    self._hold(payload)
            elif type(event) is Mark:
                if event.stream_sid != self._stream_sid:
                    self._drop("wrong_stream")
                    continue
                if self._marks_owed:
                    self._marks_owed -= 1
                    if paid:  # echoes of our marks never use up the caller's frame budget
                        self._limiter.refund()
                self._on_mark(event.name)
            elif type(event) is Stop:
                if event.stream_sid and event.stream_sid != self._stream_sid:
                    self._drop("wrong_stream")
                    continue
                self._twilio_stopped = True
                return
            elif type(event) is Dtmf:
                if event.stream_sid != self._stream_sid:
                    self._drop("wrong_stream")
                    continue
                self._log.event("dtmf", self._clock.time(), digit=event.digit)
                self._silence.caller_spoke()  # a key press: the caller is there
            else:
                self._drop("unexpected_" + type(event).__name__.lower())

    def _owed_echo(self, frame: str | bytes) -> Mark | None:
        """Over the frame-rate limit: still let through an echo of a mark we sent. After a ``clear`` Twilio
        echoes every pending mark at once (one per reply chunk: hundreds for a long reply); they are owed to
        us, not a flood. Only a frame that names a mark is parsed, so a flood stays cheap to drop."""
        if not self._marks_owed:
            return None
        if _MARK_TEXT not in frame if isinstance(frame, str) else _MARK_BYTES not in frame:
            return None
        try:
            event = parse_frame(frame)
        except MediaFrameError:
            return None
        if type(event) is Mark and event.stream_sid == self._stream_sid:
            return event
        return None

    async def _forward_late(self, payload: str) -> None:
        """A caller frame was on its way to a session that was replaced meanwhile: it belongs to the new one.
        The Twilio loop read nothing newer while it waited, so this keeps the caller's audio in order."""
        vl = self._vl
        if not self._vl_ready or vl is None:
            self._hold(payload)  # the switch is still flushing: join the end of what it holds
            return
        try:
            await vl.send(append_audio(payload))
        except VoiceLiveClosed:
            self._hold(payload)

    def _flooded(self) -> bool:
        """A frame over the limit was dropped; True when so many were dropped lately that the stream is
        closed (counted per window, so a long call's rare bursts never add up to a close)."""
        self._drop("flood")
        self.stats["flood"] = self.stats.get("flood", 0) + 1
        now = self._clock.monotonic()
        if now - self._flood_since > FLOOD_WINDOW_SECONDS:
            self._flood_since = now
            self._flood_count = 0
        self._flood_count += 1
        return self._flood_count > self._config.flood_close_after

    def _on_mark(self, name: str) -> None:
        echo = self._playback.echoed(name)
        if echo is None:
            return
        if echo.first_for_item:
            heard_ms = self._turns.first_heard(echo.item_id, self._clock.monotonic())
            if heard_ms is not None:
                self._metrics.observe_turn(PIPELINE, "heard", heard_ms)
        if not self._playback.audio_queued and not self._response_active:
            self._silence.agent_finished()  # the caller has heard all of it

    def _hold(self, payload: str) -> None:
        """Keep caller audio (the newest ``max_buffered_frames``) until a session is ready for it."""
        buffer = self._buffer
        if buffer is None:
            buffer = self._buffer = deque(maxlen=self._config.max_buffered_frames)
        elif len(buffer) == buffer.maxlen:
            self._drop("held_too_long")  # the oldest held frame makes room
        buffer.append(payload)

    async def _flush_buffer(self) -> None:
        """Send the held caller audio to the new session, then let new audio go to it directly. Frames that
        arrive during the flush join the end of the buffer (``_vl_ready`` is still False), so the session
        hears the caller in order even when a send waits for the socket to drain."""
        connection = self._vl
        buffer = self._buffer
        if connection is None:
            return
        while buffer:
            payload = buffer.popleft()
            try:
                await connection.send(append_audio(payload))
            except VoiceLiveClosed:
                buffer.appendleft(payload)
                return  # lost again: the Voice Live loop recovers, the audio stays held
            if self._vl is not connection or self._moved:
                return
        self._buffer = None
        self._vl_ready = True

    def _drop(self, reason: str) -> None:
        self.stats["dropped"] += 1
        self._metrics.bridge_dropped_frames.labels(reason).inc()
        self._ratelog.log(logging.WARNING, reason, f"dropped Twilio frame: {reason}", self._call_sid)

    # Voice Live → Twilio ---------------------------------------------------------------------------------

    async def _voicelive_loop(self) -> None:
        while not self._moved:
            connection = self._vl
            if connection is None:
                return
            try:
                frame = await connection.recv()
            except VoiceLiveClosed as closed:
                if self._closing or self._moved:
                    return
                if connection is not self._vl:
                    continue  # replaced (renewal, reconnect): read the new one
                cause, detail, code = "lost", f"code={closed.code} {closed.reason}", closed.code
                if connection is self._stalled:  # we dropped it (the 1006 is ours)
                    cause, detail, code = (
                        "stalled",
                        f"nothing from Voice Live for {self._config.stall_seconds:g} s",
                        None,
                    )
                try:
                    await self._recover(cause, detail, code)
                except (_TwilioGone, _BridgeDone):
                    return
                continue
            self._stall.heard()
            received = time.perf_counter_ns() if self._probe is not None else 0
            try:
                event = parse_event(frame)
            except VoiceLiveEventError as exc:
                self._ratelog.log(
                    logging.WARNING, "vl_bad_frame", f"bad Voice Live frame: {exc}", self._call_sid
                )
                continue
            if connection is not self._vl:
                continue  # late event of a session we already replaced
            try:
                await self._on_event(event)
            except (_TwilioGone, _BridgeDone):
                return
            except Exception:
                log.exception("could not handle Voice Live event %s", type(event).__name__)
                continue
            if self._probe is not None and type(event) is AudioDelta:
                self._probe.outbound(time.perf_counter_ns() - received)

    async def _on_event(self, event: VoiceLiveEvent) -> None:
        kind = type(event)
        if kind is AudioDelta:
            assert isinstance(event, AudioDelta)
            await self._on_audio(event)
        elif kind is SpeechStarted:
            assert isinstance(event, SpeechStarted)
            await self._on_speech_started(event.item_id)
        elif kind is SpeechStopped:
            assert isinstance(event, SpeechStopped)
            self._on_speech_stopped(event)
        elif kind is ResponseCreated:
            self._response_active = True
            self._speaking_item = None
            self._stall.expect()
            self._response_request = self._reply_owed
            self._prompt_playing = self._reply_owed is not None and self._reply_owed is self._silence_prompt
            self._silence.response_started()
            if not self._wait_phrase_playing:  # the wait phrase is not the reply the caller is owed
                self._reply_owed = None
        elif kind is AudioDone:
            assert isinstance(event, AudioDone)
            await self._on_audio_done(event)
        elif kind is ResponseDone:
            assert isinstance(event, ResponseDone)
            # A silence prompt or a wait phrase is no turn's reply: its failure loses none.
            turns_reply = not (self._prompt_playing or self._wait_phrase_playing)
            self._response_active = self._prompt_playing = False
            self._speaking_item = None
            self._response_request = None
            self._stall.settle()
            # A reply owed now was asked during this response (the caller spoke over a reply that cannot be
            # interrupted, or it is the one the tools make possible after the wait phrase): still owed.
            self._wait_phrase_playing = False
            self._turns.add_usage(event.usage)
            calls_asked = event.status == "completed" and bool(event.function_calls)
            if self._reply_after_response and calls_asked:
                # This response called tools of its own: the reply after their answers sees the earlier ones
                # too. Asked now, it would run with these calls unanswered (and could call them again).
                self._reply_after_response = False
            elif self._reply_after_response:
                self._reply_after_response = False
                reply = response_create(tool_choice=self._after_tools_choice)
                self._ask(reply)
                await self._request(reply)
            elif self._owed_reply() is not None and not self._reply_awaits_tools:
                self._stall.expect()  # words spoken over this reply are owed one of their own
            if event.status == "completed":
                self._reconnect_spent = False
                if calls_asked:
                    self._on_function_calls(event.function_calls)
            elif event.status == "failed" and turns_reply and self._turns.current is not None:
                self._turns.current.fail("voicelive_response", "response failed")
            if not self._playback.audio_queued:
                self._silence.agent_finished()  # nothing of it left to play (or it had no audio)
            else:
                self._silence.activity()
        elif kind is AssistantTranscriptDone:
            assert isinstance(event, AssistantTranscriptDone)
            self._history.set_text("assistant", event.item_id, event.transcript)
            self._turns.assistant_transcript(event.item_id, event.transcript)
        elif kind is UserTranscriptDone:
            assert isinstance(event, UserTranscriptDone)
            self._history.set_text("user", event.item_id, event.transcript)
            self._turns.user_transcript(event.item_id, event.transcript)
            if self._unwritten:
                self._write_finished()
        elif kind is ErrorEvent:
            assert isinstance(event, ErrorEvent)
            await self._on_error(event)

    async def _on_audio(self, event: AudioDelta) -> None:
        if self._playback.is_cut(event.item_id):
            return  # the caller interrupted this item; its remaining audio must not play
        try:
            payload, twilio_bytes, _ = self._audio.outbound(event.delta)
        except ValueError:
            self._ratelog.log(logging.WARNING, "vl_bad_audio", "bad base64 in audio delta", self._call_sid)
            return
        # Positions count the audio sent to Twilio, not the audio received: in pcm16 the resampler still
        # holds some, and a truncate must never cut audio the caller could not have heard.
        audio_ms = twilio_bytes / ULAW_BYTES_PER_MS
        item = self._playback.add_audio(event.item_id, audio_ms, self._generation)
        if not twilio_bytes:
            return
        first = item.marks == 0
        await self._to_twilio(self._writer.media(payload))
        if gap_ms := self._gaps.sent(event.item_id, self._clock.monotonic(), audio_ms):
            self._on_gap(gap_ms)
        await self._to_twilio(self._writer.mark(self._playback.mark_after(item)))
        self._marks_owed += 1
        self.stats["frames_out"] += 1
        if first:
            if self._response_active:
                self._speaking_item = event.item_id
            self._on_first_audio(event.item_id)

    def _on_function_calls(self, calls: tuple[ToolCall, ...]) -> None:
        """A response ended asking for tools: run them beside the call (audio keeps flowing both ways)."""
        # Voice Live has answered: what the tools take is ours, not the service's, and must not count as a
        # slow call against it.
        self._report_first_answer(self._clock.monotonic(), "first response (tool call)")
        # The caller waits for the reply the tools' answers make possible: owed from now, so a session that
        # replaces a lost one meanwhile is asked for it too, with the answers (_run_tools).
        self._ask(response_create(tool_choice=self._after_tools_choice), awaits_tools=True)
        for call in calls:
            self._history.add_function_call(call)
        self._tools_running += 1
        task = self._spawn(self._run_tools(calls, self._generation))
        self._tool_tasks.add(task)
        task.add_done_callback(self._tool_tasks.discard)

    async def _run_tools(self, calls: tuple[ToolCall, ...], generation: int) -> None:
        """Run the calls, give Voice Live their answers and ask it to go on speaking.

        A tool the profile does not have, or no tools at all, is answered with an error output like any failed
        tool, so the model can say so. If the session that asked was replaced meanwhile, the new one never saw
        the calls: it is given each call with its answer (as a replay would), then asked for the reply it was
        not asked for when it took over. If the caller has started talking again, the answers are added
        without a ``response.create``: the reply to the caller's new words will see them. A reply already
        begun (or committed to) without them is followed by a ``response.create`` once it is over.
        """
        work: asyncio.Future[list[ToolResult]] | None = None
        try:
            started = self._clock.monotonic()
            turn = self._turns.current
            if self._tools is not None:
                work = asyncio.ensure_future(
                    self._tools.run_all(
                        calls,
                        call_sid=self._call_sid,
                        pipeline=PIPELINE,
                        turn=turn.index if turn is not None else None,
                    )
                )
                if self._config.tool_wait_phrase:
                    done, _ = await asyncio.wait({work}, timeout=self._config.tool_wait_seconds)
                    if not done:
                        await self._say_wait_phrase()
                results = await work
            else:
                results = [unavailable_tool(call) for call in calls]
            self.stats["tool_calls"] += len(results)
            if turn is not None:
                turn.tool_calls.extend(result.record() for result in results)
                turn.stages["tool"] = turn.stages.get("tool", 0.0) + (
                    (self._clock.monotonic() - started) * 1000.0
                )
            # Under the lock a session swap is either over (the new session gets the calls here) or not begun
            # (its replay carries them, answered).
            async with self._replace_lock:
                answered = [(call, result.output) for call, result in zip(calls, results, strict=True)]
                if self._moved:
                    # Legacy has the call now: it learns what the tool did (its history was handed over
                    # without this unanswered exchange).
                    self._log.history(chat_exchange(answered), self._config.handover_history_messages)
                    return
                for call, output in answered:
                    self._history.set_function_output(call.call_id, output)
                if self._closing:  # a stream that goes on at legacy hands this over with the rest (_finish)
                    return
                if generation == self._generation:
                    items = [function_call_output(call.call_id, output) for call, output in answered]
                else:
                    items = message_items(answered)
                for item in items:
                    await self._send_vl(item)
                if self._wait_phrase_playing:
                    # Asked for once the wait phrase is done; also when its response.created is still on the
                    # way: the service has begun it, and would refuse a second response meanwhile.
                    self._reply_after_response = True
                elif self._owed_reply() is not None and not self._reply_awaits_tools:
                    # The caller spoke again and their words were committed: Voice Live has begun the reply to
                    # them (its response.created is on the way) without these answers, and would refuse a
                    # second response. The answers are asked about once that reply is over.
                    self._reply_after_response = True
                elif self._response_active and not self._user_speaking:
                    # That reply has begun (its response.created is in): it was made without these answers
                    # too, and is asked about them once it is over.
                    self._reply_after_response = True
                elif not self._response_active and not self._user_speaking:
                    reply = response_create(tool_choice=self._after_tools_choice)
                    self._ask(reply)
                    await self._request(reply)
        finally:
            if work is not None and not work.done():
                work.cancel()
            self._tools_running -= 1

    async def _say_wait_phrase(self) -> None:
        """A tool is slow: the agent says the profile's wait phrase, unless the caller or the agent is already
        talking or a new session is being swapped in. A session that took over from the one whose response
        asked for the tools says it too: it was not asked for the reply, which waits for the answers. Nor
        while a reply to the caller's newer words is awaited (Voice Live would refuse the phrase as a second
        response, and the bridge would take that reply for the phrase)."""
        if not self._vl_ready or self._moved or self._closing or self._response_active or self._user_speaking:
            return
        if self._owed_reply() is not None and not self._reply_awaits_tools:
            return
        self._wait_phrase_playing = True
        self.stats["tool_waits"] += 1
        await self._request(
            response_create(wait_phrase_instructions(self._config.tool_wait_phrase), tool_choice="none")
        )

    def _line_idle(self) -> bool:
        """Nobody speaks, nothing plays, nothing is awaited: the caller's silence counts (silence.py). A silence
        prompt that has not begun by the time the watch looks again (a quiet spell later) was declined: it is
        not awaited any more."""
        if self._reply_owed is not None and self._reply_owed is self._silence_prompt:
            self._reply_owed = None
        return not self._moved and not self._closing and self._between_turns()

    def _on_silence(self, action: SilenceAction) -> None:
        """The caller has been quiet for the profile's ``silence.reprompt_after_seconds`` (see silence.py)."""
        if self._moved or self._closing:  # the call is legacy's now, or over
            return
        if action is SilenceAction.HANG_UP:
            self._spawn(self._hang_up("silence"))
            return
        if action is SilenceAction.REPROMPT:
            self.stats["silence_reprompts"] += 1
            self._log.event("silence_reprompt", self._clock.time(), count=self._silence.reprompts)
            instructions = silence_reprompt_instructions(self._config.silence_reprompt)
        else:
            self._log.event("silence_goodbye", self._clock.time())
            instructions = silence_goodbye_instructions(self._config.silence_goodbye)
        prompt = response_create(instructions, tool_choice=self._no_tools_choice)
        # Owed until it begins, like the greeting: a renewal does not swap its session out meanwhile, and a
        # session lost before it began is asked for it again.
        self._ask(prompt)
        self._silence_prompt = prompt
        self._spawn(self._request(prompt))

    async def _hang_up(self, reason: str) -> None:
        """End the call through Twilio's REST API. Recorded first: once Twilio accepts, it ends the stream at
        once and this bridge may be torn down before the call returns. A refused hang-up leaves the call open
        (the caller may still speak); it is not tried again."""
        self._hanging_up = True
        self._log.merge({"ended_by": "agent", "end_reason": reason})
        self._log.event("hang_up", self._clock.time(), reason=reason)
        if reason == "silence":
            self._metrics.silence_hang_ups.labels(PIPELINE).inc()
        if not await self._mover.hang_up(self._call_sid, reason):
            self._hanging_up = False
            self._log.merge({"ended_by": None, "hang_up_failed": reason})
            self._log.event("hang_up_failed", self._clock.time(), reason=reason)

    def _on_gap(self, gap_ms: float) -> None:
        """The caller heard ``gap_ms`` of silence in mid-reply: counted for the turn, the call and the metric."""
        self.stats["playback_gaps"] += 1
        self.stats["playback_gap_ms"] += round(gap_ms)
        self._metrics.playback_gaps.observe(gap_ms / 1000.0)
        turn = self._turns.current
        if turn is not None:
            turn.playback_gaps += 1
            turn.playback_gap_ms += gap_ms

    def _on_first_audio(self, item_id: str) -> None:
        now = self._clock.monotonic()
        self._history.add("assistant", item_id)
        # A silence prompt is no reply to the caller's words: a turn whose words got none keeps no latency.
        if self._prompt_playing:
            self._prompt_item = item_id
        response_ms = self._turns.first_audio(item_id, now, reply=not self._prompt_playing)
        turn = self._turns.current
        if response_ms is not None and turn is not None:
            if turn.index == 0 and self._greeting_requested is not None:
                first_audio_ms = (now - self._greeting_requested) * 1000.0
            else:
                first_audio_ms = response_ms
            turn.stages["first_audio"] = first_audio_ms
            self._metrics.observe_turn(PIPELINE, "response", response_ms)
            self._metrics.observe_turn(PIPELINE, "first_audio", first_audio_ms)
        self._report_first_answer(now, "first audio")

    def _report_first_answer(self, now: float, reason: str) -> None:
        """The call's first answer from Voice Live decides its outcome: a success, or slow past the threshold."""
        if not self._outcome.decided and self._first_audio_anchor is not None:
            elapsed = now - self._first_audio_anchor
            outcome = Outcome.SLOW if elapsed > self._config.slow_call_seconds else Outcome.SUCCESS
            self._outcome.report(outcome, reason)

    async def _on_audio_done(self, event: AudioDone) -> None:
        tail = self._audio.flush_outbound()
        if not tail or self._playback.is_cut(event.item_id):
            return
        audio_ms = b64_size(tail) / ULAW_BYTES_PER_MS
        item = self._playback.add_audio(event.item_id, audio_ms, self._generation)
        first = item.marks == 0  # a reply short enough to fit in the resampler's tail
        await self._to_twilio(self._writer.media(tail))
        if gap_ms := self._gaps.sent(event.item_id, self._clock.monotonic(), audio_ms):
            self._on_gap(gap_ms)
        await self._to_twilio(self._writer.mark(self._playback.mark_after(item)))
        self._marks_owed += 1
        if first:
            self._on_first_audio(event.item_id)

    async def _on_speech_started(self, user_item_id: str) -> None:
        self._user_speaking = True
        self._reply_owed = None  # the caller speaks again: a new question, a new reply
        self._reply_awaits_tools = False
        if not self._response_active and not self._wait_phrase_playing:
            # Nothing is owed while they talk (a turn end may have begun no reply: the caller had not finished);
            # their speech_stopped, or a response.created, starts the watch again.
            self._stall.settle()
        self._silence.caller_spoke()
        self._reply_after_response = False
        if not self._barge_in:
            return
        self._response_request = None  # Voice Live cancels what was under way: not to be asked again
        if self._playback.audio_queued:
            # Barge-in: the caller talks over audio still queued at Twilio.
            await self._to_twilio(self._writer.clear())
            self._gaps.cleared(self._clock.monotonic())
            self._audio.discard_outbound()
            cuts = self._playback.clear()
        elif self._response_active and self._speaking_item is not None:
            # The caller talks into a gap of a slow reply: Twilio has played all it had, but the reply is not
            # over. Its late audio must not play over them, and Voice Live must know how much was heard.
            self._audio.discard_outbound()
            cut = self._playback.cut(self._speaking_item)
            cuts = [cut] if cut is not None else []
        else:
            return
        for cut in self._cut_history(cuts):
            if cut.heard_ms >= 1.0:
                await self._send_vl(truncate_item(cut.item_id, int(cut.heard_ms)))
            else:
                # Nothing of it was heard; a truncate to 0 is rejected, so remove the item instead.
                await self._send_vl(delete_item(cut.item_id))
            self._log.event(
                "barge_in",
                self._clock.time(),
                item_id=cut.item_id,
                heard_ms=int(cut.heard_ms),
                sent_ms=int(cut.sent_ms),
            )
        # Talking over a silence prompt ("are you still there?") cuts no turn's reply: the turn before it was
        # answered long ago, and the caller's words are their answer to the prompt, not a barge-in on it.
        if not all(cut.item_id == self._prompt_item for cut in cuts):
            if self._turns.current is not None:
                self._turns.current.interrupted = True
            self._turns.interrupting(user_item_id)
        self.stats["barge_ins"] += 1
        self._metrics.barge_ins.labels(PIPELINE).inc()

    def _cut_history(self, cuts: list[Interrupted]) -> list[Interrupted]:
        """Items cut at Twilio keep in the conversation only the part the caller heard (those of a replaced
        session too: one still playing at Twilio is cut later); returns those of the current session (an item
        of a replaced session was never in the new one: Voice Live is told nothing of it)."""
        for cut in cuts:
            self._history.cut(cut.item_id, cut.heard_ms / cut.sent_ms if cut.sent_ms else 0.0)
        return [cut for cut in cuts if cut.generation == self._generation]

    def _ask(self, reply: str, *, awaits_tools: bool = False) -> None:
        """``reply`` (a response.create) is what the caller waits for until a response begins; with
        ``awaits_tools``, it is sent by the running tools once their answers are in."""
        self._reply_owed = reply
        self._reply_owed_at = self._clock.monotonic()
        self._reply_awaits_tools = awaits_tools

    def _owed_reply(self) -> str | None:
        """The reply still awaited: one not begun within ``reply_wait_seconds`` (the service declined, or its
        semantic end of turn decided the caller had not finished) is not awaited any more."""
        if (
            self._reply_owed is not None
            and self._clock.monotonic() - self._reply_owed_at > self._config.reply_wait_seconds
        ):
            self._reply_owed = None
        return self._reply_owed

    def _on_speech_stopped(self, event: SpeechStopped) -> None:
        self._user_speaking = False
        self._silence.activity()
        now = self._clock.monotonic()
        self._begin_turn(now, self._clock.time(), event.item_id)
        self._history.add("user", event.item_id)
        # Voice Live creates the reply itself (the profile's create_response is always on); asked again if
        # the session is lost.
        self._ask(response_create())
        self._stall.expect()
        self._arm_first_audio(now)

    async def _on_error(self, event: ErrorEvent) -> None:
        if event.code == SESSION_EXPIRED_CODE:
            await self._recover(SESSION_EXPIRED_CODE, event.message)
        elif is_fatal(event):
            await self._recover(
                "error", f"{event.type}/{event.code}: {event.message}", event.code or event.type
            )
        else:
            if not self._response_active:
                self._stall.settle()  # a refusal is an answer: the request it refused owes nothing more
            if event.code == ACTIVE_RESPONSE_CODE and self._wait_phrase_playing:
                self._wait_phrase_refused()
            self._ratelog.log(
                logging.WARNING,
                f"vl_error_{event.code or event.type}",
                f"Voice Live error {event.type}/{event.code}: {event.message}",
                self._call_sid,
            )

    def _wait_phrase_refused(self) -> None:
        """Voice Live refused the wait phrase as a second response: it had begun one of its own, the reply to
        words the caller said as the phrase was asked for (no other request goes out while the phrase is
        pending). That response, already begun or on its way, is not the phrase: when it began it was taken
        for it, and the reply it gives stayed owed, to be asked again after a loss and awaited by the stall
        watch (which then dropped a healthy session)."""
        self._wait_phrase_playing = False
        if self._response_active and not self._reply_awaits_tools:
            self._reply_owed = None

    # Turns and outcome -----------------------------------------------------------------------------------

    def _begin_turn(self, anchor: float, at: float, user_item_id: str) -> None:
        finished = self._turns.begin(anchor, at, user_item_id)
        if finished is not None:
            self._unwritten.append(finished)
            self._write_finished()
        if self._pending_stages and self._turns.current is not None:
            self._turns.current.stages.update(self._pending_stages)
            self._pending_stages = {}

    def _write_finished(self, *, everything: bool = False) -> None:
        """Write the finished turns, in order, whose caller's words are known (or will never be)."""
        held = self._unwritten
        while held and (
            everything
            or len(held) > LATE_TRANSCRIPT_TURNS
            or held[0].user_transcribed
            or not held[0].user_item_id
            or not self._transcribing
        ):
            self._write_turn(held.pop(0))

    def _write_turn(self, turn: Turn) -> None:
        self._log.turn(turn.record(self._call_sid))

    def _arm_first_audio(self, anchor: float) -> None:
        if self._outcome.decided or self._first_audio_anchor is not None:
            return
        self._first_audio_anchor = anchor
        self._spawn(self._first_audio_watchdog(anchor))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _first_audio_watchdog(self, anchor: float) -> None:
        await asyncio.sleep(max(0.0, anchor + self._config.slow_call_seconds - self._clock.monotonic()))
        if not self._outcome.decided:
            self._log.event("first_audio_slow", self._clock.time())
            self._outcome.report(Outcome.SLOW, "no first audio within the slow-call threshold")

    # Sending -----------------------------------------------------------------------------------------

    async def _to_twilio(self, text: str) -> None:
        try:
            await self._ws.send_text(text)
        except Exception as exc:
            raise _TwilioGone from exc

    async def _request(self, response_create_event: str) -> None:
        """Send a ``response.create``: the session owes its ``response.created`` (or a refusal) from now."""
        self._stall.expect()
        await self._send_vl(response_create_event)

    def _on_stall(self, quiet_seconds: float) -> None:
        """The session sent nothing for ``stall_seconds`` while it owed events: drop it (a stuck peer would not
        answer a close handshake), and the Voice Live loop handles the loss as a stall (stall.py)."""
        connection = self._vl
        if connection is None or self._moved or self._closing or self._hanging_up:
            return
        log.warning("voice live session stalled: nothing for %.1f s", quiet_seconds)
        self._stalled = connection
        connection.abort()

    async def _send_vl(self, text: str) -> None:
        if self._vl is None:
            return
        with contextlib.suppress(VoiceLiveClosed):
            await self._vl.send(text)

    async def _close_twilio(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self._ws.close(code, reason)

    async def _wait_for_twilio_stop(self) -> None:
        """After a move at call start, let Twilio end the stream (draining frames) for a bounded time."""

        async def drain() -> None:
            while True:
                message = await self._ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                with contextlib.suppress(MediaFrameError):
                    if type(parse_frame(message.get("text") or message.get("bytes") or b"")) is Stop:
                        return

        with contextlib.suppress(TimeoutError, Exception):
            await asyncio.wait_for(drain(), self._config.move_grace_seconds)


async def _close_quietly(connection: VoiceLiveConnection) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2.0):
            await connection.close()
