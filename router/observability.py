"""Prometheus metrics (one registry per app, no globals) and JSON logs that carry the CallSid."""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Latency buckets in seconds, shared by every latency histogram so the comparison can line them up with
# the mergeable sketches (issue 5). Dense where voice latency lives (100 ms … 3 s).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.25,
    0.3,
    0.4,
    0.5,
    0.6,
    0.75,
    0.9,
    1.0,
    1.25,
    1.5,
    1.75,
    2.0,
    2.5,
    3.0,
    4.0,
    5.0,
    7.5,
    10.0,
    15.0,
)
WEBHOOK_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.02,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)

call_sid_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("call_sid", default=None)


class Metrics:
    """Every metric the service exports, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.decisions = Counter(
            "voice_router_decisions", "Routing decisions", ["pipeline", "reason"], registry=r
        )
        self.webhook_latency = Histogram(
            "voice_router_webhook_seconds",
            "Time to answer a Twilio webhook",
            ["route"],
            buckets=WEBHOOK_BUCKETS,
            registry=r,
        )
        self.rollout_percent = Gauge(
            "voice_router_rollout_percent", "Rollout percent to realtime", registry=r
        )
        self.breaker_state = Gauge(
            "voice_router_breaker_state", "1 for the breaker's current state", ["state"], registry=r
        )
        self.breaker_transitions = Counter(
            "voice_router_breaker_transitions",
            "Breaker state transitions",
            ["from_state", "to_state"],
            registry=r,
        )
        self.breaker_outcomes = Counter(
            "voice_router_breaker_outcomes",
            "Realtime call outcomes fed to the breaker",
            ["outcome"],
            registry=r,
        )
        self.store_errors = Counter(
            "voice_router_store_errors", "State store operations that failed", ["operation"], registry=r
        )
        # ``labels()`` costs more than the update itself, and these two are updated on every call and turn:
        # their children are looked up once per label pair.
        self._children: dict[tuple[int, str, str], Any] = {}
        self.turn_latency = Histogram(
            "voice_router_turn_latency_seconds",
            "Per-turn latency by pipeline and stage",
            ["pipeline", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.turn_failures = Counter(
            "voice_router_turn_failures",
            "Turns that failed, by pipeline and stage",
            ["pipeline", "stage"],
            registry=r,
        )
        self.fallbacks = Counter(
            "voice_router_fallbacks", "Realtime calls moved to legacy mid-call", ["reason"], registry=r
        )
        self.stt_threads = Gauge(
            "voice_router_stt_threads",
            "Azure STT recognition threads still running on this worker, including abandoned ones "
            "(at most LEGACY_STT_MAX_CONCURRENT)",
            registry=r,
        )
        self.active_streams = Gauge("voice_router_active_streams", "Open Twilio media streams", registry=r)
        self.realtime_calls = Gauge(
            "voice_router_realtime_calls",
            "Realtime calls holding one of this worker's call slots",
            registry=r,
        )
        self.realtime_call_limit = Gauge(
            "voice_router_realtime_call_limit", "REALTIME_MAX_CALLS of this worker (0: no limit)", registry=r
        )
        self.bridge_dropped_frames = Counter(
            "voice_router_bridge_dropped_frames",
            "Twilio frames dropped by the bridge",
            ["reason"],
            registry=r,
        )
        self.barge_ins = Counter("voice_router_barge_ins", "Caller interruptions", ["pipeline"], registry=r)
        self.silence_hang_ups = Counter(
            "voice_router_silence_hang_ups",
            "Calls the agent hung up on because the caller stayed silent (after its re-prompts and goodbye; a"
            " hang-up Twilio refused is in the call record)",
            ["pipeline"],
            registry=r,
        )
        self.playback_gaps = Histogram(
            "voice_router_playback_gap_seconds",
            "Realtime: silences in mid-reply (Twilio had played all the audio sent), 100 ms or longer",
            buckets=(0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
            registry=r,
        )
        self.tool_calls = Histogram(
            "voice_router_tool_call_seconds",
            "Agent tool calls by pipeline, tool and result (ok, timeout, unreachable, http_<status>, …)",
            ["pipeline", "tool", "result"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.webhook_replays = Counter(
            "voice_router_webhook_replays",
            "Twilio retries answered with the first attempt's answer (same I-Twilio-Idempotency-Token)",
            ["route"],
            registry=r,
        )
        self.rejected_requests = Counter(
            "voice_router_rejected_requests",
            "Requests refused (signature, size, validation)",
            ["route", "reason"],
            registry=r,
        )

    def observe_turn(self, pipeline: str, stage: str, milliseconds: float) -> None:
        self._child(self.turn_latency, pipeline, stage).observe(milliseconds / 1000.0)

    def count_decision(self, pipeline: str, reason: str) -> None:
        self._child(self.decisions, pipeline, reason).inc()

    def _child(self, metric: Any, first: str, second: str) -> Any:
        key = (id(metric), first, second)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(first, second)
        return child


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``call_sid`` comes from the context variable or ``extra``."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        call_sid = getattr(record, "call_sid", None) or call_sid_var.get()
        if call_sid:
            payload["call_sid"] = call_sid
        for key in ("event", "pipeline", "reason", "stage", "error", "state", "from_state", "to_state"):
            value = getattr(record, key, None)
            if value is not None:
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(payload, default=str).decode()


def configure_logging(level: str = "INFO", *, json_logs: bool = True) -> None:
    """Install the JSON formatter on the root logger (called by the CLI, never at import)."""
    handler = logging.StreamHandler(sys.stderr)
    if json_logs:
        handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The Azure SDKs log every HTTP request and response at INFO: far too much for a call service.
    for noisy in ("azure", "azure.core.pipeline.policies.http_logging_policy"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
