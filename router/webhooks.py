"""Twilio's voice webhooks: decide the pipeline for an incoming call, and finalise it when it ends.

``POST /twilio/voice`` must answer in milliseconds and must never answer 5xx because of us: a store
outage routes from the last known config (or to legacy), a failed record write is logged and counted,
and a pipeline that raises while building its TwiML falls back to a minimal legacy answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from twilio.twiml.voice_response import Connect, VoiceResponse

from flags.breaker import BreakerConflictError, CircuitBreaker, TrialPermit
from flags.breaker_state import BreakerState
from flags.clock import Clock
from flags.decision import Decision, decide
from router.breaker_view import BreakerView
from router.keyed_mac import KeyedSha256
from router.observability import Metrics, call_sid_var
from router.record_writer import BatchWriter
from router.records import REALTIME_FULL, CallRecord, Pipeline
from router.rollout_service import RolloutService
from router.store.base import StateStore, StoreUnavailable
from router.stream_token import StreamTokens
from router.twilio_request import ForgedRequest, MalformedForm, read_signed_form
from router.twilio_signature import TwilioSignatureValidator
from router.webhook_replay import WebhookReplay, idempotency_token

FINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
"""Twilio's ``CallStatus`` values that end a call; the others are progress (queued, ringing, in-progress)."""

log = logging.getLogger("router.webhooks")

TWIML = "text/xml"


class TwimlAnswer(Response):
    """The answer to ``POST /twilio/voice``: TwiML plus the routing headers, its raw headers built in one
    step (Starlette's generic header handling was a visible share of every answer)."""

    media_type = TWIML

    def __init__(self, twiml: str, pipeline: str, reason: str) -> None:
        self.status_code = 200
        self.background = None
        self.body = twiml.encode()
        self.raw_headers = [
            (b"content-length", str(len(self.body)).encode()),
            (b"content-type", b"text/xml; charset=utf-8"),
            (b"x-voice-router-pipeline", pipeline.encode()),
            (b"x-voice-router-reason", reason.encode()),
        ]


class FirstTurn(Protocol):
    """What the router needs of the legacy pipeline."""

    async def first_turn(self, call_sid: str, *, moved: bool = False) -> str: ...


