"""The app factory: builds the whole service from a ``Settings`` object, wiring every part explicitly.

Tests and the local profile pass their own store, clock or pipelines; production passes nothing and
gets the real ones. Nothing here runs at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from flags.breaker import BreakerConfig, BreakerConflictError, CircuitBreaker
from flags.clock import Clock, SystemClock
from legacy_pipeline.twiml import TwimlBuilder
from router.admin import AdminApi, ComparisonBuilder
from router.agent_profile import AgentProfile
from router.breaker_listeners import count_transitions, set_state_gauge
from router.breaker_view import BreakerView
from router.comparison import Prices, build_comparison
from router.limits import BodySizeLimitMiddleware
from router.observability import Metrics
from router.record_writer import BatchWriter
from router.retention import RecordRetention
from router.rollout_service import RolloutService
from router.settings import Settings
from router.store.base import StateStore, StoreUnavailable
from router.store.factory import open_store
from router.stream_token import StreamTokens
from router.tool_calls import ToolRunner
from router.twilio_signature import TwilioSignatureValidator
from router.webhooks import TwilioWebhooks

log = logging.getLogger("router.app")


class PipelinePart(Protocol):
    def routes(self) -> list[BaseRoute]: ...

    async def start(self) -> None:
        """Background work that needs a running loop (caches, clean-up); must not block start-up."""
        ...

    async def aclose(self) -> None: ...


class RealtimePart(PipelinePart, Protocol):
    def has_capacity(self) -> bool:
        """Whether this worker can take one more realtime call (realtime_pipeline.admission)."""
        ...


class NoRealtime:
    """A realtime part that serves nothing: for legacy-only deployments, tests and benchmarks."""

    def routes(self) -> list[BaseRoute]:
        return []

    def has_capacity(self) -> bool:
        return True

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class LegacyPart(PipelinePart, Protocol):
    async def first_turn(self, call_sid: str, *, moved: bool = False) -> str: ...

    async def flush(self) -> None:
        """Write the turn records queued behind earlier answers (before the admin API reads them)."""
        ...


@dataclass
class Components:
    """Everything the factory built, kept on ``app.state.components`` for tests and the CLI."""

    settings: Settings
    profile: AgentProfile
    store: StateStore
    metrics: Metrics
    clock: Clock
    breaker: CircuitBreaker
    rollout: RolloutService
    signatures: TwilioSignatureValidator
    tokens: StreamTokens
    legacy: LegacyPart
    realtime: RealtimePart


def derived_secret(explicit: str, root: str, purpose: str) -> bytes:
    """``explicit`` if set, else a purpose-specific key derived from ``root`` (same on every replica)."""
    if explicit:
        return explicit.encode()
    if not root:
        raise ValueError(f"no secret for {purpose}: set TWILIO_AUTH_TOKEN or an explicit key")
    return hmac.new(root.encode(), purpose.encode(), hashlib.sha256).digest()


def breaker_config(settings: Settings) -> BreakerConfig:
    return BreakerConfig(
        window_seconds=settings.breaker_window_seconds,
        minimum_calls=settings.breaker_minimum_calls,
        failure_rate_threshold=settings.breaker_failure_rate_threshold,
        slow_call_rate_threshold=settings.breaker_slow_call_rate_threshold,
        slow_call_seconds=settings.breaker_slow_call_seconds,
        wait_open_seconds=settings.breaker_wait_open_seconds,
        half_open_calls=settings.breaker_half_open_calls,
        consecutive_connect_failures=settings.breaker_consecutive_connect_failures,
    )


def create_app(
    settings: Settings,
    *,
    store: StateStore | None = None,
    clock: Clock | None = None,
    metrics: Metrics | None = None,
    legacy: LegacyPart | None = None,
    realtime: RealtimePart | None = None,
    comparison: ComparisonBuilder | None = None,
    tools: ToolRunner | None = None,
) -> Starlette:
    profile = AgentProfile.load(settings.agent_profile)
    store = store if store is not None else open_store(settings.state_url)
    metrics = metrics or Metrics()
    if tools is None:
        # One client for every tool call of both pipelines; each call has its own deadline (the tool's
        # ``timeout_seconds``), so the client's own timeout is only a backstop.
        tool_client = httpx.AsyncClient(timeout=httpx.Timeout(30.0), follow_redirects=False)
        tools = ToolRunner(profile.tools, tool_client, metrics=metrics)
    clock = clock or SystemClock()
    auth_token = settings.twilio_auth_token.get_secret_value()
    signatures = TwilioSignatureValidator(auth_token, settings.public_base_url)
    tokens = StreamTokens(
        derived_secret(settings.stream_token_secret.get_secret_value(), auth_token, "stream-token"),
        settings.stream_token_ttl_seconds,
        clock=clock.time,
    )
    # The store audits each transition in the same write as the change (flags.breaker_state.BreakerTransition).
    breaker = CircuitBreaker(
        breaker_config(settings), store, clock=clock, listeners=[count_transitions(metrics)]
    )
    rollout = RolloutService(
        store,
        initial_percent=settings.rollout_percent,
        salt=settings.rollout_salt,
        metrics=metrics,
        cache_seconds=settings.config_cache_seconds,
        monotonic=clock.monotonic,
        wall=clock.time,
    )
    if legacy is None:
        from legacy_pipeline.pipeline import LegacyPipeline

        legacy = LegacyPipeline(
            settings=settings,
            profile=profile,
            store=store,
            metrics=metrics,
            signatures=signatures,
            clock=clock,
            tools=tools,
        )
    if realtime is None:
        from realtime_pipeline.pipeline import RealtimePipeline

        realtime = RealtimePipeline(
            settings=settings,
            profile=profile,
            store=store,
            breaker=breaker,
            metrics=metrics,
            signatures=signatures,
            tokens=tokens,
            clock=clock,
            tools=tools,
        )
    breaker_view = BreakerView(
        breaker, cache_seconds=settings.config_cache_seconds, monotonic=clock.monotonic
    )
    # A transition decided on this replica reroutes its next call at once, not after the cache period.
    breaker.add_listener(breaker_view.on_transition)
    records = BatchWriter(store.put_calls, metrics, operation="put_call", what="call records")
    webhooks = TwilioWebhooks(
        rollout=rollout,
        breaker=breaker,
        breaker_view=breaker_view,
        store=store,
        records=records,
        legacy=legacy,
        signatures=signatures,
        tokens=tokens,
        metrics=metrics,
        clock=clock,
        public_base_url=settings.public_base_url,
        caller_hash_key=derived_secret(
            settings.caller_hash_key.get_secret_value(), auth_token, "caller-hash"
        ),
        # Built by legacy's own TwiML builder (the profile's language, hints and speech timeout, and <Record> in
        # azure STT mode); read out with <Say>, so it needs neither TTS nor the blob store.
        fallback_twiml=TwimlBuilder(
            public_base_url=settings.public_base_url, profile=profile, stt_mode=settings.legacy_stt_mode
        ).say_and_listen(profile.greeting or "Hello, how can I help you?"),
        realtime_has_capacity=realtime.has_capacity,
    )
    if comparison is None:
        prices = Prices.load(settings.prices_file) if settings.prices_file else Prices.load()

        async def comparison(since: float | None, *, same_population: bool = False) -> dict[str, Any]:
            built = await build_comparison(store, since=since, prices=prices, same_population=same_population)
            return built.to_dict()

    async def flush_records() -> None:
        await asyncio.gather(records.flush(), legacy.flush())

    admin = AdminApi(
        token=settings.admin_token.get_secret_value(),
        rollout=rollout,
        breaker=breaker,
        store=store,
        comparison=comparison,
        flush_records=flush_records,
    )
    components = Components(
        settings=settings,
        profile=profile,
        store=store,
        metrics=metrics,
        clock=clock,
        breaker=breaker,
        rollout=rollout,
        signatures=signatures,
        tokens=tokens,
        legacy=legacy,
        realtime=realtime,
    )

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        try:
            await store.ping()
        except StoreUnavailable:
            return JSONResponse({"status": "unavailable", "store": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def metrics_endpoint(request: Request) -> Response:
        # The gauge keeps its last value when the state cannot be read now: the scrape must still answer.
        with contextlib.suppress(StoreUnavailable, BreakerConflictError):
            set_state_gauge(metrics, (await breaker.current()).state)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.open()
        try:
            await rollout.read()
            # Through the webhook's view: a store that goes down before the first call leaves this to route by.
            set_state_gauge(metrics, await breaker_view.state())
        except StoreUnavailable:
            log.warning("state store unreachable at start-up; serving with legacy as the default")
        except BreakerConflictError:
            log.warning("breaker state kept changing at start-up; it is read again on each call")
        records.start()
        await legacy.start()
        await realtime.start()
        pruning: asyncio.Task[None] | None = None
        if settings.record_retention_days > 0:
            retention = RecordRetention(
                store,
                keep_days=settings.record_retention_days,
                interval_seconds=settings.record_prune_interval_seconds,
                clock=clock,
                metrics=metrics,
            )
            pruning = asyncio.get_running_loop().create_task(retention.run_forever(), name="record-retention")
        # Everything built so far lives as long as the process: move it out of the garbage collector's
        # sight, so full collections stay short while calls are being answered.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            if pruning is not None:
                pruning.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pruning
            await realtime.aclose()
            await legacy.aclose()
            await tools.aclose()
            await records.aclose()
            await store.close()

    routes: list[BaseRoute] = [
        *webhooks.routes(),  # first: Starlette matches routes in order, and these are the hot ones
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        *admin.routes(),
        *legacy.routes(),
        *realtime.routes(),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(BodySizeLimitMiddleware)],
        lifespan=lifespan,
    )
    app.state.components = components
    return app
