"""Side-by-side comparison of the two pipelines: latency percentiles, outcomes and an estimated cost.

Percentiles come from DDSketches (1 % relative accuracy), never from averaging percentiles: a sketch is
mergeable, so the sketches of two replicas (or two time windows) add up to exactly the sketch of all their
samples. Next to each sketch we keep exact counts per Prometheus bucket of
:data:`router.observability.LATENCY_BUCKETS`, so the report lines up with ``voice_router_turn_latency_seconds``.

Inputs are the store's call and turn records (what the server saw) and, optionally, the caller-side
measurements of the Twilio call simulator (what the caller heard). Turns are split into the greeting (turn
0), the first reply (turn 1, where cold starts show) and later turns.
"""

from __future__ import annotations

import asyncio
import math
import textwrap
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from router.latency_sketch import RELATIVE_ACCURACY as RELATIVE_ACCURACY
from router.latency_sketch import LatencySketch as LatencySketch
from router.report_guardrails import call_guardrails
from router.report_population import Population, same_bucket_calls
from router.report_slices import (
    DIMENSION_TITLES,
    SLICE_DIMENSIONS,
    SLICE_LATENCY_EXCLUDE,
    TURN_DIMENSIONS,
    UNKNOWN,
    Slices,
    SliceStats,
    merge_slices,
    slice_keys,
    slice_rows,
    slices_from_dict,
    slices_to_dict,
    turn_slice_keys,
)
from router.store.base import StateStore

SEGMENTS = ("greeting", "first", "later")
PIPELINES = ("legacy", "realtime")
DEFAULT_PRICES = Path(__file__).with_name("prices.yaml")
TURNS_PAGE = 100_000  # turns per store read (the stores' default list_turns limit)


def segment_of(turn: int) -> str:
    return "greeting" if turn <= 0 else "first" if turn == 1 else "later"


