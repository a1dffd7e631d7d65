"""``LegacyPipeline``: the signed Twilio routes of the legacy turn loop, wired from settings.

Routes: ``POST /legacy/turn`` (``<Gather>`` action), ``POST /legacy/recording`` (``<Record>`` action, the
``azure`` STT mode) and ``POST /legacy/start`` (a realtime call moved over mid-call). Every one checks
``X-Twilio-Signature`` against ``PUBLIC_BASE_URL`` and answers 403, recording nothing, when it fails.
The router calls :meth:`LegacyPipeline.first_turn` itself from ``POST /twilio/voice``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
import time
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from flags.clock import Clock
from legacy_pipeline.blob_store import run_cleanup
from legacy_pipeline.history import WRITE_TIMEOUT_S
from legacy_pipeline.phrase_cache import PhraseCache
from legacy_pipeline.services import LegacyServices, build_services
from legacy_pipeline.stt import AzureSpeechRecognizer
from legacy_pipeline.turns import TurnLoop
from legacy_pipeline.twiml import RECORDING_PATH, START_PATH, TURN_PATH, TwimlBuilder
from router.agent_profile import AgentProfile
from router.observability import Metrics, call_sid_var
from router.record_writer import BatchWriter
from router.settings import Settings
from router.shared_replay import SharedReplay
from router.store.base import StateStore
from router.tool_calls import ToolRunner
from router.twilio_request import ForgedRequest, MalformedForm, read_signed_form
from router.twilio_signature import TwilioSignatureValidator
from router.webhook_replay import WebhookReplay, idempotency_token

log = logging.getLogger("legacy_pipeline")

TWIML_MEDIA_TYPE = "text/xml"
CALL_SID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# The history and counter writes after a reply, each bounded (legacy_pipeline/history.py), and slack for the
# answer to be stored.
AFTER_REPLY_WRITES_S = 2 * WRITE_TIMEOUT_S + 0.5
CLAIM_LEASE_S = 3.0  # a Twilio retry's wait behind a worker that died mid-turn (router/shared_replay.py)

# (CallSid, the signed form, when it was received, the request's query)
TurnHandler = Callable[[str, dict[str, str], float, dict[str, str]], Awaitable[str]]


class LegacyPipeline:
    def __init__(
        self,
        *,
        settings: Settings,
        profile: AgentProfile,
        store: StateStore,
        metrics: Metrics,
        signatures: TwilioSignatureValidator,
        clock: Clock,
        services: LegacyServices | None = None,
        replay: WebhookReplay | None = None,
        tools: ToolRunner | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._signatures = signatures
        self.services = services if services is not None else build_services(settings)
        recognizer = self.services.recognizer
        if isinstance(recognizer, AzureSpeechRecognizer):  # how full its LEGACY_STT_MAX_CONCURRENT bound is
            metrics.stt_threads.set_function(lambda: recognizer.threads_in_use)
        self.twiml = TwimlBuilder(
            public_base_url=settings.public_base_url, profile=profile, stt_mode=settings.legacy_stt_mode
        )
        self.phrases = PhraseCache(self.services.synthesizer, self.services.blob_store)
        self._turn_records = BatchWriter(
            store.append_turns, metrics, operation="append_turn", what="legacy turn records"
        )
        self.turns = TurnLoop(
            settings=settings,
            profile=profile,
            store=store,
            metrics=metrics,
            services=self.services,
            wall_time=clock.time,
            twiml=self.twiml,
            phrases=self.phrases,
            records=self._turn_records,
            tools=tools,
        )
        # A retry of a turn is answered from the store when another worker took the first attempt: the turn
        # is expensive and recorded, so it must not run twice. The first attempt renews a short claim while it
        # works; a retry waits as long as that attempt may take (its deadline, then the bounded history and
        # counter writes behind its reply), and at most one lease behind a worker that died.
        if replay is None:
            longest_turn = settings.legacy_turn_deadline_seconds + AFTER_REPLY_WRITES_S
            shared = SharedReplay(store, claim_ttl_s=CLAIM_LEASE_S, wait_s=longest_turn, metrics=metrics)
            replay = WebhookReplay(metrics=metrics, shared=shared)
        self._replay = replay
        self._cleanup_task: asyncio.Task[None] | None = None
        self._warm_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Called by the app's lifespan: start the blob clean-up and warm the phrase cache in the
        background, so the first caller's greeting is already synthesised (start-up never waits on Speech)."""
        self._ensure_cleanup()
        self._turn_records.start()
        if self._settings.legacy_warm_phrases_on_start and self._warm_task is None:
            self._warm_task = asyncio.get_running_loop().create_task(self.warm_phrases(), name="legacy-warm")

    @property
    def is_warm(self) -> bool:
        """True once the start-up phrase warm-up has finished (successfully or not)."""
        return self._warm_task is not None and self._warm_task.done()

    async def first_turn(self, call_sid: str, *, moved: bool = False) -> str:
        """TwiML for the call's first legacy turn: the greeting, or a resume line for a moved call."""
        self._ensure_cleanup()
        return await self.turns.first_turn(call_sid, moved=moved)

    async def warm_phrases(self) -> None:
        """Synthesise the fixed phrases ahead of the first call (optional; failures are only logged)."""
        profile_texts = [self.turns.greeting, *self.turns.fixed_phrases]
        for text in profile_texts:
            if not text:
                continue
            try:
                await self.turns.warm(text)
            except Exception:
                log.warning("could not pre-synthesise a phrase", exc_info=True)

    async def flush(self) -> None:
        """Return once every turn record queued so far is in the store (for readers that need them)."""
        await self._turn_records.flush()

    def routes(self) -> list[BaseRoute]:
        return [
            Route(TURN_PATH, self._signed(TURN_PATH, self._on_gather), methods=["POST"]),
            Route(RECORDING_PATH, self._signed(RECORDING_PATH, self._on_recording), methods=["POST"]),
            Route(START_PATH, self._signed(START_PATH, self._on_start), methods=["POST"]),
        ]

    async def aclose(self) -> None:
        if self._warm_task is not None:
            self._warm_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warm_task
            self._warm_task = None
        if self._cleanup_task is not None:
            self._cleanup_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._cleanup_task
            self._cleanup_task = None
        await self._turn_records.aclose()
        await self.services.aclose()

    async def cleanup_once(self) -> int:
        """Delete expired per-turn audio now; returns the number of blobs deleted."""
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(hours=self._settings.legacy_blob_retention_hours)
        return await self.services.blob_store.delete_older_than(cutoff)

    # Handlers -----------------------------------------------------------------------------------
    async def _on_gather(
        self, call_sid: str, form: dict[str, str], received_at: float, query: dict[str, str]
    ) -> str:
        return await self.turns.speech_turn(
            call_sid,
            form.get("SpeechResult"),
            received_at=received_at,
            confidence=_confidence(form.get("Confidence")),
        )

    async def _on_recording(
        self, call_sid: str, form: dict[str, str], received_at: float, query: dict[str, str]
    ) -> str:
        url = form.get("RecordingUrl") or None
        if form.get("RecordingDuration", "").strip() == "0":
            url = None
        return await self.turns.recording_turn(call_sid, url, received_at=received_at)

    async def _on_start(
        self, call_sid: str, form: dict[str, str], received_at: float, query: dict[str, str]
    ) -> str:
        """A call moved over from realtime (``greet=1``: its caller heard nothing there, so is greeted)."""
        greet = query.get("greet") == "1"
        return await self.turns.first_turn(call_sid, moved=True, greet=greet, received_at=received_at)

    def _signed(self, path: str, handler: TurnHandler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            received_at = time.perf_counter()
            try:
                form = await read_signed_form(request, self._signatures)
            except MalformedForm:
                self._metrics.rejected_requests.labels(path, "bad_form").inc()
                return PlainTextResponse("malformed form body", status_code=400)
            except ForgedRequest:
                self._metrics.rejected_requests.labels(path, "signature").inc()
                log.warning("rejected %s: missing or invalid X-Twilio-Signature", path)
                return PlainTextResponse("invalid Twilio signature", status_code=403)
            call_sid = form.get("CallSid", "")
            if not CALL_SID_PATTERN.match(call_sid):
                self._metrics.rejected_requests.labels(path, "call_sid").inc()
                return PlainTextResponse("missing or malformed CallSid", status_code=400)
            self._ensure_cleanup()

            query = dict(request.query_params)

            async def answer() -> Response:
                return Response(
                    await self._twiml_for(handler, call_sid, form, received_at, query),
                    media_type=TWIML_MEDIA_TYPE,
                )

            response = await self._replay.answer(path, call_sid, idempotency_token(request), answer)
            self._metrics.webhook_latency.labels(path).observe(time.perf_counter() - received_at)
            return response

        return endpoint

    async def _twiml_for(
        self,
        handler: TurnHandler,
        call_sid: str,
        form: dict[str, str],
        received_at: float,
        query: dict[str, str],
    ) -> str:
        token = call_sid_var.set(call_sid)
        try:
            return await handler(call_sid, form, received_at, query)
        except Exception:
            # The turn loop handles service failures itself; this is the last line against dead air.
            log.exception("legacy handler failed", extra={"call_sid": call_sid})
            self._metrics.turn_failures.labels("legacy", "server").inc()
            return self.twiml.say_and_listen(self.turns.apology)
        finally:
            call_sid_var.reset(token)

    def _ensure_cleanup(self) -> None:
        interval = self._settings.legacy_blob_cleanup_interval_seconds
        if interval <= 0 or self._cleanup_task is not None:
            return
        self._cleanup_task = asyncio.get_running_loop().create_task(
            run_cleanup(
                self.services.blob_store,
                retention=dt.timedelta(hours=self._settings.legacy_blob_retention_hours),
                interval_s=interval,
            ),
            name="legacy-blob-cleanup",
        )


def _confidence(value: str | None) -> float | None:
    """Twilio's ``Confidence`` (0.0-1.0) as a number; None when absent or not one (it is only recorded)."""
    try:
        number = float(value) if value else None
    except ValueError:
        return None
    return number if number is not None and 0.0 <= number <= 1.0 else None
