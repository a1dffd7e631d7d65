"""``RealtimePipeline``: the realtime half of voice-router, wired from settings.

Builds the Voice Live client (API key, or Microsoft Entra ID when no key is set), the call mover, the
worker's call slots and the media-stream endpoint, and creates one :class:`CallBridge` per authenticated
stream.
"""

from __future__ import annotations

import logging

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket

from flags.breaker import CircuitBreaker, TrialPermit
from flags.clock import Clock
from realtime_pipeline.admission import CallSlots
from realtime_pipeline.audio import audio_path
from realtime_pipeline.bridge import BridgeConfig, CallBridge, FrameProbe
from realtime_pipeline.call_log import CallLog
from realtime_pipeline.call_mover import CallMover, TwilioCallMover
from realtime_pipeline.endpoint import ROUTE, MediaStreamEndpoint
from realtime_pipeline.guards import RateLimitedLog
from realtime_pipeline.outcome import OutcomeReporter
from realtime_pipeline.session_config import build_session
from realtime_pipeline.twilio_media import Start
from realtime_pipeline.voicelive_client import (
    ApiKeyAuth,
    VoiceLiveAuth,
    VoiceLiveClient,
    VoiceLiveConnector,
    default_entra_auth,
)
from router.agent_profile import AgentProfile
from router.observability import Metrics
from router.records import CallRecord
from router.settings import Settings
from router.store.base import StateStore
from router.stream_token import StreamTokens
from router.tool_calls import ToolRunner
from router.twilio_signature import TwilioSignatureValidator

log = logging.getLogger(__name__)


class RealtimePipeline:
    def __init__(
        self,
        *,
        settings: Settings,
        profile: AgentProfile,
        store: StateStore,
        breaker: CircuitBreaker,
        metrics: Metrics,
        signatures: TwilioSignatureValidator,
        tokens: StreamTokens,
        clock: Clock,
        connector: VoiceLiveConnector | None = None,
        call_mover: CallMover | None = None,
        auth: VoiceLiveAuth | None = None,
        probe: FrameProbe | None = None,
        tools: ToolRunner | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._breaker = breaker
        self._metrics = metrics
        self._clock = clock
        self._probe = probe
        api_key = settings.azure_voicelive_api_key.get_secret_value()
        self._auth: VoiceLiveAuth = auth or (ApiKeyAuth(api_key) if api_key else default_entra_auth())
        self.client = VoiceLiveClient(
            endpoint=settings.azure_voicelive_endpoint,
            api_version=settings.azure_voicelive_api_version,
            model=settings.azure_voicelive_model,
            auth=self._auth,
            connector=connector,
            open_timeout=settings.realtime_open_timeout_seconds,
            ready_timeout=settings.realtime_session_ready_timeout_seconds,
        )
        self._mover: CallMover = call_mover or TwilioCallMover(
            account_sid=settings.twilio_account_sid,
            auth_token=settings.twilio_auth_token.get_secret_value(),
            public_base_url=settings.public_base_url,
            api_base_url=settings.twilio_api_base_url,
        )
        self.session = build_session(
            profile,
            audio_mode=settings.realtime_audio_mode,
            voice_override=settings.azure_voicelive_voice,
            instructions_override=settings.azure_voicelive_instructions,
            tools=tools.session_tools() if tools else None,
        )
        self._tools = tools if tools else None
        self.bridge_config = BridgeConfig(
            greeting=profile.greeting,
            tool_wait_phrase=profile.tool_wait_phrase if profile.tool_wait_seconds > 0 else "",
            tool_wait_seconds=profile.tool_wait_seconds,
            handover_history_messages=profile.legacy.max_history_messages,
            slow_call_seconds=settings.breaker_slow_call_seconds,
            open_timeout=settings.realtime_open_timeout_seconds,
            ready_timeout=settings.realtime_session_ready_timeout_seconds,
            reconnect_timeout=settings.realtime_reconnect_timeout_seconds,
            session_max_age_seconds=settings.realtime_session_max_age_seconds,
            move_grace_seconds=settings.realtime_move_grace_seconds,
            stall_seconds=settings.realtime_stall_seconds,
            max_frames_per_second=settings.realtime_max_frames_per_second,
            frame_burst=float(settings.realtime_frame_burst),
            silence_reprompt_seconds=profile.silence.reprompt_after_seconds,
            silence_reprompt=profile.silence.reprompt,
            silence_max_reprompts=profile.silence.max_reprompts,
            silence_goodbye=profile.silence.goodbye,
        )
        self._ratelog = RateLimitedLog(log, clock.monotonic)
        self.endpoint = MediaStreamEndpoint(
            signatures=signatures,
            tokens=tokens,
            metrics=metrics,
            bridge_factory=self._bridge,
            ratelog=self._ratelog,
            slots=CallSlots(settings.realtime_max_calls),
            start_timeout=settings.realtime_start_timeout_seconds,
        )

    def routes(self) -> list[BaseRoute]:
        return [WebSocketRoute(ROUTE, self.endpoint.handle, name="twilio_media")]

    def has_capacity(self) -> bool:
        """Whether this worker can take one more realtime call (the webhook routes to legacy if not)."""
        return not self.endpoint.slots.full

    async def _bridge(self, websocket: WebSocket, start: Start, admitted: bool) -> CallBridge:
        # A refused stream reports no breaker outcome, but gives back its trial permit if it was a trial.
        trial = await self._trial_permit(start.call_sid)
        call_log = CallLog(self._store, self._metrics, start.call_sid)
        outcome = OutcomeReporter(self._breaker, self._metrics, call_log, trial=trial)
        return CallBridge(
            websocket=websocket,
            start=start,
            client=self.client,
            session=self.session,
            audio=audio_path(self._settings.realtime_audio_mode),
            mover=self._mover,
            outcome=outcome,
            call_log=call_log,
            metrics=self._metrics,
            clock=self._clock,
            config=self.bridge_config,
            ratelog=self._ratelog,
            probe=self._probe,
            admitted=admitted,
            tools=self._tools,
        )

    async def _trial_permit(self, call_sid: str) -> TrialPermit | None:
        """The half-open trial permit the router admitted this call with, from its record (None: no trial)."""
        try:
            record = await self._store.get_call(call_sid)
        except Exception:
            log.warning("call record unavailable; its breaker outcome counts as a regular call")
            return None
        return CallRecord.trial_permit(record)

    async def start(self) -> None:
        """Nothing to warm up: Voice Live sessions are per call and the Entra token is fetched on demand."""
        return None

    async def aclose(self) -> None:
        await self._mover.aclose()
        await self.client.aclose()
