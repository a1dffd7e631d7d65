"""Twilio's call engine, simulated: places calls at the router and executes the TwiML it answers.

The simulator does what Twilio does for an inbound call: a signed ``POST /twilio/voice``, then runs the
returned TwiML verb by verb — ``<Say>``, ``<Play>`` (fetches the WAV, checks it, plays it for its length),
``<Pause>``, ``<Gather input="speech">`` (the caller speaks its next utterance, Twilio's end-of-speech wait
passes, the action is POSTed with ``SpeechResult``/``Confidence``), ``<Record>``, ``<Redirect>``,
``<Hangup>`` and ``<Connect><Stream>`` (a :class:`~emulators.twilio.media_stream.MediaStreamSession`). A REST
update received by :class:`~emulators.twilio.rest.TwilioRestEmulator` interrupts whatever is executing —
a stream is ended as Twilio ends it (``stop`` then close) — and the call continues at the new URL. When the
call ends the status callback is POSTed. Every call is measured from the caller's side
(:mod:`emulators.twilio.measure`).

``router_url`` is where requests really go; ``public_base_url`` is the origin Twilio believes it calls (what
it signs and what the router writes into TwiML). ``time_scale`` < 1 compresses every caller-side duration
(speech, playout, Twilio's waits) so tests run fast. The bot's side is not compressed (the router and the
services answer in real time), so neither is how long a caller waits for a reply before calling it
``no_reply`` (``reply_timeout_ms``): like the dead air the ears measure, it is in real milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import math
import secrets
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Self
from urllib.parse import urljoin, urlsplit

import httpx

from emulators.twilio.audio import UnplayableAudio, pcm16_wav_from_ulaw, read_wav
from emulators.twilio.measure import CallerEars
from emulators.twilio.media_stream import MediaStreamSession, StreamRejected, StreamStats
from emulators.twilio.rest import API_VERSION, TwilioRestEmulator
from emulators.twilio.script import MS_PER_CHARACTER, BargeIn, CallScript, HangUp, Pause, Step, Utterance
from emulators.twilio.twiml import (
    ConnectVerb,
    GatherVerb,
    HangupVerb,
    PauseVerb,
    PlayVerb,
    RecordVerb,
    RedirectVerb,
    SayVerb,
    StreamVerb,
    TwimlError,
    Unsupported,
    parse_twiml,
)
from emulators.twilio.webhook_fetch import ConnectionOverrides, Retry, TwilioWebhookFetcher
from router.twilio_signature import sign

log = logging.getLogger(__name__)

DEFAULT_ACCOUNT_SID = "AC" + "0" * 32
# <Play digits>: "w" is Twilio's half-second wait; "W" (a second) and the length of one tone are guesses,
# twilio.md gives neither.
DTMF_DIGIT_MS = 200
DTMF_WAIT_MS = {"w": 500, "W": 1000}


def dtmf_ms(digits: str) -> int:
    """How long ``<Play digits>`` takes on the line."""
    return sum(DTMF_WAIT_MS.get(digit, DTMF_DIGIT_MS) for digit in digits)


def stream_url(doc_url: str, url: str) -> str:
    """A ``<Stream url>`` resolved as Twilio does: relative to the document, https → wss (twilio.md 3.1)."""
    resolved = urljoin(doc_url, url)
    scheme, sep, rest = resolved.partition("://")
    return {"https": "wss", "http": "ws"}.get(scheme, scheme) + sep + rest


class WebhookFailed(Exception):
    """Twilio could not get usable TwiML (11200 HTTP retrieval failure, 12100 parse failure…)."""


@dataclass(frozen=True)
class Next:
    """Fetch this URL next (a ``<Redirect>``, a ``<Connect action>``, a REST redirect)."""

    url: str
    method: str = "POST"


@dataclass(frozen=True)
class Fetched:
    """TwiML already fetched (the answer to a ``<Gather>``/``<Record>`` action POST)."""

    document: str
    url: str


FALL_THROUGH = "fall_through"
HANG_UP = "hang_up"


@dataclass
class CallResult:
    call_sid: str
    pipeline: str  # X-Voice-Router-Pipeline of the answer to POST /twilio/voice
    reason: str  # X-Voice-Router-Reason
    answered: bool
    status: str  # completed | failed
    ended_by: str  # caller | twiml_hangup | end_of_twiml | api | error
    duration_s: float
    modes: list[str] = field(default_factory=list)  # realtime/legacy, in the order they served the call
    moved: bool = False  # a REST redirect took the call out of a live stream
    redirects: list[dict[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    max_silence_ms: float = 0.0
    heard_ms: float = 0.0
    barge_ins: int = 0
    turns: list[dict[str, Any]] = field(default_factory=list)
    streams: list[StreamStats] = field(default_factory=list)
    requests: list[tuple[str, str, int]] = field(default_factory=list)  # (method, url, status)
    play_formats: list[str] = field(default_factory=list)
    status_callback: int | None = None  # HTTP status of the final status callback

    @property
    def final_mode(self) -> str:
        return self.modes[-1] if self.modes else ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["final_mode"] = self.final_mode
        return data


class TwilioCallSimulator:
    """Places calls at a running router. Use as ``async with TwilioCallSimulator(...) as sim``."""

    def __init__(
        self,
        *,
        router_url: str,
        public_base_url: str,
        auth_token: str,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        rest: TwilioRestEmulator | None = None,
        time_scale: float = 1.0,
        voice_path: str = "/twilio/voice",
        status_path: str = "/twilio/status",
        speech_timeout_auto_ms: int = 1000,
        reply_end_gap_ms: int = 700,
        reply_timeout_ms: int = 15_000,
        connection_overrides: ConnectionOverrides | None = None,
        say_ms_per_character: int = MS_PER_CHARACTER,
    ) -> None:
        self.router_url = router_url.rstrip("/")
        self.public_base_url = public_base_url.rstrip("/")
        self.auth_token = auth_token
        self.account_sid = account_sid
        self.time_scale = time_scale
        self.voice_path = voice_path
        self.status_path = status_path
        self.speech_timeout_auto_ms = speech_timeout_auto_ms
        self.reply_end_gap_ms = reply_end_gap_ms
        self.reply_timeout_ms = reply_timeout_ms
        self.connection_overrides = connection_overrides or ConnectionOverrides()
        self.say_ms_per_character = say_ms_per_character
        self._rest = rest
        self._owns_rest = rest is None
        self._http: httpx.AsyncClient | None = None
        self._webhooks: TwilioWebhookFetcher | None = None
        self.retries: list[Retry] = []  # every webhook attempt that was retried, oldest first
        self._loop: asyncio.AbstractEventLoop | None = None
        self._live: dict[str, _Call] = {}
        self.results: list[CallResult] = []
        public = urlsplit(self.public_base_url)
        router = urlsplit(self.router_url)
        ws = {"https": "wss", "http": "ws"}
        self._prefixes = [
            (f"{public.scheme}://{public.netloc}{public.path}", f"{router.scheme}://{router.netloc}"),
            (
                f"{ws.get(public.scheme, 'ws')}://{public.netloc}{public.path}",
                f"{ws.get(router.scheme, 'ws')}://{router.netloc}",
            ),
        ]

    # Lifecycle -------------------------------------------------------------------------------------------
    @property
    def rest(self) -> TwilioRestEmulator:
        if self._rest is None:
            raise RuntimeError("TwilioCallSimulator is not started")
        return self._rest

    async def start(self) -> Self:
        self._loop = asyncio.get_running_loop()
        if self._rest is None:
            self._rest = await asyncio.to_thread(TwilioRestEmulator(self.account_sid, self.auth_token).start)
        self._rest.known_calls_only = True
        self._rest.on_update = self._on_rest_update
        # 15 s for what is not a webhook (the <Play> fetch), as before; webhooks set their own timeouts.
        self._http = httpx.AsyncClient(timeout=15.0, limits=httpx.Limits(max_connections=500))
        self._webhooks = TwilioWebhookFetcher(
            self._http,
            auth_token=self.auth_token,
            to_router=self.to_router,
            defaults=self.connection_overrides,
            on_retry=self.retries.append,
        )
        return self

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
            self._webhooks = None
        if self._rest is not None:
            self._rest.on_update = None
            if self._owns_rest:
                await asyncio.to_thread(self._rest.stop)
                self._rest = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # Calls -----------------------------------------------------------------------------------------------
    async def place_call(self, script: CallScript, *, call_sid: str | None = None) -> CallResult:
        sid = call_sid or "CA" + secrets.token_hex(16)
        call = _Call(self, script, sid)
        self._live[sid] = call
        self.rest.open_call(sid, from_=script.from_, to=script.to)
        try:
            result = await call.run()
        finally:
            self._live.pop(sid, None)
            self.rest.end_call(sid)
        self.results.append(result)
        return result

    async def place_calls(
        self, scripts: Sequence[CallScript], *, stagger_ms: float = 0.0
    ) -> list[CallResult]:
        """Place all ``scripts`` concurrently, starting one every ``stagger_ms`` (scaled)."""

        async def one(index: int, script: CallScript) -> CallResult:
            await asyncio.sleep(index * stagger_ms / 1000.0 * self.time_scale)
            return await self.place_call(script)

        return list(await asyncio.gather(*(one(i, s) for i, s in enumerate(scripts))))

    def measurements(self) -> list[dict[str, Any]]:
        """Every turn of every finished call, for :func:`router.comparison.build_comparison`."""
        return [turn for result in self.results for turn in result.turns]

    async def _on_rest_update(self, call_sid: str, fields: dict[str, str]) -> None:
        """Runs on the REST emulator's loop: hand the update to the call's own loop."""
        call = self._live.get(call_sid)
        loop = self._loop
        if call is not None and loop is not None:
            loop.call_soon_threadsafe(call.interrupts.put_nowait, dict(fields))

    # Wire helpers ----------------------------------------------------------------------------------------
    def to_router(self, url: str) -> str:
        for public, local in self._prefixes:
            if url.startswith(public):
                return local + url[len(public) :]
        return url

    def public_url(self, path: str) -> str:
        return f"{self.public_base_url}{path}"

    async def webhook(self, url: str, method: str, params: dict[str, str]) -> httpx.Response:
        """A signed request, as Twilio makes it, to the public ``url`` (sent to the router), retried as its
        connection overrides say (:mod:`emulators.twilio.webhook_fetch`)."""
        assert self._webhooks is not None, "simulator not started"
        return await self._webhooks.fetch(url, method, params)

    async def fetch_media(self, url: str) -> bytes:
        assert self._http is not None, "simulator not started"
        response = await self._http.get(self.to_router(url))
        if response.status_code != 200:
            raise UnplayableAudio(f"11200: GET {url} answered {response.status_code}")
        return response.content


class _Call:
    """One call's execution: TwiML documents one after another, interruptible by REST updates."""

    def __init__(self, sim: TwilioCallSimulator, script: CallScript, sid: str) -> None:
        self.sim = sim
        self.script = script
        self.sid = sid
        self.steps: deque[Step] = deque(script.steps)
        self.scale = sim.time_scale
        self.ears = CallerEars(sid, time_scale=sim.time_scale)
        self.interrupts: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        self.result = CallResult(
            call_sid=sid, pipeline="", reason="", answered=False, status="failed", ended_by="", duration_s=0.0
        )
        self._mode = ""
        self._poll = max(0.002, 0.02 * self.scale)
        self._stream_callbacks: asyncio.Task[None] | None = None  # the latest; each waits for the one before

    # Helpers ---------------------------------------------------------------------------------------------
    def params(self, status: str = "in-progress") -> dict[str, str]:
        return {
            "AccountSid": self.sim.account_sid,
            "ApiVersion": API_VERSION,
            "CallSid": self.sid,
            "CallStatus": status,
            "Called": self.script.to,
            "Caller": self.script.from_,
            "Direction": "inbound",
            "From": self.script.from_,
            "To": self.script.to,
        }

    def enter_mode(self, mode: str) -> None:
        self._mode = mode
        if not self.result.modes or self.result.modes[-1] != mode:
            self.result.modes.append(mode)

    async def sleep(self, ms: float) -> None:
        await asyncio.sleep(max(0.0, ms) / 1000.0 * self.scale)

    async def _pause(self, ms: float) -> None:
        """The caller stays silent on purpose: not dead air, even if the bot speaks up meanwhile."""
        self.ears.pause_began()
        try:
            await self.sleep(ms)
        finally:
            self.ears.caller_paused(self.ears.now())

    async def request(self, url: str, method: str, extra: dict[str, str] | None = None) -> Fetched:
        params = self.params()
        params.update(extra or {})
        try:
            response = await self.sim.webhook(url, method, params)
        except httpx.HTTPError as exc:
            self.result.requests.append((method, url, 0))
            raise WebhookFailed(f"11200: {method} {url}: {exc!r}") from exc
        self.result.requests.append((method, url, response.status_code))
        if response.status_code >= 400:
            raise WebhookFailed(f"11200: {method} {url} answered {response.status_code}")
        return Fetched(response.text, url)

    # Top level -------------------------------------------------------------------------------------------
    async def run(self) -> CallResult:
        started = time.monotonic()
        voice_url = self.sim.public_url(self.sim.voice_path)
        params = self.params("ringing")
        try:
            response = await self.sim.webhook(voice_url, "POST", params)
            self.result.requests.append(("POST", voice_url, response.status_code))
        except httpx.HTTPError as exc:
            self.result.errors.append(f"11200: POST {voice_url}: {exc!r}")
            self.result.ended_by = "error"
            self.result.duration_s = time.monotonic() - started
            return self.result
        if response.status_code >= 400:
            self.result.errors.append(f"11200: POST {voice_url} answered {response.status_code}")
            self.result.ended_by = "error"
            self.result.duration_s = time.monotonic() - started
            return self.result
        self.result.answered = True
        self.result.pipeline = response.headers.get("x-voice-router-pipeline", "")
        self.result.reason = response.headers.get("x-voice-router-reason", "")
        self.ears.pipeline = self.result.pipeline
        answered_at = self.ears.now()
        self.ears.answered(answered_at)
        current: Fetched | None = Fetched(response.text, voice_url)
        try:
            while current is not None:
                current = await self._run_document(current)
        finally:
            self.ears.hung_up(self.ears.now())
            self.sim.rest.end_call(self.sid)  # before the callbacks: for Twilio the call is over now
            self.result.status = "completed"
            self.result.duration_s = self.ears.now() - answered_at
            self.result.max_silence_ms = self.ears.max_silence_ms
            self.result.heard_ms = self.ears.heard_ms
            self.result.turns = self.ears.measurements()
            self.result.barge_ins = sum(1 for t in self.result.turns if t["barge_in"])
            if self._stream_callbacks is not None:
                await asyncio.wait({self._stream_callbacks})
            await self._status_callback()
        return self.result

    async def _status_callback(self) -> None:
        params = self.params("completed")
        params.update(
            {
                "CallDuration": str(max(0, math.ceil(self.result.duration_s))),
                "Timestamp": email.utils.formatdate(time.time(), usegmt=True),
                "CallbackSource": "call-progress-events",
                "SequenceNumber": "0",
            }
        )
        url = self.sim.public_url(self.sim.status_path)
        try:
            response = await self.sim.webhook(url, "POST", params)
        except httpx.HTTPError as exc:
            self.result.errors.append(f"status callback failed: {exc!r}")
            return
        self.result.status_callback = response.status_code
        self.result.requests.append(("POST", url, response.status_code))

    async def _run_document(self, current: Fetched) -> Fetched | None:
        """Execute one document; returns the next one, or None when the call is over."""
        execution = asyncio.create_task(self._execute(current))
        interrupt = asyncio.create_task(self.interrupts.get())
        await asyncio.wait({execution, interrupt}, return_when=asyncio.FIRST_COMPLETED)
        if execution.done():
            interrupt.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await interrupt
            try:
                outcome = execution.result()
            except WebhookFailed as exc:
                self.result.errors.append(str(exc))
                self.result.ended_by = "error"
                return None
            except TwimlError as exc:
                self.result.errors.append(f"12100: {exc}")
                self.result.ended_by = "error"
                return None
            if outcome is None:
                return None
            if isinstance(outcome, Fetched):
                return outcome
            return await self._fetch_or_end(outcome)
        # A REST update: Twilio interrupts the executing TwiML (a stream gets stop + close).
        fields = interrupt.result()
        was_streaming = self._mode == "realtime"
        execution.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await execution
        self.result.redirects.append(fields)
        if fields.get("Status") in ("completed", "canceled"):
            self.result.ended_by = "api"
            return None
        if was_streaming:
            self.result.moved = True
        if "Twiml" in fields:
            return Fetched(fields["Twiml"], current.url)
        if "Url" in fields:
            return await self._fetch_or_end(Next(fields["Url"], fields.get("Method", "POST").upper()))
        return current

    async def _fetch_or_end(self, target: Next) -> Fetched | None:
        try:
            return await self.request(target.url, target.method)
        except WebhookFailed as exc:
            self.result.errors.append(str(exc))
            self.result.ended_by = "error"
            return None

    async def _execute(self, current: Fetched) -> Fetched | Next | None:
        verbs = parse_twiml(current.document)
        for verb in verbs:
            if isinstance(verb, SayVerb | PlayVerb | PauseVerb):
                if not isinstance(verb, PauseVerb):
                    self.enter_mode("legacy")
                await self._prompt(verb, current.url)
            elif isinstance(verb, GatherVerb):
                self.enter_mode("legacy")
                gathered = await self._gather(verb, current.url)
                if gathered == HANG_UP:
                    return None
                if isinstance(gathered, Fetched):
                    return gathered
            elif isinstance(verb, RecordVerb):
                self.enter_mode("legacy")
                recorded = await self._record(verb, current.url)
                if recorded == HANG_UP:
                    return None
                if isinstance(recorded, Fetched):
                    return recorded
            elif isinstance(verb, RedirectVerb):
                return Next(urljoin(current.url, verb.url), verb.method)
            elif isinstance(verb, HangupVerb):
                self.result.ended_by = "twiml_hangup"
                return None
            elif isinstance(verb, ConnectVerb):
                ended = await self._stream(verb, current.url)
                if ended == HANG_UP:
                    return None
                if verb.action:
                    return Next(urljoin(current.url, verb.action), verb.method)
            elif isinstance(verb, Unsupported):
                self.result.errors.append(f"12200: unsupported verb <{verb.tag}>")
        self.result.ended_by = self.result.ended_by or "end_of_twiml"
        return None

    # Legacy verbs ----------------------------------------------------------------------------------------
    async def _prompt(
        self, verb: SayVerb | PlayVerb | PauseVerb, doc_url: str, *, limit_ms: float | None = None
    ) -> None:
        """Play a prompt to the caller (``limit_ms``: the caller talks over it after that long)."""
        if isinstance(verb, PauseVerb):
            await self.sleep(verb.length_s * 1000.0)
            return
        if isinstance(verb, SayVerb):
            duration: float = self.sim.say_ms_per_character * max(1, len(verb.text)) * max(1, verb.loop)
        elif verb.digits is not None:  # DTMF tones on the line, not a reply the caller listens to
            tones = float(dtmf_ms(verb.digits))
            await self.sleep(tones if limit_ms is None else min(tones, limit_ms))
            return
        elif verb.url is None:  # parse_twiml never builds one
            return
        else:
            try:
                data = await self.sim.fetch_media(urljoin(doc_url, verb.url))
                info = read_wav(data)
            except (UnplayableAudio, httpx.HTTPError) as exc:
                self.result.errors.append(f"13227: cannot play {verb.url}: {exc}")
                return
            self.result.play_formats.append(
                f"{'ulaw' if info.format_code == 7 else 'pcm'}/{info.sample_rate}/{info.channels}"
            )
            duration = info.duration_ms * max(1, verb.loop)
        if limit_ms is not None:
            duration = min(duration, limit_ms)
        self.ears.audio_started(self.ears.now(), fresh=True, mode="legacy")
        try:
            await self.sleep(duration)
        finally:
            self.ears.audio_stopped(self.ears.now())

    async def _speak(self, utterance: Utterance, *, barge_in: bool) -> None:
        """The caller talks into a ``<Gather>``/``<Record>`` (Twilio hears it; nothing is streamed)."""
        self.ears.caller_started(self.ears.now())
        await self.sleep(utterance.duration_ms)
        self.ears.caller_stopped(self.ears.now(), barge_in=barge_in)

    async def _gather(self, verb: GatherVerb, doc_url: str) -> Fetched | str:
        action = urljoin(doc_url, verb.action or doc_url)
        step = self.steps[0] if self.steps else None
        barge = isinstance(step, BargeIn) and verb.barge_in and bool(verb.prompts)
        budget = float(step.after_ms) if isinstance(step, BargeIn) else 0.0
        for prompt in verb.prompts:
            if barge:
                before = self.ears.now()
                await self._prompt(prompt, doc_url, limit_ms=budget)
                budget -= (self.ears.now() - before) * 1000.0 / self.scale
                if budget <= 0:
                    break
            else:
                await self._prompt(prompt, doc_url)
        if "speech" not in verb.input:
            await self.sleep(verb.timeout_s * 1000.0)  # a DTMF-only gather: the caller presses nothing
            return await self._empty_result(verb, action)
        waited = 0.0
        timeout_ms = verb.timeout_s * 1000.0
        while True:
            step = self.steps[0] if self.steps else None
            if step is None:
                if self.script.hang_up_when_done:
                    self.result.ended_by = "caller"
                    return HANG_UP
                await self.sleep(timeout_ms - waited)
                return await self._empty_result(verb, action)
            if isinstance(step, HangUp):
                self.steps.popleft()
                self.result.ended_by = "caller"
                return HANG_UP
            if isinstance(step, Pause):
                self.steps.popleft()
                silent = min(float(step.ms), timeout_ms - waited)
                await self._pause(silent)
                waited += silent
                if waited >= timeout_ms:
                    return await self._empty_result(verb, action)
                continue
            is_barge = isinstance(step, BargeIn) and barge
            if not is_barge:
                await self.sleep(self.script.think_ms)
            await self._speak(step.utterance, barge_in=is_barge)
            self.steps.popleft()
            await self.sleep(self._speech_timeout_ms(verb))
            return await self.request(
                action,
                verb.method,
                {"SpeechResult": step.utterance.text, "Confidence": f"{step.utterance.confidence:.8f}"},
            )

    def _speech_timeout_ms(self, verb: GatherVerb) -> float:
        if verb.speech_timeout == "auto":
            return float(self.sim.speech_timeout_auto_ms)
        try:
            return float(verb.speech_timeout) * 1000.0
        except ValueError:
            return verb.timeout_s * 1000.0

    async def _empty_result(self, verb: GatherVerb, action: str) -> Fetched | str:
        """No input: Twilio requests the action only with ``actionOnEmptyResult``, else falls through."""
        if verb.action_on_empty_result:
            return await self.request(action, verb.method, {})
        return FALL_THROUGH

    async def _record(self, verb: RecordVerb, doc_url: str) -> Fetched | str:
        if verb.play_beep:
            await self.sleep(250)
        timeout_ms = verb.timeout_s * 1000.0
        silent = 0.0  # the recording ends after ``timeout`` of silence, before the caller speaks too
        while True:
            step = self.steps[0] if self.steps else None
            if step is None or isinstance(step, HangUp):
                if step is not None:
                    self.steps.popleft()
                self.result.ended_by = "caller"
                return HANG_UP
            if not isinstance(step, Pause):
                break
            self.steps.popleft()
            quiet = min(float(step.ms), timeout_ms - silent)
            await self._pause(quiet)
            silent += quiet
            if silent >= timeout_ms:
                return FALL_THROUGH  # nothing recorded: Twilio moves on to the next verb
        await self.sleep(self.script.think_ms)
        await self._speak(step.utterance, barge_in=False)
        self.steps.popleft()
        await self.sleep(verb.timeout_s * 1000.0)  # the silence that ends the recording
        audio = step.utterance.audio[: int(verb.max_length_s * 8000)]
        recording_sid = "RE" + secrets.token_hex(16)
        recording_url = await asyncio.to_thread(
            self.sim.rest.add_recording, recording_sid, pcm16_wav_from_ulaw(audio)
        )
        action = urljoin(doc_url, verb.action or doc_url)
        return await self.request(
            action,
            verb.method,
            {
                "RecordingUrl": recording_url,
                "RecordingDuration": str(max(1, math.ceil(len(audio) / 8000))),
                "RecordingSid": recording_sid,
            },
        )

    # Realtime --------------------------------------------------------------------------------------------
    async def _stream(self, verb: ConnectVerb, doc_url: str) -> str:
        url = stream_url(doc_url, verb.stream.url)
        if not url.startswith("wss://") and not url.startswith("ws://"):
            self.result.errors.append(f"31922: stream url must be wss:// ({url})")
            return FALL_THROUGH
        self.enter_mode("realtime")
        session = MediaStreamSession(
            connect_url=self.sim.to_router(url),
            signed_url=url,
            signature=sign(self.sim.auth_token, url, {}),
            account_sid=self.sim.account_sid,
            call_sid=self.sid,
            parameters=verb.stream.parameters,
            ears=self.ears,
            time_scale=self.scale,
        )
        self.result.streams.append(session.stats)
        try:
            await session.open()
        except StreamRejected as exc:
            self.result.errors.append(str(exc))
            self._stream_status(verb.stream, doc_url, session.stream_sid, "stream-error", str(exc))
            return FALL_THROUGH
        self._stream_status(verb.stream, doc_url, session.stream_sid, "stream-started")
        ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        driver = asyncio.create_task(self._drive_stream(session, ended))
        try:
            reason = await session.run_until(ended)
        finally:
            driver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await driver
            self._stream_status(verb.stream, doc_url, session.stream_sid, "stream-stopped")
        if reason == "hung_up":
            self.result.ended_by = "caller"
            return HANG_UP
        return reason

    def _stream_status(
        self, stream: StreamVerb, doc_url: str, stream_sid: str, event: str, error: str | None = None
    ) -> None:
        """Request the ``<Stream statusCallback>`` (signed, ``statusCallbackMethod``, default POST).

        Twilio sends these beside the call, so they never hold up the TwiML; they go out one at a time, in
        order, and the call's own status callback waits for them. Parameter names per twilio.md 3.1.
        """
        if not stream.status_callback:
            return
        url = urljoin(doc_url, stream.status_callback)
        method = stream.status_callback_method
        params = {
            "AccountSid": self.sim.account_sid,
            "CallSid": self.sid,
            "StreamSid": stream_sid,
            "StreamName": stream.name or stream_sid,
            "StreamEvent": event,
            "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        if error is not None:
            params["StreamError"] = error
        previous = self._stream_callbacks

        async def request() -> None:
            if previous is not None:
                await asyncio.wait({previous})
            try:
                response = await self.sim.webhook(url, method, params)
            except httpx.HTTPError as exc:
                self.result.errors.append(f"stream status callback failed: {exc!r}")
                return
            self.result.requests.append((method, url, response.status_code))

        self._stream_callbacks = asyncio.create_task(request())

    async def _drive_stream(self, session: MediaStreamSession, ended: asyncio.Future[str]) -> None:
        """The caller's side of the conversation on a live stream, following the script."""
        try:
            while True:
                step = self.steps[0] if self.steps else None
                if isinstance(step, BargeIn):
                    await self._wait_reply_started()
                    await self.sleep(step.after_ms)
                    await session.speak(step.utterance.audio)
                    self.steps.popleft()
                    self.ears.caller_stopped(self.ears.now(), barge_in=True)
                    continue
                await self._wait_reply_done(session)
                if step is None:
                    if self.script.hang_up_when_done:
                        ended.set_result("hung_up")
                        return
                    await asyncio.Event().wait()
                    return
                if isinstance(step, HangUp):
                    self.steps.popleft()
                    ended.set_result("hung_up")
                    return
                if isinstance(step, Pause):
                    await self._pause(step.ms)
                    self.steps.popleft()
                    continue
                await self.sleep(self.script.think_ms)
                await session.speak(step.utterance.audio)
                self.steps.popleft()
                self.ears.caller_stopped(self.ears.now())
        except asyncio.CancelledError:
            session.mic.abandon()
            raise
        except Exception as exc:  # a bug in the simulator must not hang the call
            log.exception("stream driver failed")
            self.result.errors.append(f"driver: {exc!r}")
            if not ended.done():
                ended.set_result("hung_up")

    async def _wait_reply_started(self) -> None:
        deadline = self.ears.now() + self.sim.reply_timeout_ms / 1000.0  # real time: see the module docstring
        while self.ears.waiting_for_reply:
            if self.ears.now() >= deadline:
                self.ears.no_reply(self.ears.now())
                return
            await asyncio.sleep(self._poll)

    async def _wait_reply_done(self, session: MediaStreamSession) -> None:
        await self._wait_reply_started()
        gap = self.sim.reply_end_gap_ms / 1000.0 * self.scale
        # Polled: "the bot has been quiet for ``gap``" is a condition on the playout clock, not an event.
        while session.idle_for < gap:  # noqa: ASYNC110
            await asyncio.sleep(self._poll)
