"""The legacy turn loop: greeting, caller turns, silence handling, failures, and what each turn records.

One caller turn is STT (ours, in ``azure`` mode) → LLM → TTS → Blob upload → ``<Play>`` + listen again,
all under one deadline well inside Twilio's 15 s webhook timeout. Whatever fails or runs late, the caller
hears an apology and the call keeps listening; the turn record says which stage failed and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from legacy_pipeline.history import WRITE_TIMEOUT_S, ConversationState, TurnCounters
from legacy_pipeline.llm import ChatMessage, ChatReply
from legacy_pipeline.phrase_cache import PhraseAudio, PhraseCache, PhraseFailed
from legacy_pipeline.services import LegacyServices
from legacy_pipeline.ssml import clean_text
from legacy_pipeline.stt import parse_wav
from legacy_pipeline.twiml import TwimlBuilder
from router.agent_profile import AgentProfile
from router.observability import Metrics
from router.record_writer import BatchWriter
from router.records import Pipeline, TurnRecord
from router.settings import Settings
from router.store.base import StateStore
from router.tool_calls import ToolRunner, chat_exchange

log = logging.getLogger("legacy_pipeline.turns")

PIPELINE = Pipeline.LEGACY.value


class EmptyReply(Exception):
    """The model answered with no text."""


class StageTimer:
    """Milliseconds per completed stage, and which stage is running now (for failure attribution)."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}
        self.current = "turn"

    def enter(self, name: str) -> None:
        self.current = name

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.current = name
        started = time.perf_counter()
        yield
        self.stages[name] = (time.perf_counter() - started) * 1000.0