class TwilioWebhooks:
    def __init__(
        self,
        *,
        rollout: RolloutService,
        breaker: CircuitBreaker,
        breaker_view: BreakerView,
        store: StateStore,
        records: BatchWriter,
        legacy: FirstTurn,
        signatures: TwilioSignatureValidator,
        tokens: StreamTokens,
        metrics: Metrics,
        clock: Clock,
        public_base_url: str,
        caller_hash_key: bytes,
        fallback_twiml: str,
        realtime_has_capacity: Callable[[], bool],
        replay: WebhookReplay | None = None,
    ) -> None:
        self._rollout = rollout
        self._breaker = breaker
        self._breaker_view = breaker_view
        self._store = store
        self._records = records
        self._legacy = legacy
        self._signatures = signatures
        self._tokens = tokens
        self._metrics = metrics
        self._clock = clock
        self._caller_mac = KeyedSha256(caller_hash_key)
        self._fallback_twiml = fallback_twiml
        self._realtime_has_capacity = realtime_has_capacity
        self._replay = replay or WebhookReplay(metrics=metrics)
        base = public_base_url.rstrip("/")
        self._stream_url = ("wss://" if base.startswith("https://") else "ws://") + base.split("://", 1)[1]
        self._stream_url += "/twilio/media"
        self._legacy_start_url = f"{base}/legacy/start"
        self._legacy_turn_url = f"{base}/legacy/turn"
        self._realtime_template = self._build_realtime_template()

    def routes(self) -> list[Route]:
        return [
            Route("/twilio/voice", self._timed("voice", self.voice), methods=["POST"]),
            Route("/twilio/status", self._timed("status", self.status), methods=["POST"]),
        ]

    def _timed(
        self, name: str, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        histogram = self._metrics.webhook_latency.labels(name)

        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            try:
                return await handler(request)
            finally:
                histogram.observe(time.perf_counter() - started)

        return endpoint

    async def _signed_call(self, request: Request, route: str) -> tuple[dict[str, str], str] | Response:
        """The form and CallSid of a genuine Twilio callback, or the error response to send instead."""
        try:
            form = await read_signed_form(request, self._signatures)
        except MalformedForm as exc:
            self._metrics.rejected_requests.labels(route, "bad_form").inc()
            return JSONResponse({"error": f"malformed form body: {exc}"}, status_code=400)
        except ForgedRequest as exc:
            self._metrics.rejected_requests.labels(route, "signature").inc()
            log.warning("refused /twilio/%s: %s", route, exc)
            return JSONResponse({"error": "invalid X-Twilio-Signature"}, status_code=403)
        call_sid = form.get("CallSid", "")
        if not call_sid:
            self._metrics.rejected_requests.labels(route, "missing_callsid").inc()
            return JSONResponse({"error": "CallSid is required"}, status_code=400)
        call_sid_var.set(call_sid)
        return form, call_sid

    # POST /twilio/voice -------------------------------------------------------------------------
    async def voice(self, request: Request) -> Response:
        checked = await self._signed_call(request, "voice")
        if isinstance(checked, Response):
            return checked
        form, call_sid = checked
        return await self._replay.answer(
            "/twilio/voice", call_sid, idempotency_token(request), lambda: self._route_call(form, call_sid)
        )

    async def _route_call(self, form: dict[str, str], call_sid: str) -> Response:
        caller = form.get("From", "")
        decision, permit, breaker_state = await self._decide(caller, call_sid)
        self._metrics.count_decision(decision.pipeline.value, decision.reason)
        await self._record(call_sid, caller, decision, permit, breaker_state)
        if decision.pipeline is Pipeline.REALTIME:
            twiml = self._realtime_twiml(call_sid)
        else:
            twiml = await self._legacy_twiml(call_sid)
        log.info(
            "routed call to %s (%s)",
            decision.pipeline.value,
            decision.reason,
            extra={"pipeline": decision.pipeline.value, "reason": decision.reason},
        )
        return TwimlAnswer(twiml, decision.pipeline.value, decision.reason)

    async def _decide(
        self, caller: str, call_sid: str
    ) -> tuple[Decision, TrialPermit | None, BreakerState | None]:
        """The decision, the trial permit taken for it when it is a half-open trial, and the breaker state it
        was decided with (None when it could not be read), which the call record keeps for the report."""
        config = await self._rollout.read()
        if config is None:
            return Decision(Pipeline.LEGACY, "store_unavailable", None, 0.0), None, None
        try:
            breaker_state = await self._breaker_view.state()
        except StoreUnavailable:
            self._metrics.store_errors.labels("breaker_current").inc()
            return Decision(Pipeline.LEGACY, "store_unavailable", None, config.percent), None, None
        except BreakerConflictError:
            # The state could not be settled (a due transition kept losing its compare-and-set): legacy is
            # the answer that cannot hurt, never a 5xx.
            log.warning("breaker state kept changing under this read; routing to legacy")
            return Decision(Pipeline.LEGACY, "breaker_conflict", None, config.percent), None, None
        decision, permit = await self._admit(
            decide(config, caller=caller, call_sid=call_sid, breaker_state=breaker_state), call_sid
        )
        return decision, permit, breaker_state

    async def _admit(self, decision: Decision, call_sid: str) -> tuple[Decision, TrialPermit | None]:
        """A realtime decision checked against this worker's capacity and, for a half-open trial, given its
        trial permit (or turned into a legacy one when it gets none)."""
        if decision.pipeline is Pipeline.REALTIME and not self._realtime_has_capacity():
            # This worker already serves its limit of realtime calls (realtime_pipeline.admission); even a
            # forced or allow-listed call goes to legacy rather than slow every caller on the worker. Checked
            # before the trial permit, so a full worker does not spend one.
            if decision.trial:
                await self._release_earlier_trial(call_sid)
            return Decision(Pipeline.LEGACY, REALTIME_FULL, decision.bucket, decision.percent), None
        if not (decision.pipeline is Pipeline.REALTIME and decision.trial):
            return decision, None
        permit = await self._earlier_trial(call_sid)
        if permit is not None:
            log.info("a retried webhook keeps the trial permit its first attempt took")
            return decision, permit
        try:
            permit = await self._breaker.try_acquire_trial()
        except StoreUnavailable:
            self._metrics.store_errors.labels("breaker_trial").inc()
            permit = None
        except BreakerConflictError:  # no permit taken: the call is refused its trial, not answered 5xx
            log.warning("half-open trial permit not taken: the breaker kept changing; routing to legacy")
            permit = None
        if permit is None:
            return Decision(Pipeline.LEGACY, "breaker_half_open", decision.bucket, decision.percent), None
        return decision, permit

    async def _earlier_trial(self, call_sid: str) -> TrialPermit | None:
        """The permit an earlier attempt of this webhook took, when Twilio retried it and the retry reached
        another worker (past this worker's replay cache): the call keeps its trial instead of being refused
        one and sent to legacy while a permit is held for it. One point read, on half-open trials only."""
        try:
            record = await self._store.get_call(call_sid)
        except StoreUnavailable:
            self._metrics.store_errors.labels("get_call").inc()
            return None
        return CallRecord.trial_permit(record)

    async def _release_earlier_trial(self, call_sid: str) -> None:
        """A retry sent to legacy by a full worker: Twilio follows this answer, so the permit an earlier
        attempt took for realtime will never report; give it back rather than hold the round up."""
        permit = await self._earlier_trial(call_sid)
        if permit is None:
            return
        log.info(
            "a retried webhook went to legacy on a full worker: its first attempt's trial permit is released"
        )
        try:
            await self._breaker.release_trial(permit)
        except StoreUnavailable:
            self._metrics.store_errors.labels("breaker_release_trial").inc()
        except BreakerConflictError:  # the stale-trial timeout frees it; the call is answered anyway
            log.warning("trial permit not given back: the breaker kept changing")

    async def _record(
        self,
        call_sid: str,
        caller: str,
        decision: Decision,
        permit: TrialPermit | None,
        breaker_state: BreakerState | None,
    ) -> None:
        """Hand the call record to the write-behind writer; a breaker trial is written before we answer,
        because the realtime pipeline reads ``breaker_trial`` when the stream starts."""
        record = CallRecord(
            call_sid=call_sid,
            pipeline=decision.pipeline,
            reason=decision.reason,
            bucket=decision.bucket,
            percent=decision.percent,
            caller_hash=self.caller_hash(caller),
            started_at=self._clock.time(),
            breaker_trial=decision.trial,
            breaker_trial_round=None if permit is None else permit.round,
            breaker_state=None if breaker_state is None else breaker_state.value,
        )
        if not decision.trial:
            self._records.submit(record.to_dict())
            return
        try:
            await self._store.put_call(record.to_dict())
        except StoreUnavailable:
            self._metrics.store_errors.labels("put_call").inc()
            log.error("could not write the call record; answering anyway")

    def caller_hash(self, caller: str) -> str:
        """Keyed hash of the caller's number: joins calls of one caller without storing the number."""
        if not caller:
            return ""
        return self._caller_mac.digest(caller.encode()).hex()[:32]

    def _build_realtime_template(self) -> tuple[str, str]:
        """The realtime TwiML, built once with the twilio library around a placeholder token.

        Only the token differs between calls, and it is ``digits.base64url`` (nothing XML needs to
        escape), so each call costs a string join instead of an ElementTree serialisation.
        """
        placeholder = "TOKEN-PLACEHOLDER-7f3a"
        response = VoiceResponse()
        # If the media stream ends without a REST redirect (our process died, the socket dropped),
        # Twilio continues with <Connect action>: the caller lands on legacy instead of being cut off.
        connect = Connect(action=self._legacy_start_url, method="POST")
        stream = connect.stream(url=self._stream_url)
        stream.parameter(name="token", value=placeholder)
        response.append(connect)
        before, _, after = str(response).partition(placeholder)
        return before, after

    def _realtime_twiml(self, call_sid: str) -> str:
        before, after = self._realtime_template
        return before + self._tokens.issue(call_sid) + after

    async def _legacy_twiml(self, call_sid: str) -> str:
        try:
            return await self._legacy.first_turn(call_sid)
        except Exception:
            log.exception("legacy first turn failed; answering with the greeting read out and a listen")
            return self._fallback_twiml

    # POST /twilio/status ------------------------------------------------------------------------
    async def status(self, request: Request) -> Response:
        checked = await self._signed_call(request, "status")
        if isinstance(checked, Response):
            return checked
        form, call_sid = checked
        status = form.get("CallStatus", "")
        if status not in FINAL_STATUSES:
            # A number set to send progress events (ringing, answered) may deliver one after "completed"
            # (callbacks are separate requests, retried and reordered): written, it would undo the end. The
            # record says "in-progress" from its first webhook until the final status.
            return Response(status_code=204)
        fields: dict[str, object] = {"status": status, "ended_at": self._clock.time()}
        duration = form.get("CallDuration", "")
        if duration.isascii() and duration.isdigit():  # isdigit() alone takes "²", which float() refuses
            fields["duration_s"] = float(duration)
        try:
            await self._records.flush()  # the call's own record first, or this merge would be replaced
            await self._store.merge_call(call_sid, fields)
        except StoreUnavailable:
            self._metrics.store_errors.labels("merge_call").inc()
            log.error("could not finalise the call record")
        return Response(status_code=204)