@dataclass
class Prices:
    """USD list prices (see ``router/prices.yaml`` for sources)."""

    voicelive_text_input_per_mtok: float = 0.0
    voicelive_cached_input_per_mtok: float = 0.0
    voicelive_text_output_per_mtok: float = 0.0
    voicelive_audio_input_per_mtok: float = 0.0
    voicelive_audio_output_per_mtok: float = 0.0
    openai_input_per_mtok: float = 0.0
    openai_output_per_mtok: float = 0.0
    tts_per_mchar: float = 0.0
    stt_per_hour: float = 0.0
    speech_recognition_per_request: float = 0.0
    voice_per_minute: float = 0.0

    @classmethod
    def load(cls, path: Path | str = DEFAULT_PRICES) -> Prices:
        """The prices in ``path``; ValueError, in one line, for a file that is not a price list."""
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: not a readable YAML file ({' '.join(str(exc).split())})") from exc
        try:
            return cls.from_mapping(data)
        except (AttributeError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: not a price list like router/prices.yaml ({exc})") from exc

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Prices:
        vl = data.get("voicelive", {}) or {}
        oa = data.get("openai", {}) or {}
        sp = data.get("azure_speech", {}) or {}
        tw = data.get("twilio", {}) or {}
        return cls(
            voicelive_text_input_per_mtok=float(vl.get("text_input_per_mtok", 0.0)),
            voicelive_cached_input_per_mtok=float(vl.get("cached_input_per_mtok", 0.0)),
            voicelive_text_output_per_mtok=float(vl.get("text_output_per_mtok", 0.0)),
            voicelive_audio_input_per_mtok=float(vl.get("audio_input_per_mtok", 0.0)),
            voicelive_audio_output_per_mtok=float(vl.get("audio_output_per_mtok", 0.0)),
            openai_input_per_mtok=float(oa.get("input_per_mtok", 0.0)),
            openai_output_per_mtok=float(oa.get("output_per_mtok", 0.0)),
            tts_per_mchar=float(sp.get("tts_per_mchar", 0.0)),
            stt_per_hour=float(sp.get("stt_per_hour", 0.0)),
            speech_recognition_per_request=float(tw.get("speech_recognition_per_request", 0.0)),
            voice_per_minute=float(tw.get("voice_per_minute", 0.0)),
        )

    def turn_cost(self, pipeline: str, usage: Mapping[str, Any], *, gathered: bool) -> dict[str, float]:
        """Cost lines (USD) of one turn from its usage counters."""
        u = {k: float(v) for k, v in usage.items() if isinstance(v, int | float)}
        lines: dict[str, float] = {}
        if pipeline == "realtime":
            # Cached tokens are a subset of the text and audio input tokens (input = text + audio): they
            # are billed at the cached price instead of, not on top of, their full price.
            audio_in = u.get("input_audio_tokens", 0.0)
            text_in = u.get("input_text_tokens", max(0.0, u.get("input_tokens", 0.0) - audio_in))
            cached_text = u.get("input_cached_text_tokens")
            cached_audio = u.get("input_cached_audio_tokens")
            if cached_text is None and cached_audio is None:
                # No split given: off the text first (the cheaper guess never understates the cost).
                cached = u.get("input_cached_tokens", 0.0)
                cached_text = min(cached, text_in)
                cached_audio = min(cached - cached_text, audio_in)
            elif cached_text is None or cached_audio is None:
                cached = u.get("input_cached_tokens", 0.0)
                known = cached_text if cached_text is not None else cached_audio
                other = max(0.0, cached - (known or 0.0))
                cached_text = cached_text if cached_text is not None else other
                cached_audio = cached_audio if cached_audio is not None else other
            uncached_text = max(0.0, text_in - cached_text)
            uncached_audio = max(0.0, audio_in - cached_audio)
            audio_out = u.get("output_audio_tokens", 0.0)
            text_out = u.get("output_text_tokens", max(0.0, u.get("output_tokens", 0.0) - audio_out))
            lines["voicelive_tokens"] = (
                uncached_audio * self.voicelive_audio_input_per_mtok
                + (cached_text + cached_audio) * self.voicelive_cached_input_per_mtok
                + uncached_text * self.voicelive_text_input_per_mtok
                + audio_out * self.voicelive_audio_output_per_mtok
                + text_out * self.voicelive_text_output_per_mtok
            ) / 1e6
        else:
            lines["openai_tokens"] = (
                u.get("prompt_tokens", 0.0) * self.openai_input_per_mtok
                + u.get("completion_tokens", 0.0) * self.openai_output_per_mtok
            ) / 1e6
            lines["tts_chars"] = u.get("tts_chars", 0.0) * self.tts_per_mchar / 1e6
            stt_seconds = u.get("stt_seconds", u.get("stt_audio_ms", 0.0) / 1000.0)
            lines["stt"] = stt_seconds / 3600.0 * self.stt_per_hour
            if gathered:
                lines["twilio_speech_recognition"] = self.speech_recognition_per_request
        return lines


@dataclass
class ArmReport:
    """One pipeline's numbers."""

    pipeline: str
    calls: int = 0
    completed_calls: int = 0
    turns: int = 0
    turn_errors: int = 0
    moved_to_legacy: int = 0  # realtime calls moved mid-call (fallbacks)
    silence_hang_ups: int = 0  # calls the agent ended after the caller went quiet (end_reason "silence")
    barge_ins: int = 0
    caller_turns: int = 0
    caller_no_reply: int = 0
    caller_barge_ins: int = 0
    cost_usd: dict[str, float] = field(default_factory=dict)  # by line, all calls of this arm
    # stage → segment → sketch (server side: response_ms, heard_ms, per-stage ms)
    stages: dict[str, dict[str, LatencySketch]] = field(default_factory=dict)
    # caller side: caller_latency_ms, caller_silence_ms
    caller: dict[str, dict[str, LatencySketch]] = field(default_factory=dict)
    errors_by_stage: dict[str, int] = field(default_factory=dict)
    # Guardrails of the calls routed to this arm (router.report_guardrails): realtime session reconnects and
    # renewals, and moves to legacy that Twilio took or refused.
    reconnects: int = 0
    renewals: int = 0
    moves_ok: int = 0
    moves_failed: int = 0
    # Audio quality (realtime): turns whose reply had a silence of 100 ms or more in mid-reply, when Twilio had
    # played all it had been sent (realtime_pipeline.playback_gaps); the gaps and their total length.
    gap_turns: int = 0
    playback_gaps: int = 0
    playback_gap_ms: float = 0.0
    # Barge-ins whose words are known (transcribed) and those of them with none: false interrupts (noise).
    judged_barge_ins: int = 0
    false_interrupts: int = 0
    # How Voice Live failed on this arm's calls, by kind and code (router.report_guardrails.failure_key).
    voicelive_failures: dict[str, int] = field(default_factory=dict)
    # dimension → value → counts and sketches (router.report_slices)
    slices: Slices = field(default_factory=dict)

    def slice(self, dimension: str, value: str) -> SliceStats:
        return self.slices.setdefault(dimension, {}).setdefault(value, SliceStats())

    def sketch(self, group: str, metric: str, segment: str) -> LatencySketch:
        target = self.stages if group == "stages" else self.caller
        return target.setdefault(metric, {}).setdefault(segment, LatencySketch())

    def overall(self, group: str, metric: str, *, exclude: Collection[str] = ()) -> LatencySketch:
        """All segments of one metric merged (but those in ``exclude``)."""
        return LatencySketch.of_segments(
            (self.stages if group == "stages" else self.caller).get(metric, {}), exclude
        )

    @property
    def error_rate(self) -> float:
        return self.turn_errors / self.turns if self.turns else 0.0

    @property
    def fallback_rate(self) -> float:
        return self.moved_to_legacy / self.calls if self.calls else 0.0

    @property
    def cost_per_call_usd(self) -> float:
        return sum(self.cost_usd.values()) / self.calls if self.calls else 0.0

    def merge(self, other: ArmReport) -> None:
        for name in (
            "calls",
            "completed_calls",
            "turns",
            "turn_errors",
            "moved_to_legacy",
            "silence_hang_ups",
            "barge_ins",
            "caller_turns",
            "caller_no_reply",
            "caller_barge_ins",
            "reconnects",
            "renewals",
            "moves_ok",
            "moves_failed",
            "gap_turns",
            "playback_gaps",
            "playback_gap_ms",
            "judged_barge_ins",
            "false_interrupts",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        merge_slices(self.slices, other.slices)
        for key, value in other.cost_usd.items():
            self.cost_usd[key] = self.cost_usd.get(key, 0.0) + value
        for key, count in other.errors_by_stage.items():
            self.errors_by_stage[key] = self.errors_by_stage.get(key, 0) + count
        for key, count in other.voicelive_failures.items():
            self.voicelive_failures[key] = self.voicelive_failures.get(key, 0) + count
        for group in ("stages", "caller"):
            source = other.stages if group == "stages" else other.caller
            for metric, segments in source.items():
                for segment, sketch in segments.items():
                    self.sketch(group, metric, segment).merge(sketch)

    def to_dict(self) -> dict[str, Any]:
        def dump(groups: dict[str, dict[str, LatencySketch]]) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for metric, segments in groups.items():
                entry: dict[str, Any] = {}
                for segment, sketch in segments.items():
                    entry[segment] = {**sketch.summary(), "sketch": sketch.to_dict()}
                merged = LatencySketch.of_segments(segments)
                entry["all"] = {**merged.summary(), "cdf": merged.cdf()}
                out[metric] = entry
            return out

        return {
            "pipeline": self.pipeline,
            "calls": self.calls,
            "completed_calls": self.completed_calls,
            "turns": self.turns,
            "turn_errors": self.turn_errors,
            "error_rate": self.error_rate,
            "errors_by_stage": dict(self.errors_by_stage),
            "moved_to_legacy": self.moved_to_legacy,
            "fallback_rate": self.fallback_rate,
            "silence_hang_ups": self.silence_hang_ups,
            "barge_ins": self.barge_ins,
            "caller_turns": self.caller_turns,
            "caller_no_reply": self.caller_no_reply,
            "caller_barge_ins": self.caller_barge_ins,
            "reconnects": self.reconnects,
            "renewals": self.renewals,
            "moves_ok": self.moves_ok,
            "moves_failed": self.moves_failed,
            "gap_turns": self.gap_turns,
            "playback_gaps": self.playback_gaps,
            "playback_gap_ms": self.playback_gap_ms,
            "judged_barge_ins": self.judged_barge_ins,
            "false_interrupts": self.false_interrupts,
            "voicelive_failures": dict(self.voicelive_failures),
            "cost_usd": dict(self.cost_usd),
            "cost_per_call_usd": self.cost_per_call_usd,
            "stages": dump(self.stages),
            "caller": dump(self.caller),
            "slices": slices_to_dict(self.slices),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArmReport:
        def load(groups: Mapping[str, Any]) -> dict[str, dict[str, LatencySketch]]:
            return {
                metric: {
                    segment: LatencySketch.from_dict(entry["sketch"])
                    for segment, entry in segments.items()
                    if segment != "all" and isinstance(entry, dict) and "sketch" in entry
                }
                for metric, segments in groups.items()
            }

        return cls(
            pipeline=str(data["pipeline"]),
            calls=int(data.get("calls", 0)),
            completed_calls=int(data.get("completed_calls", 0)),
            turns=int(data.get("turns", 0)),
            turn_errors=int(data.get("turn_errors", 0)),
            moved_to_legacy=int(data.get("moved_to_legacy", 0)),
            silence_hang_ups=int(data.get("silence_hang_ups", 0)),
            barge_ins=int(data.get("barge_ins", 0)),
            caller_turns=int(data.get("caller_turns", 0)),
            caller_no_reply=int(data.get("caller_no_reply", 0)),
            caller_barge_ins=int(data.get("caller_barge_ins", 0)),
            reconnects=int(data.get("reconnects", 0)),
            renewals=int(data.get("renewals", 0)),
            moves_ok=int(data.get("moves_ok", 0)),
            moves_failed=int(data.get("moves_failed", 0)),
            gap_turns=int(data.get("gap_turns", 0)),
            playback_gaps=int(data.get("playback_gaps", 0)),
            playback_gap_ms=float(data.get("playback_gap_ms", 0.0)),
            judged_barge_ins=int(data.get("judged_barge_ins", 0)),
            false_interrupts=int(data.get("false_interrupts", 0)),
            voicelive_failures={k: int(v) for k, v in (data.get("voicelive_failures") or {}).items()},
            slices=slices_from_dict(data.get("slices") or {}),
            cost_usd={k: float(v) for k, v in data.get("cost_usd", {}).items()},
            stages=load(data.get("stages", {})),
            caller=load(data.get("caller", {})),
            errors_by_stage={k: int(v) for k, v in data.get("errors_by_stage", {}).items()},
        )


@dataclass
class Comparison:
    since: float | None
    generated_at: float
    arms: dict[str, ArmReport]
    relative_accuracy: float = RELATIVE_ACCURACY
    population: Population = field(default_factory=Population)

    def arm(self, pipeline: str) -> ArmReport:
        return self.arms.setdefault(pipeline, ArmReport(pipeline=pipeline))

    def merge(self, other: Comparison) -> Comparison:
        """Combine two reports (two replicas, two windows): exact for counts and sketches."""
        merged = Comparison.from_dict(self.to_dict())
        for name, arm in other.arms.items():
            merged.arm(name).merge(arm)
        merged.population.merge(other.population)
        merged.generated_at = max(self.generated_at, other.generated_at)
        # The union's window: from the earlier start, or all time if either report covers all time.
        merged.since = None if self.since is None or other.since is None else min(self.since, other.since)
        return merged

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "generated_at": self.generated_at,
            "relative_accuracy": self.relative_accuracy,
            "segments": {"greeting": "turn 0", "first": "turn 1", "later": "turns 2+"},
            "population": self.population.to_dict(),
            "arms": {name: self.arms[name].to_dict() for name in sorted(self.arms)},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Comparison:
        return cls(
            since=data.get("since"),
            generated_at=float(data.get("generated_at", 0.0)),
            arms={name: ArmReport.from_dict(arm) for name, arm in data.get("arms", {}).items()},
            relative_accuracy=float(data.get("relative_accuracy", RELATIVE_ACCURACY)),
            population=Population.from_dict(data.get("population")),
        )


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def compare_records(
    calls: Iterable[Mapping[str, Any]],
    turns: Iterable[Mapping[str, Any]],
    *,
    prices: Prices,
    caller_measurements: Sequence[Mapping[str, Any]] = (),
    since: float | None = None,
    now: float | None = None,
    same_population: bool = False,
) -> Comparison:
    """The comparison of already-loaded records (pure; :func:`build_comparison` reads the store).

    ``same_population`` keeps only the calls of the buckets both arms served in the window, with their turns
    and caller measurements (:mod:`router.report_population`); the report's header says what it dropped.
    """
    comparison = Comparison(since=since, generated_at=now if now is not None else time.time(), arms={})
    for name in PIPELINES:
        comparison.arm(name)
    calls = list(calls)
    kept: set[str] | None = None
    if same_population:
        kept, comparison.population = same_bucket_calls(calls)
    arm_of_call: dict[str, str] = {}
    call_by_sid: dict[str, Mapping[str, Any]] = {}
    for call in calls:
        pipeline = str(call.get("pipeline") or "")
        sid = str(call.get("call_sid"))
        if not pipeline or (kept is not None and sid not in kept):
            continue
        arm = comparison.arm(pipeline)
        arm.calls += 1
        arm_of_call[sid] = pipeline
        call_by_sid[sid] = call
        # Only Twilio's "completed": busy, failed, no-answer and canceled calls also get ``ended_at``.
        completed = call.get("status") == "completed"
        moved = bool(call.get("moved_to_legacy"))
        arm.completed_calls += completed
        arm.moved_to_legacy += moved
        arm.silence_hang_ups += call.get("end_reason") == "silence"
        guardrails = call_guardrails(call)
        arm.reconnects += guardrails.reconnects
        arm.renewals += guardrails.renewals
        arm.moves_ok += guardrails.move == "ok"
        arm.moves_failed += guardrails.move == "failed"
        for key in guardrails.voicelive_failures:
            arm.voicelive_failures[key] = arm.voicelive_failures.get(key, 0) + 1
        for dimension, key in slice_keys(call).items():
            stats = arm.slice(dimension, key)
            stats.calls += 1
            stats.completed_calls += completed
            stats.moved_to_legacy += moved
    # A caller-side measurement is one turn as the caller heard it: the turn record with the same call, arm and
    # index says which turn-level slices (tool use) it belongs to.
    turn_slices: dict[tuple[str, str, int], dict[str, str]] = {}
    for turn in turns:
        pipeline = str(turn.get("pipeline") or "")
        if not pipeline:
            continue
        sid = str(turn.get("call_sid"))
        if kept is not None and sid not in kept:
            comparison.population.dropped_turns += 1
            continue
        arm = comparison.arm(pipeline)
        index = int(turn.get("turn") or 0)
        segment = segment_of(index)
        failed = bool(turn.get("error"))
        arm.turns += 1
        if failed:
            arm.turn_errors += 1
            stage = str(turn.get("error_stage") or "unknown")
            arm.errors_by_stage[stage] = arm.errors_by_stage.get(stage, 0) + 1
        if turn.get("interrupted"):
            arm.barge_ins += 1
        false_interrupt = turn.get("false_interrupt")
        if isinstance(false_interrupt, bool):
            arm.judged_barge_ins += 1
            arm.false_interrupts += false_interrupt
        gaps = turn.get("playback_gaps")
        if isinstance(gaps, int) and not isinstance(gaps, bool) and gaps > 0:
            arm.gap_turns += 1
            arm.playback_gaps += gaps
            arm.playback_gap_ms += _number(turn.get("playback_gap_ms")) or 0.0
        slices = [arm.slice(dimension, key) for dimension, key in slice_keys(call_by_sid.get(sid)).items()]
        turn_keys = turn_slices[(sid, pipeline, index)] = turn_slice_keys(turn)
        slices.extend(arm.slice(dimension, key) for dimension, key in turn_keys.items())
        for stats in slices:
            stats.turns += 1
            stats.turn_errors += failed
        for metric in ("response_ms", "heard_ms"):
            value = _number(turn.get(metric))
            if value is not None:
                arm.sketch("stages", metric, segment).add(value)
                for stats in slices:
                    stats.sketch(metric, segment).add(value)
        for stage, value in (turn.get("stages") or {}).items():
            number = _number(value)
            if number is not None:
                arm.sketch("stages", str(stage), segment).add(number)
        # Cost is charged to the arm the call was routed to (a moved call's legacy turns count for realtime),
        # and only for the calls in the window: it is divided by their number, and the turns of a call that
        # started before the window belong to no arm's calls here.
        owner_name = arm_of_call.get(sid)
        if owner_name is None:
            continue
        owner = comparison.arm(owner_name)
        usage = turn.get("usage") or {}
        # Twilio bills speech recognition per <Gather>; a turn we recognised ourselves (Azure STT on a
        # <Record>ing, its audio length in stt_audio_ms) paid for that instead.
        gathered = (
            pipeline == "legacy"
            and index >= 1
            and bool(turn.get("user_text"))
            and "stt_audio_ms" not in usage
        )
        for line, usd in prices.turn_cost(pipeline, usage, gathered=gathered).items():
            owner.cost_usd[line] = owner.cost_usd.get(line, 0.0) + usd
    for measurement in caller_measurements:
        pipeline = str(measurement.get("turn_pipeline") or measurement.get("pipeline") or "")
        if not pipeline:
            continue
        sid = str(measurement.get("call_sid"))
        if kept is not None and sid not in kept:
            comparison.population.dropped_caller_turns += 1
            continue
        arm = comparison.arm(pipeline)
        index = int(measurement.get("turn") or 0)
        segment = segment_of(index)
        arm.caller_turns += 1
        if measurement.get("error") == "no_reply":
            arm.caller_no_reply += 1
        if measurement.get("barge_in"):
            arm.caller_barge_ins += 1
        latency = _number(measurement.get("latency_ms"))
        if latency is not None:
            arm.sketch("caller", "caller_latency_ms", segment).add(latency)
            keys = slice_keys(call_by_sid.get(sid))
            keys.update(turn_slices.get((sid, pipeline, index)) or dict.fromkeys(TURN_DIMENSIONS, UNKNOWN))
            for dimension, key in keys.items():
                arm.slice(dimension, key).sketch("caller_latency_ms", segment).add(latency)
        silence = _number(measurement.get("silence_ms"))
        if silence is not None and (latency is not None or measurement.get("error") == "no_reply"):
            arm.sketch("caller", "caller_silence_ms", segment).add(silence)
    return comparison


async def build_comparison(
    store: StateStore,
    *,
    since: float | None,
    prices: Prices,
    caller_measurements: Sequence[dict[str, Any]] = (),
    turns_page: int = TURNS_PAGE,
    same_population: bool = False,
) -> Comparison:
    """Read the calls and turns recorded since ``since`` (epoch seconds) and compare the pipelines;
    ``same_population``: only the calls of the buckets both arms served (:mod:`router.report_population`)."""
    calls = await store.list_calls(limit=1_000_000, since=since)
    turns = await read_all_turns(store, since=since, page=turns_page)
    # Seconds of CPU for a busy day: on a worker thread, so the event loop keeps answering webhooks.
    return await asyncio.to_thread(
        compare_records,
        calls,
        turns,
        prices=prices,
        caller_measurements=caller_measurements,
        since=since,
        same_population=same_population,
    )


async def read_all_turns(
    store: StateStore, *, since: float | None, page: int = TURNS_PAGE
) -> list[dict[str, Any]]:
    """Every turn since ``since``, oldest first, read ``page`` at a time: one ``list_turns`` stops at its
    limit, which silently dropped the newest turns of a busy window from the report.

    ``list_turns`` is inclusive of ``since`` and orders equal times by insertion, so the next page starts at
    the last time read and skips the turns of that time already read (a page of one time only asks for more).
    """
    turns: list[dict[str, Any]] = []
    low, seen_at_low = since, 0
    while True:
        batch = await store.list_turns(since=low, limit=page + seen_at_low)
        turns.extend(batch[seen_at_low:])
        if len(batch) < page + seen_at_low:
            return turns
        low = float(batch[-1]["at"])
        seen_at_low = _count_at_end(batch, low)


def _count_at_end(turns: list[dict[str, Any]], at: float) -> int:
    """How many turns at the end of ``turns`` (sorted by time) have the time ``at``."""
    count = 0
    for turn in reversed(turns):
        if float(turn["at"]) != at:
            break
        count += 1
    return count


# Text table ------------------------------------------------------------------------------------------------
def _ms(value: Any) -> str:
    return "-" if value is None else f"{float(value):.0f}"


def failures_text(arm: ArmReport) -> str:
    """``"handshake_failed 503 ×4, lost 1006 ×1"``, most frequent first; empty when there were none."""
    ranked = sorted(arm.voicelive_failures.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{key} ×{count}" for key, count in ranked)


def window_text(c: Comparison) -> str:
    """The window with its date: a ``--since 2d`` shown as a bare time of day reads as today."""
    if c.since is None:
        return "all time"
    return "since " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(c.since))


# The server sees each arm's "end of speech" at a different point; said wherever server-side latency is shown.
SERVER_ANCHORS_NOTE = (
    "Server-side anchors differ by arm. realtime: from Voice Live's speech_stopped (after its VAD silence "
    "window) to the first reply audio sent to Twilio (response_ms) and to its first mark echo (heard_ms). "
    "legacy: from the <Gather> result reaching the server (after Twilio's end-of-speech timeout and its own "
    "recognition, which are not counted) to the TwiML answer (response_ms); Twilio's fetch and playback of "
    "the audio are not observable, so legacy has no heard_ms. Caller-side rows, when present, measure both "
    "arms from the same anchor."
)


def render_table(c: Comparison) -> str:
    """A plain-text table for the terminal: one block per metric, one row per pipeline and segment."""
    lines: list[str] = []
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(c.generated_at))
    lines.append(
        f"Pipeline comparison ({window_text(c)}, generated {when}; percentiles ±{c.relative_accuracy:.0%})"
    )
    lines.append("")
    # Barge-ins seen by the server (interrupted turns) and by the caller simulator are the same events seen
    # from two ends: side by side, never added up.
    lines.append(c.population.describe(sum(arm.calls for arm in c.arms.values())))
    lines.append("")
    # Guardrails next to the outcomes: session reconnects and renewals, moves to legacy Twilio took or refused.
    header = (
        f"{'pipeline':<9} {'calls':>5} {'done':>5} {'turns':>5} {'err%':>6} {'moved':>5} {'barge':>5} "
        f"{'c.barge':>7} {'$/call':>8} {'reconn':>6} {'renew':>5} {'mv.ok':>5} {'mv.fail':>7} {'gap.t':>5} {'f.int':>7} {'quiet':>5}"
    )
    lines.append(header)
    # gap.t: turns whose reply went silent for 100 ms or more in mid-reply (Twilio had played all it had).
    # f.int: barge-ins with no words in them (noise taken for speech) / barge-ins whose words are known.
    # quiet: calls the agent ended because the caller stayed silent (its re-prompts went unanswered).
    for name in sorted(c.arms):
        arm = c.arms[name]
        lines.append(
            f"{name:<9} {arm.calls:>5} {arm.completed_calls:>5} {arm.turns:>5} "
            f"{100 * arm.error_rate:>5.1f}% {arm.moved_to_legacy:>5} {arm.barge_ins:>5} {arm.caller_barge_ins:>7} "
            f"{arm.cost_per_call_usd:>8.4f} {arm.reconnects:>6} {arm.renewals:>5} {arm.moves_ok:>5} "
            f"{arm.moves_failed:>7} {arm.gap_turns:>5} {f'{arm.false_interrupts}/{arm.judged_barge_ins}':>7} {arm.silence_hang_ups:>5}"
        )
    for name in sorted(c.arms):
        if text := failures_text(c.arms[name]):
            lines.append(f"Voice Live failures on {name} calls (close code or HTTP status): {text}")
    lines.append("")
    metrics: list[tuple[str, str]] = [
        ("caller", "caller_latency_ms"),
        ("caller", "caller_silence_ms"),
        ("stages", "response_ms"),
        ("stages", "heard_ms"),
    ]
    extra = sorted({m for arm in c.arms.values() for m in arm.stages} - {"response_ms", "heard_ms"})
    metrics += [("stages", m) for m in extra]
    row = f"  {'pipeline':<9} {'segment':<9} {'n':>5} {'p50':>7} {'p90':>7} {'p95':>7} {'p99':>7} {'max':>7}"
    for group, metric in metrics:
        rows: list[str] = []
        for name in sorted(c.arms):
            arm = c.arms[name]
            segments = (arm.stages if group == "stages" else arm.caller).get(metric, {})
            for segment in SEGMENTS:
                sketch = segments.get(segment)
                if sketch is None or not sketch.count:
                    continue
                s = sketch.summary()
                rows.append(
                    f"  {name:<9} {segment:<9} {s['count']:>5} {_ms(s['p50']):>7} {_ms(s['p90']):>7} "
                    f"{_ms(s['p95']):>7} {_ms(s['p99']):>7} {_ms(s['max']):>7}"
                )
        if rows:
            lines.append(f"{metric} (ms)")
            lines.append(row)
            lines.extend(rows)
    lines.extend(_slice_table(c))
    if any(arm.stages.get("response_ms") for arm in c.arms.values()):
        lines.append("")
        lines.extend(textwrap.wrap(SERVER_ANCHORS_NOTE, width=110))
    return "\n".join(lines) + "\n"


def _slice_table(c: Comparison) -> list[str]:
    """One block per slice dimension: outcomes, and p50/p95 of the caller turns' latencies (ms)."""
    slices = {name: arm.slices for name, arm in c.arms.items()}
    lines: list[str] = []
    for dimension in SLICE_DIMENSIONS:
        rows = slice_rows(slices, dimension)
        if not rows:
            continue
        lines.append("")
        lines.append(f"slices {DIMENSION_TITLES[dimension]}; latency of caller turns 1+ (ms)")
        lines.append(
            f"  {'pipeline':<9} {'slice':<18} {'calls':>5} {'turns':>5} {'err%':>6} {'fb%':>6} {'n':>5} "
            f"{'rsp50':>6} {'rsp95':>6} {'hrd50':>6} {'hrd95':>6} {'c.n':>5} {'clr50':>6} {'clr95':>6}"
        )
        for pipeline, value, stats in rows:
            reply, heard, caller = (
                stats.overall(metric, exclude=SLICE_LATENCY_EXCLUDE)
                for metric in ("response_ms", "heard_ms", "caller_latency_ms")
            )
            lines.append(
                f"  {pipeline:<9} {value:<18} {stats.calls:>5} {stats.turns:>5} {100 * stats.error_rate:>5.1f}% "
                f"{100 * stats.fallback_rate:>5.1f}% {reply.count:>5} {_ms(reply.quantile(0.5)):>6} "
                f"{_ms(reply.quantile(0.95)):>6} {_ms(heard.quantile(0.5)):>6} {_ms(heard.quantile(0.95)):>6} "
                f"{caller.count:>5} {_ms(caller.quantile(0.5)):>6} {_ms(caller.quantile(0.95)):>6}"
            )
    return lines