def bound_text(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, at a word boundary when there is one nearby."""
    text = clean_text(text)
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:")


def describe(exc: BaseException) -> str:
    if isinstance(exc, PhraseFailed):
        exc = exc.cause
    name = type(exc).__name__
    message = str(exc).strip()
    return f"{name}: {message}"[:300] if message else name


class TurnLoop:
    def __init__(
        self,
        *,
        settings: Settings,
        profile: AgentProfile,
        store: StateStore,
        metrics: Metrics,
        services: LegacyServices,
        wall_time: Callable[[], float],
        twiml: TwimlBuilder,
        phrases: PhraseCache,
        records: BatchWriter,
        tools: ToolRunner | None = None,
    ) -> None:
        self._settings = settings
        self._tools = tools if tools else None
        self._profile = profile
        self._options = profile.legacy
        self._store = store
        self._metrics = metrics
        self._services = services
        self._wall_time = wall_time
        self._twiml = twiml
        self._phrases = phrases
        self._records = records
        self._state = ConversationState(
            store, metrics, cap=profile.legacy.max_history_messages, greeting=profile.greeting
        )
        self._deadline_s = settings.legacy_turn_deadline_seconds
        self._system = {"role": "system", "content": profile.instructions}
        self._phrase_documents: dict[str, str] = {}

    @property
    def greeting(self) -> str:
        return self._profile.greeting

    @property
    def apology(self) -> str:
        return self._options.apology

    @property
    def fixed_phrases(self) -> list[str]:
        """Every phrase the loop may play that does not depend on the conversation."""
        return [self._options.reprompt, self._options.goodbye, self._settings.legacy_resume_phrase]

    async def warm(self, text: str) -> PhraseAudio:
        return await self._phrase(text, StageTimer())

    async def _phrase(self, text: str, timer: StageTimer) -> PhraseAudio:
        timer.enter("tts")
        return await self._phrases.get(
            text, voice=self._profile.voice, language=self._profile.language, on_stage=timer.enter
        )

    # First turn -------------------------------------------------------------------------------
    async def first_turn(
        self, call_sid: str, *, moved: bool = False, greet: bool = False, received_at: float | None = None
    ) -> str:
        """Greeting (turn 0) for a new call; a short resume line for a call moved over from realtime, or the
        greeting when its caller heard nothing there (``greet``).

        The greeting awaits no store write: its history and counters are implied (see ``history``) and
        its turn record is written behind the answer.
        """
        received_at = time.perf_counter() if received_at is None else received_at
        if moved:
            return await self._resume(call_sid, received_at, greet=greet)
        greeting = self._profile.greeting
        timer = StageTimer()
        record = TurnRecord(
            call_sid=call_sid, pipeline=Pipeline.LEGACY, turn=0, at=self._wall_time(), assistant_text=greeting
        )
        if greeting:
            twiml = await self._phrase_twiml(greeting, received_at, timer, record)
        else:
            twiml = self._twiml.listen()
        self._finish(record, timer, received_at)
        return twiml

    async def _last_recorded_turn(self, call_sid: str) -> int:
        """The highest turn number the call's records hold so far (0 when none, or they cannot be read)."""
        try:
            earlier = await self._store.list_turns(call_sid=call_sid)
            return max((int(t.get("turn", 0)) for t in earlier), default=0)
        except Exception:
            self._store_failed("list_turns")
            return 0

    async def _resume(self, call_sid: str, received_at: float, *, greet: bool) -> str:
        last_turn = await self._last_recorded_turn(call_sid)
        # The conversation so far is in the history as realtime left it, without an implied greeting; a caller
        # who heard nothing there is greeted now, and the history implies that greeting as a new call's does.
        greeting = self._profile.greeting if greet else ""
        await self._state.save_counters(
            call_sid, TurnCounters(last_turn=last_turn, empty_turns=0, greeted=bool(greeting), recount=True)
        )
        await self._event(call_sid, {"type": "legacy.resumed", "after_turn": last_turn, "greeted": greet})
        if greet and not greeting:
            return self._twiml.listen()
        line = greeting or self._settings.legacy_resume_phrase
        timer = StageTimer()
        try:
            async with asyncio.timeout(self._remaining(received_at)):
                phrase = await self._phrase(line, timer)
            return self._twiml.play_and_listen(phrase.url)
        except Exception as exc:
            self._failed(call_sid, timer.current, exc)
            return self._twiml.say_and_listen(line)

    # Caller turns -----------------------------------------------------------------------------
    async def speech_turn(
        self, call_sid: str, speech: str | None, *, received_at: float, confidence: float | None = None
    ) -> str:
        """A ``<Gather>`` result: Twilio already recognised the caller (``SpeechResult``, ``Confidence``)."""
        return await self._caller_turn(call_sid, received_at, speech=speech or "", confidence=confidence)

    async def recording_turn(self, call_sid: str, recording_url: str | None, *, received_at: float) -> str:
        """A ``<Record>`` result: download the recording and recognise it ourselves."""
        if not recording_url:
            return await self._caller_turn(call_sid, received_at, speech="")
        return await self._caller_turn(call_sid, received_at, recording_url=recording_url)

    async def _caller_turn(
        self,
        call_sid: str,
        received_at: float,
        *,
        speech: str = "",
        recording_url: str | None = None,
        confidence: float | None = None,
    ) -> str:
        counters = await self._state.counters(call_sid)
        if counters.recount:
            # Seconds after the move: the bridge's last turn, written as its stream ended, is stored by now.
            counters.last_turn = max(counters.last_turn, await self._last_recorded_turn(call_sid))
            counters.recount = False
        turn = counters.last_turn + 1
        timer = StageTimer()
        record = TurnRecord(
            call_sid=call_sid,
            pipeline=Pipeline.LEGACY,
            turn=turn,
            at=self._wall_time(),
            stt_confidence=confidence,
        )
        if self._twiml.endpointing_ms is not None:
            record.stages["endpointing"] = self._twiml.endpointing_ms
        scope = asyncio.timeout(self._remaining(received_at))
        try:
            async with scope:
                if recording_url is not None:
                    with timer.stage("recording"):
                        wav = await self._services.recordings.fetch(recording_url)
                    record.usage["stt_audio_ms"] = _wav_duration_ms(wav)  # billed by audio length
                    with timer.stage("stt"):
                        speech = await self._services.recognizer.transcribe(
                            wav, language=self._profile.language
                        )
                user_text = bound_text(speech, self._options.max_speech_chars)
                if user_text:
                    record.user_text = user_text
                    counters.last_turn, counters.empty_turns = turn, 0
                    audio_url, exchanged = await self._respond(call_sid, counters, user_text, timer, record)
            if not user_text:
                # Outside this scope: the re-prompt has a deadline of its own and falls back to <Say>. Under
                # both, this one could win the race and answer silence with the apology (and a failed turn).
                return await self._empty_turn(call_sid, counters, received_at)
            # Outside the deadline: once the reply is uploaded the caller hears it, so the history must say
            # so (a deadline hit while this write was acknowledged used to play the apology instead, and the
            # next turn believed the unheard reply had been said). The tools' calls and answers go in too:
            # a later turn must know what a tool did (a booking made), not only what was said of it.
            timer.current = "history"
            await self._state.append(
                call_sid,
                [
                    {"role": "user", "content": user_text},
                    *exchanged,
                    {"role": "assistant", "content": record.assistant_text},
                ],
            )
            twiml = self._twiml.play_and_listen(audio_url)
        except Exception as exc:
            counters.last_turn, counters.empty_turns = turn, 0
            stage = "deadline" if timer.current == "turn" else timer.current
            record.error = f"deadline of {self._deadline_s:g}s exceeded" if scope.expired() else describe(exc)
            record.error_stage = stage
            self._failed(call_sid, stage, exc)
            twiml = self._twiml.say_and_listen(self._options.apology)
        await self._state.save_counters(call_sid, counters)
        self._finish(record, timer, received_at)
        return twiml

    async def _respond(
        self, call_sid: str, counters: TurnCounters, user_text: str, timer: StageTimer, record: TurnRecord
    ) -> tuple[str, list[ChatMessage]]:
        """The reply's audio URL, and the tool exchanges the model made on the way to it."""
        timer.current = "history"
        history = await self._state.history(call_sid, counters)
        prompt = [self._system, *history, {"role": "user", "content": user_text}]
        messages = list(prompt)
        reply = await self._think(call_sid, messages, timer, record)
        text = bound_text(reply.text, self._options.max_reply_chars)
        if not text:
            raise EmptyReply("the model returned no text")
        record.assistant_text = text
        with timer.stage("tts"):
            audio = await self._services.synthesizer.synthesize(
                text, voice=self._profile.voice, language=self._profile.language
            )
        record.usage["tts_chars"] = len(text)
        with timer.stage("upload"):
            stored = await self._services.blob_store.upload_turn_audio(audio)
        # Words the model said alongside its calls were never played (a legacy turn speaks its final reply
        # only): the history keeps the calls and their answers, not those words.
        exchanged = [{**m, "content": None} if m.get("tool_calls") else m for m in messages[len(prompt) :]]
        return stored.url, exchanged

    async def _think(
        self, call_sid: str, messages: list[ChatMessage], timer: StageTimer, record: TurnRecord
    ) -> ChatReply:
        """The model's answer, running the tools it asks for on the way (at most ``max_tool_rounds`` times;
        the round after that may not ask again, so the turn always ends in words).

        Stages: ``llm_total`` is every model call together, ``tool`` every tool round together, and
        ``llm_first_token`` the first token of the call that produced the answer.
        """
        tools = self._tools.chat_tools() if self._tools is not None else []
        choice = self._profile.tool_choice
        llm_ms = tool_ms = 0.0
        rounds = 0
        while True:
            timer.current = "llm"
            last_round = rounds >= self._profile.max_tool_rounds
            reply = await self._services.llm.reply(
                messages,
                temperature=self._profile.temperature,
                max_tokens=self._profile.max_output_tokens,
                tools=tools,
                tool_choice="none" if last_round else choice,
            )
            llm_ms += reply.total_ms
            for key, value in reply.usage.items():
                record.usage[key] = record.usage.get(key, 0) + value
            if not reply.tool_calls or self._tools is None or last_round:
                break
            rounds += 1
            timer.current = "tool"
            started = time.perf_counter()
            results = await self._tools.run_all(
                reply.tool_calls, call_sid=call_sid, pipeline="legacy", turn=record.turn
            )
            tool_ms += (time.perf_counter() - started) * 1000.0
            record.tool_calls.extend(result.record() for result in results)
            messages.extend(
                chat_exchange(
                    [(call, result.output) for call, result in zip(reply.tool_calls, results, strict=True)],
                    reply.text,
                )
            )
            # "required" forces a call on every request: once the tools have answered, the model must be
            # free to speak.
            choice = "auto" if choice == "required" else choice
        if reply.first_token_ms is not None:
            timer.stages["llm_first_token"] = reply.first_token_ms
        timer.stages["llm_total"] = llm_ms
        if rounds:
            timer.stages["tool"] = tool_ms
        return reply

    async def _empty_turn(self, call_sid: str, counters: TurnCounters, received_at: float) -> str:
        counters.empty_turns += 1
        await self._state.save_counters(call_sid, counters)
        hang_up = counters.empty_turns >= self._options.max_empty_turns
        await self._event(
            call_sid, {"type": "legacy.no_speech", "empty_turns": counters.empty_turns, "hang_up": hang_up}
        )
        text = self._options.goodbye if hang_up else self._options.reprompt
        phrase = await self._try_phrase(call_sid, text, received_at)
        if hang_up:
            self._metrics.silence_hang_ups.labels(PIPELINE).inc()
            # As the realtime bridge records its own: why the call ended, the same on both arms.
            await self._merge_call(call_sid, {"ended_by": "agent", "end_reason": "silence"})
            return self._twiml.goodbye(text=text, audio_url=phrase.url if phrase else None)
        return self._twiml.play_and_listen(phrase.url) if phrase else self._twiml.say_and_listen(text)

    # Helpers ----------------------------------------------------------------------------------
    async def _phrase_twiml(
        self, text: str, received_at: float, timer: StageTimer, record: TurnRecord
    ) -> str:
        phrase = self._phrases.cached(text, voice=self._profile.voice, language=self._profile.language)
        if phrase is None:  # not synthesised yet (or the warm-up failed): synthesise under the deadline
            scope = asyncio.timeout(self._remaining(received_at))
            try:
                async with scope:
                    phrase = await self._phrase(text, timer)
            except Exception as exc:
                stage = timer.current
                record.error = (
                    f"deadline of {self._deadline_s:g}s exceeded" if scope.expired() else describe(exc)
                )
                record.error_stage = stage
                self._failed(record.call_sid, stage, exc)
                return self._twiml.say_and_listen(text)
        if not phrase.cached:
            timer.stages["tts"] = phrase.tts_ms
            timer.stages["upload"] = phrase.upload_ms
            record.usage["tts_chars"] = phrase.chars
        # Every caller's greeting plays the same cached URL until its SAS is refreshed, so the TwiML is
        # memoised per URL: serialising it is the largest CPU cost of a greeting.
        twiml = self._phrase_documents.get(phrase.url)
        if twiml is None:
            if len(self._phrase_documents) >= 64:
                self._phrase_documents.clear()
            twiml = self._phrase_documents[phrase.url] = self._twiml.play_and_listen(phrase.url)
        return twiml

    async def _try_phrase(self, call_sid: str, text: str, received_at: float) -> PhraseAudio | None:
        timer = StageTimer()
        try:
            async with asyncio.timeout(self._remaining(received_at)):
                return await self._phrase(text, timer)
        except Exception as exc:
            self._failed(call_sid, timer.current, exc)
            return None

    def _remaining(self, received_at: float) -> float:
        return max(0.0, self._deadline_s - (time.perf_counter() - received_at))

    def _finish(self, record: TurnRecord, timer: StageTimer, received_at: float) -> None:
        """Close the turn's timings and queue its record (written behind the answer, in batches)."""
        total_ms = (time.perf_counter() - received_at) * 1000.0
        record.stages.update(timer.stages)
        record.stages["server_total"] = total_ms
        record.response_ms = total_ms
        for stage, ms in record.stages.items():
            self._metrics.observe_turn(PIPELINE, stage, ms)
        self._records.submit(record.to_dict())

    # Both are written before the answer: bounded like the history's writes, so a store that stopped answering
    # cannot hold the caller's TwiML past Twilio's 15 s.
    async def _merge_call(self, call_sid: str, fields: dict[str, Any]) -> None:
        try:
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await self._store.merge_call(call_sid, fields)
        except Exception:
            self._store_failed("merge_call")

    async def _event(self, call_sid: str, event: dict[str, Any]) -> None:
        try:
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await self._store.append_call_event(call_sid, {"at": self._wall_time(), **event})
        except Exception:
            self._store_failed("append_call_event")

    def _failed(self, call_sid: str, stage: str, exc: BaseException) -> None:
        self._metrics.turn_failures.labels(PIPELINE, stage).inc()
        log.warning(
            "legacy turn failed at %s: %s",
            stage,
            describe(exc),
            extra={"call_sid": call_sid, "stage": stage, "pipeline": PIPELINE, "error": describe(exc)},
        )

    def _store_failed(self, operation: str) -> None:
        self._metrics.store_errors.labels(operation).inc()
        log.warning("state store write failed: %s", operation, exc_info=True)


def _wav_duration_ms(wav: bytes) -> int:
    """Length of a recording's audio (what speech-to-text bills); 0 for a file it cannot read."""
    try:
        audio = parse_wav(wav)
    except ValueError:
        return 0
    bytes_per_ms = audio.sample_rate * audio.channels * max(1, audio.bits_per_sample // 8) / 1000
    return round(len(audio.data) / bytes_per_ms) if bytes_per_ms else 0
