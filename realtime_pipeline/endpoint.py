"""``WS /twilio/media``: authenticate the stream, then hand it to a :class:`CallBridge`.

Two checks, both before any Voice Live session is opened (so an unauthenticated client costs us nothing):
the ``X-Twilio-Signature`` of the upgrade, computed by Twilio over the ``wss://`` URL, and the per-call token
the router put in ``<Parameter name="token">``, which arrives in ``start.customParameters.token``. Either
failing closes the socket with 1008 (policy violation). An authenticated stream then takes one of the
worker's call slots (:mod:`realtime_pipeline.admission`); when none is free its bridge moves the call to
legacy instead of opening a Voice Live session.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from starlette.websockets import WebSocket, WebSocketDisconnect

from realtime_pipeline.admission import CallSlots
from realtime_pipeline.bridge import CallBridge
from realtime_pipeline.guards import RateLimitedLog
from realtime_pipeline.twilio_media import Connected, MediaFrameError, Start, parse_frame
from router.observability import Metrics, call_sid_var
from router.stream_token import StreamTokens
from router.twilio_signature import TwilioSignatureValidator

log = logging.getLogger(__name__)

ROUTE = "/twilio/media"
POLICY_VIOLATION = 1008
MAX_FRAMES_BEFORE_START = 50

# (websocket, start, admitted): ``admitted`` False means the worker is full and the bridge must move the call.
BridgeFactory = Callable[[WebSocket, Start, bool], Awaitable[CallBridge]]


class MediaStreamEndpoint:
    def __init__(
        self,
        *,
        signatures: TwilioSignatureValidator,
        tokens: StreamTokens,
        metrics: Metrics,
        bridge_factory: BridgeFactory,
        ratelog: RateLimitedLog,
        slots: CallSlots,
        start_timeout: float = 10.0,
    ) -> None:
        self._signatures = signatures
        self._tokens = tokens
        self._metrics = metrics
        self._bridge_factory = bridge_factory
        self._ratelog = ratelog
        self.slots = slots
        metrics.realtime_call_limit.set(slots.limit)
        self._start_timeout = start_timeout

    async def handle(self, websocket: WebSocket) -> None:
        signature = websocket.headers.get("x-twilio-signature")
        if not self._signatures.validate_ws(websocket.url.path, websocket.url.query, signature):
            await self._reject(websocket, "signature", "invalid X-Twilio-Signature")
            return
        await websocket.accept()
        try:
            start = await asyncio.wait_for(self._await_start(websocket), self._start_timeout)
        except TimeoutError:
            await self._reject(websocket, "no_start", "no start event", accepted=True)
            return
        except WebSocketDisconnect:
            return
        if start is None:
            await self._reject(websocket, "no_start", "stream ended before start", accepted=True)
            return
        if not self._tokens.verify(start.custom_parameters.get("token"), start.call_sid):
            await self._reject(websocket, "token", "invalid or expired stream token", accepted=True)
            return
        token = call_sid_var.set(start.call_sid)
        admitted = self.slots.try_take()
        self._metrics.realtime_calls.set(self.slots.active)
        self._metrics.active_streams.inc()
        try:
            bridge = await self._bridge_factory(websocket, start, admitted)
            await bridge.run()
        except Exception:
            log.exception("realtime bridge crashed")
        finally:
            if admitted:
                self.slots.release()
                self._metrics.realtime_calls.set(self.slots.active)
            self._metrics.active_streams.dec()
            call_sid_var.reset(token)
            try:
                await websocket.close(1000)
            except Exception:
                log.debug("websocket already closed")

    async def _await_start(self, websocket: WebSocket) -> Start | None:
        """Read until ``start``; ``connected`` is expected, anything else before it is dropped."""
        for _ in range(MAX_FRAMES_BEFORE_START):
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return None
            frame = message.get("text") or message.get("bytes") or b""
            try:
                event = parse_frame(frame)
            except MediaFrameError as exc:
                self._drop(f"before_start_{exc.reason}")
                continue
            if isinstance(event, Start):
                return event
            if not isinstance(event, Connected):
                self._drop("before_start")
        return None

    def _drop(self, reason: str) -> None:
        self._metrics.bridge_dropped_frames.labels(reason).inc()
        self._ratelog.log(logging.WARNING, reason, f"dropped Twilio frame: {reason}")

    async def _reject(
        self, websocket: WebSocket, reason: str, message: str, *, accepted: bool = False
    ) -> None:
        self._metrics.rejected_requests.labels(ROUTE, reason).inc()
        log.warning("media stream rejected: %s", message, extra={"reason": reason})
        try:
            if not accepted:
                await websocket.accept()
            await websocket.close(POLICY_VIOLATION, message)
        except Exception:
            log.debug("could not close rejected stream")
