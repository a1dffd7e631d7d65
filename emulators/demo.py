"""``make demo``: the whole system end to end on one machine, offline, with no credentials.

What it does, with a progress display:

1. starts every cloud service as an emulator (the local profile, ``emulators.local_profile``) with latency
   profiles taken from published figures, and the router itself (``router.app.create_app``) on a real port;
2. ramps the realtime rollout 0 → 25 → 50 % through the admin API, placing concurrent calls from simulated
   Twilio callers (:class:`emulators.twilio.caller.TwilioCallSimulator`) at each step;
3. midway through the 50 % step, takes Voice Live down through its emulator's fault control: new sessions
   cannot connect and live ones lose their socket. The breaker opens, new calls go to legacy and calls in
   flight are moved to legacy mid-call — nobody is dropped;
4. restores Voice Live and waits for the breaker to close again on its own (half-open trials);
5. prints the comparison table and writes the HTML report.

The agent has a tool (``check_availability``, served by :mod:`emulators.tool_backend`): on both pipelines the
model asks for it on the caller's first question and reads its answer back, so the report's ``tools`` slice
shows what a tool round costs each pipeline.

``run_demo(DemoConfig(...))`` is the scenario as a function (the tests run it time-compressed and check its
invariants); ``python -m emulators.demo`` runs it at real speed (under three minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml
from pydantic import SecretStr

from emulators.local_profile import LOCAL_ADMIN_TOKEN, Stoppable, start_local_services
from emulators.runner import ServerThread, free_port
from emulators.tool_backend import ToolBackendEmulator
from emulators.twilio.caller import CallResult, TwilioCallSimulator
from emulators.twilio.rest import TwilioRestEmulator
from emulators.twilio.script import BargeIn, CallScript, Pause, Say, Step, fixture_utterances
from router.comparison import Comparison, Prices, build_comparison, render_table
from router.report_html import render_html
from router.server_options import uvicorn_options
from router.settings import DEFAULT_PROFILE, Settings
from router.store.factory import open_store

log = logging.getLogger("emulators.demo")

# Latency profiles of the emulated services, from published figures (shared/reference/pain-points.md D.2).
# Voice Live first audio: GPT-4o answers audio "in 320 milliseconds on average" (OpenAI's GPT-4o launch
# figure, as quoted by https://dev.to/uditjain_100/the-320-millisecond-conversation-8h3 and
# https://www.centerconsulting.com/ai-library/facts/gpt-4o-responds-to-audio-in-232-milliseconds).
VOICELIVE_FIRST_AUDIO_MS = 320
# Legacy LLM time to first token and per-token time. LiveKit's cascaded agent measured TTFA p50 1.20 s of which
# end-of-utterance detection was 48 % (https://pypi.org/project/apresvous), leaving ~0.6 s for LLM + TTS; we
# give ~0.35 s of that to the LLM's first token and stream ~100 tokens/s [inference from that split].
OPENAI_FIRST_TOKEN_S = 0.35
OPENAI_TOKEN_DELAY_S = 0.01
# Azure TTS first audio chunk: the remaining ~0.25 s of the same 0.6 s budget [inference, as above].
TTS_FIRST_CHUNK_S = 0.25
# Twilio <Gather speechTimeout="auto">: the pause Twilio waits for is not tunable and not published
# (https://cloud.tencent.com/developer/ask/sof/1281892, a mirror of Stack Overflow 55932038); we assume 1 s.
GATHER_AUTO_END_OF_SPEECH_MS = 1000
PLAY_MARGIN_S = 2.0  # fetching and starting the reply's <Play> after the turn's TwiML is answered

# The business's booking API behind the agent's tool: no published figure; a quick internal API [assumption].
TOOL_BACKEND_DELAY_S = 0.15
CHECK_TUESDAY = {"tool_calls": [{"name": "check_availability", "arguments": {"day": "Tuesday"}}]}
# The realtime agent, per Voice Live session: the tool on the first question, its answer read back, then the
# booking. The greeting and the silence prompts are the words the bridge asks for (``follow_say_exactly``).
DEMO_VOICELIVE_REPLIES: tuple[Any, ...] = (
    CHECK_TUESDAY,
    "Let me look. Tuesday has these free slots: {tool_output}. Which one suits you?",
    "All set. You're booked for Tuesday at ten. Is there anything else I can help with?",
)

OUTAGE_FAULTS: dict[str, Any] = {
    # New sessions are refused (503 on the upgrade: the service answering but unavailable, as in a regional
    # incident; ``drop_connections`` is the harder variant, a TCP reset with no answer at all).
    "reject_handshake_status": 503,
    "close_after_deltas": 1,  # live sessions lose their socket during their next reply (mid-call failure)
    "close_abruptly": True,
}


@dataclass
class DemoConfig:
    time_scale: float = 1.0  # caller-side time compression (1 = real time)
    calls_at_0: int = 6
    calls_at_25: int = 8
    calls_at_50: int = 20
    calls_after_recovery: int = 6
    turns_per_call: int = 3
    ramp_spread_s: float = 10.0  # a step's calls arrive spread over this many (wall) seconds
    outage_after_s: float = 6.0  # into the 50 % step (wall seconds)
    outage_length_s: float = 16.0
    breaker_wait_open_s: float = 12.0
    breaker_window_s: int = 30  # short, so the outage's failures are not diluted by the calls before it
    breaker_close_timeout_s: float = 90.0
    silence_limit_ms: float = 9000.0  # no caller may hear dead air longer than this
    # After the recovery, one caller per pipeline asks one question and then says nothing: legacy ends the
    # call after its empty turns, realtime re-prompts after this many (server) seconds, says goodbye and
    # hangs up.
    silent_callers: bool = True
    silence_reprompt_s: float = 5.0
    output_dir: Path | None = None  # where the HTML report and state go (default: a temp dir)
    progress: bool = True

    @classmethod
    def fast(cls) -> DemoConfig:
        """Compressed: the same scenario in well under a minute (used by tests/demo)."""
        return cls(
            time_scale=0.25,
            calls_at_0=3,
            calls_at_25=4,
            calls_at_50=16,
            calls_after_recovery=6,
            turns_per_call=2,
            ramp_spread_s=2.0,
            outage_after_s=1.5,
            outage_length_s=4.0,
            breaker_wait_open_s=2.0,
            breaker_window_s=10,
            breaker_close_timeout_s=40.0,
            silence_reprompt_s=2.0,
            progress=False,
        )


@dataclass
class DemoReport:
    results: list[CallResult]
    comparison: Comparison
    breaker_states: list[tuple[float, str]]  # (seconds since start, state) as observed by polling
    breaker_transitions: list[dict[str, Any]]  # audit entries of breaker transitions
    html_path: Path
    table: str
    phases: dict[str, list[str]] = field(default_factory=dict)  # phase → call SIDs
    silent_calls: list[str] = field(default_factory=list)  # the scripted quiet callers' SIDs
    outage_window: tuple[float, float] = (0.0, 0.0)
    elapsed_s: float = 0.0


class Progress:
    """One status line, rewritten in place on a terminal; plain lines otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        if not self.enabled:
            return
        stamp = f"[{time.monotonic() - self.started:6.1f}s]"
        if self.tty:
            sys.stderr.write(f"\r\x1b[2K{stamp} {text}\n")
        else:
            sys.stderr.write(f"{stamp} {text}\n")
        sys.stderr.flush()

    def status(self, text: str) -> None:
        if self.enabled and self.tty:
            sys.stderr.write(f"\r\x1b[2K  {text}")
            sys.stderr.flush()


def demo_model(messages: Any) -> Any:
    """The legacy agent (OpenAI emulator policy): the tool on each caller's first question, its answer read
    back; otherwise the emulator's default reply."""
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        try:
            slots = orjson.loads(last.get("content") or "")["free_slots"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return "I couldn't check the calendar just now. Could you tell me another day?"
        return f"Let me look. Tuesday has free slots at {', '.join(slots)}. Which one suits you?"
    if sum(1 for m in messages if m.get("role") == "user") == 1:
        return CHECK_TUESDAY
    return None


def write_demo_profile(directory: Path, tool_url: str, *, silence_reprompt_s: float = 10.0) -> Path:
    """The default agent with the ``check_availability`` tool at ``tool_url``, re-prompting a quiet
    realtime caller after ``silence_reprompt_s``."""
    profile = yaml.safe_load(DEFAULT_PROFILE.read_text(encoding="utf-8"))
    profile.setdefault("silence", {})["reprompt_after_seconds"] = silence_reprompt_s
    profile["tools"] = [
        {
            "name": "check_availability",
            "description": "Free appointment slots on a day of the week",
            "parameters": {
                "type": "object",
                "properties": {"day": {"type": "string", "description": "a day of the week"}},
                "required": ["day"],
            },
            "url": tool_url,
            "timeout_seconds": 2.0,
        }
    ]
    path = directory / "demo-agent.yaml"
    path.write_text(yaml.safe_dump(profile, sort_keys=False), encoding="utf-8")
    return path


def demo_settings(
    config: DemoConfig, *, state_dir: Path, port: int, agent_profile: Path = DEFAULT_PROFILE
) -> Settings:
    return Settings(
        agent_profile=agent_profile,
        public_base_url=f"http://127.0.0.1:{port}",
        state_url=f"sqlite:///{state_dir / 'demo-state.db'}",
        stream_token_secret=SecretStr("demo-stream-token-secret"),
        caller_hash_key=SecretStr("demo-caller-hash-key"),
        rollout_percent=0.0,
        breaker_window_seconds=config.breaker_window_s,
        breaker_minimum_calls=4,
        breaker_wait_open_seconds=config.breaker_wait_open_s,
        breaker_half_open_calls=2,
        breaker_consecutive_connect_failures=3,
        realtime_open_timeout_seconds=1.5,
        config_cache_seconds=0.0,
        legacy_turn_deadline_seconds=legacy_turn_deadline(config),
    )


def legacy_turn_deadline(config: DemoConfig) -> float:
    """The legacy turn deadline that keeps the demo's dead-air promise by construction, not by a fast box.

    A caller's silence in a legacy turn is Twilio's end-of-speech pause, the turn (cut at its deadline, after
    which the cached apology answers) and the ``<Play>`` fetch. With the service default (10 s) a turn slowed
    by a busy machine could run past the 9 s limit without failing: the deadline leaves 2 s for the fetch.
    """
    return (config.silence_limit_ms - GATHER_AUTO_END_OF_SPEECH_MS) / 1000.0 - PLAY_MARGIN_S


SILENT_PAUSE_MS = 120_000  # caller time: longer than either pipeline waits before ending a quiet call


def silent_script(index: int) -> CallScript:
    """A caller who asks one question and then says nothing more (an abandoned line): the agent checks on
    them and ends the call (legacy after ``legacy.max_empty_turns`` empty turns, realtime after its
    ``silence`` re-prompts), so the caller never hangs up."""
    utterances = fixture_utterances()
    steps: list[Step] = [Say(utterances[index % len(utterances)]), *[Pause(SILENT_PAUSE_MS)] * 4]
    return CallScript(
        steps=steps, from_=f"+1555{index:07d}", label=f"silent-{index}", tags={"caller": "silent"}
    )


def _scripts(count: int, turns: int, *, offset: int) -> list[CallScript]:
    utterances = fixture_utterances()
    scripts = []
    for n in range(count):
        index = offset + n
        steps: list[Step] = [Say(utterances[(index + t) % len(utterances)]) for t in range(turns)]
        if index % 4 == 3 and turns >= 2:  # every fourth caller talks over the bot's first reply
            steps[1] = BargeIn(utterances[(index + 1) % len(utterances)], after_ms=700)
        scripts.append(CallScript(steps=list(steps), from_=f"+1555{index:07d}", label=f"call-{index}"))
    return scripts


class _Stack:
    """The router and every emulator, started; ``close()`` stops them in reverse order."""

    def __init__(self, config: DemoConfig, state_dir: Path) -> None:
        port = free_port()
        self.tools = ToolBackendEmulator().start()
        self.tools.set_faults(delay_s=TOOL_BACKEND_DELAY_S)
        log.warning("DEMO: the agent's tool backend is an EMULATOR at %s", self.tools.url)
        try:
            profile = write_demo_profile(
                state_dir,
                self.tools.tool_url("check_availability"),
                silence_reprompt_s=config.silence_reprompt_s,
            )
            base = demo_settings(config, state_dir=state_dir, port=port, agent_profile=profile)
            self.settings, services = start_local_services(
                base, host="127.0.0.1", port=port, var_dir=state_dir
            )
        except BaseException:
            self.tools.stop()
            raise
        self.services: list[Stoppable] = [self.tools, *services]
        try:
            self._start_router(port)
        except BaseException:
            self.close()
            raise

    def _start_router(self, port: int) -> None:
        self.rest = next(s for s in self.services if isinstance(s, TwilioRestEmulator))
        self.voicelive_url = self.settings.azure_voicelive_endpoint
        self._tune_latencies()
        from router.app import create_app

        prices = Prices.load()
        store_holder: dict[str, Any] = {}

        async def comparison(since: float | None, *, same_population: bool = False) -> dict[str, Any]:
            # Runs on the router's loop; its own store handle, opened there.
            store = store_holder.get("store")
            if store is None:
                store = open_store(self.settings.state_url)
                await store.open()
                store_holder["store"] = store
            built = await build_comparison(store, since=since, prices=prices, same_population=same_population)
            return built.to_dict()

        self.router = ServerThread(
            create_app(self.settings, comparison=comparison), port=port, **uvicorn_options(self.settings)
        ).start()
        self.url = self.router.http_url

    def _tune_latencies(self) -> None:
        for service in self.services:
            name = type(service).__name__
            if name == "VoiceLiveEmulator":
                service.faults.update(first_audio_ms=VOICELIVE_FIRST_AUDIO_MS)  # type: ignore[attr-defined]
                service.config.replies = DEMO_VOICELIVE_REPLIES  # type: ignore[attr-defined]
                service.config.follow_say_exactly = True  # type: ignore[attr-defined]
            elif name == "OpenAIEmulator":
                service.knobs.update(  # type: ignore[attr-defined]
                    first_token_delay_s=OPENAI_FIRST_TOKEN_S, token_delay_s=OPENAI_TOKEN_DELAY_S
                )
                service.replies.set_policy(demo_model)  # type: ignore[attr-defined]
            elif name == "AzureSpeechEmulator":
                service.set_faults(tts_first_chunk_delay_s=TTS_FIRST_CHUNK_S)  # type: ignore[attr-defined]

    def close(self) -> None:
        router: ServerThread | None = getattr(self, "router", None)
        if router is not None:
            router.stop()
        services: list[Stoppable] = list(self.services)
        for service in reversed(services):
            with contextlib.suppress(Exception):
                service.stop()


async def run_demo(config: DemoConfig) -> DemoReport:
    """The demo scenario; returns everything needed to check its invariants."""
    progress = Progress(config.progress)
    started = time.monotonic()
    with contextlib.ExitStack() as cleanup:
        if config.output_dir is None:
            state_dir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="voice-router-demo-")))
            report_dir = Path(tempfile.gettempdir())
        else:
            state_dir = report_dir = config.output_dir
            state_dir.mkdir(parents=True, exist_ok=True)
            for stale in state_dir.glob("demo-state.db*"):  # every run starts from a fresh store
                stale.unlink()
        progress.say(
            "starting the emulators (Voice Live, OpenAI, Azure Speech, Azurite, Twilio) and the router…"
        )
        stack = await asyncio.to_thread(_Stack, config, state_dir)
        cleanup.callback(stack.close)
        progress.say(f"router at {stack.url}; admin token {LOCAL_ADMIN_TOKEN!r}")
        return await _scenario(config, stack, progress, started, report_dir)
    raise AssertionError("unreachable")  # pragma: no cover


async def _scenario(
    config: DemoConfig, stack: _Stack, progress: Progress, started: float, report_dir: Path
) -> DemoReport:
    admin = httpx.AsyncClient(
        base_url=stack.url, headers={"Authorization": f"Bearer {LOCAL_ADMIN_TOKEN}"}, timeout=15.0
    )
    control = httpx.AsyncClient(timeout=10.0)
    breaker_states: list[tuple[float, str]] = []
    since = time.time() - 1.0
    phases: dict[str, list[str]] = {}
    silent_calls: list[str] = []
    offset = 0
    outage = (0.0, 0.0)
    stop_polling = asyncio.Event()

    async def poll_breaker() -> None:
        while not stop_polling.is_set():
            with contextlib.suppress(httpx.HTTPError):
                state = (await admin.get("/admin/breaker")).json()["state"]
                if not breaker_states or breaker_states[-1][1] != state:
                    breaker_states.append((time.monotonic() - started, state))
                    progress.say(f"breaker → {state}")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop_polling.wait(), 0.2)

    async def set_rollout(percent: float) -> None:
        response = await admin.put(
            "/admin/rollout", json={"percent": percent, "reason": "demo ramp", "actor": "demo"}
        )
        response.raise_for_status()
        progress.say(f"rollout set to {percent:g}% realtime")

    async def pin(number: str, pipeline: str) -> None:
        listed = "allow" if pipeline == "realtime" else "deny"
        body = {"op": "add", "number": number, "reason": f"demo: a test line on {pipeline}", "actor": "demo"}
        (await admin.post(f"/admin/rollout/{listed}", json=body)).raise_for_status()
        progress.say(f"{listed} list: {number} pinned to {pipeline}")

    waves: list[asyncio.Task[list[CallResult]]] = []

    async def step(name: str, count: int, spread_s: float, *, quiet: tuple[str, ...] = ()) -> None:
        """Start ``count`` calls arriving over ``spread_s`` seconds; returns once they have all arrived.
        ``quiet``: one more caller per pipeline named, who goes quiet after a question, their number pinned
        to that pipeline by the operators' allow (realtime) or deny (legacy) list, whatever the percentage.

        Steps overlap: the calls of one step are still talking when the next step's calls arrive.
        """
        nonlocal offset
        scripts = []
        for pipeline in quiet:
            scripts.append(silent_script(offset))
            offset += 1
            await pin(scripts[-1].from_, pipeline)
        scripts += _scripts(count, config.turns_per_call, offset=offset)
        offset += count
        count = len(scripts)
        progress.say(f"{name}: {count} calls arriving over {spread_s:g} s")
        stagger_ms = 1000.0 * spread_s / max(1, count) / config.time_scale  # place_calls scales it back

        async def placed() -> list[CallResult]:
            results = await sim.place_calls(scripts, stagger_ms=stagger_ms)
            phases[name] = [r.call_sid for r in results]
            silent_calls.extend(
                r.call_sid
                for r, script in zip(results, scripts, strict=True)
                if script.tags.get("caller") == "silent"
            )
            by_pipeline: dict[str, int] = {}
            for r in results:
                by_pipeline[r.pipeline] = by_pipeline.get(r.pipeline, 0) + 1
            moved = sum(1 for r in results if r.moved)
            progress.say(f"{name}: all {count} calls finished — {by_pipeline}, moved mid-call: {moved}")
            return results

        waves.append(asyncio.create_task(placed()))
        arrived = time.monotonic() + spread_s
        while time.monotonic() < arrived:
            progress.status(f"{len(sim._live)} calls live, {len(sim.results)} finished")
            await asyncio.sleep(min(0.5, max(0.0, arrived - time.monotonic())))

    async def inject_outage() -> None:
        nonlocal outage
        await asyncio.sleep(config.outage_after_s)
        begin = time.monotonic() - started
        response = await control.post(f"{stack.voicelive_url}/_emulator/faults", json=OUTAGE_FAULTS)
        response.raise_for_status()
        progress.say("Voice Live OUTAGE injected (new sessions refused with 503, live sockets cut)")
        await asyncio.sleep(config.outage_length_s)
        response = await control.post(f"{stack.voicelive_url}/_emulator/faults", json={"reset": True})
        response.raise_for_status()
        response = await control.post(
            f"{stack.voicelive_url}/_emulator/faults", json={"first_audio_ms": VOICELIVE_FIRST_AUDIO_MS}
        )
        response.raise_for_status()
        outage = (begin, time.monotonic() - started)
        progress.say("Voice Live restored")

    sim = TwilioCallSimulator(
        router_url=stack.url,
        public_base_url=stack.settings.public_base_url,
        auth_token=stack.settings.twilio_auth_token.get_secret_value(),
        account_sid=stack.settings.twilio_account_sid,
        rest=stack.rest,
        time_scale=config.time_scale,
        speech_timeout_auto_ms=GATHER_AUTO_END_OF_SPEECH_MS,
    )
    poller = asyncio.create_task(poll_breaker())
    try:
        async with sim:
            await set_rollout(0)
            await step("rollout 0%", config.calls_at_0, config.ramp_spread_s)
            await set_rollout(25)
            await step("rollout 25%", config.calls_at_25, config.ramp_spread_s)
            await set_rollout(50)
            # Calls keep arriving through the outage, so new ones meet it as well as those in flight.
            outage_task = asyncio.create_task(inject_outage())
            await step(
                "rollout 50% + outage", config.calls_at_50, config.outage_after_s + config.outage_length_s
            )
            await outage_task
            progress.say("waiting for the breaker to close on its own (half-open trials)…")
            deadline = time.monotonic() + config.breaker_close_timeout_s
            rounds = 0
            while time.monotonic() < deadline:
                if (await admin.get("/admin/breaker")).json()["state"] == "closed":
                    break
                rounds += 1
                await step(f"recovery {rounds}", config.calls_after_recovery, config.ramp_spread_s)
            if config.silent_callers:
                # After the outage, so that Voice Live's loss does not move the realtime one mid-silence.
                await step("quiet callers", 0, 0.0, quiet=("legacy", "realtime"))
            while not all(task.done() for task in waves):
                progress.status(f"{len(sim._live)} calls live, {len(sim.results)} finished")
                await asyncio.wait(waves, timeout=0.5)
            for task in waves:
                task.result()
    finally:
        stop_polling.set()
        await poller
    audit = (await admin.get("/admin/audit", params={"limit": 500})).json()
    transitions = [entry for entry in audit if str(entry.get("action", "")).startswith("breaker")]
    transitions.reverse()
    window_s = int(time.time() - since) + 2
    window_start = time.time() - window_s
    # The operator's report first (it also flushes the router's record batches to the store)…
    response = await admin.get("/admin/comparison", params={"since": f"{window_s}s"})
    response.raise_for_status()
    await admin.aclose()
    await control.aclose()
    # …then the same records read here with what the simulated callers measured, so each caller-side turn
    # lands in its call's slices (reason, breaker state, bucket) instead of "no_call_record".
    store = open_store(stack.settings.state_url)
    await store.open()
    try:
        comparison = await build_comparison(
            store,
            since=window_start,
            prices=Prices.load(),
            caller_measurements=sim.measurements(),
        )
    finally:
        await store.close()
    server_calls = {name: arm["calls"] for name, arm in response.json()["arms"].items()}
    if server_calls != {name: arm.calls for name, arm in comparison.arms.items()}:
        log.warning("the admin report and the store disagree on calls: %s", server_calls)
    table = render_table(comparison)
    html_path = report_dir / "voice-router-comparison.html"
    await asyncio.to_thread(html_path.write_text, render_html(comparison), "utf-8")
    return DemoReport(
        results=list(sim.results),
        comparison=comparison,
        breaker_states=breaker_states,
        breaker_transitions=transitions,
        html_path=html_path,
        table=table,
        phases=phases,
        silent_calls=silent_calls,
        outage_window=outage,
        elapsed_s=time.monotonic() - started,
    )


def summarize(report: DemoReport, config: DemoConfig) -> str:
    results = report.results
    answered = sum(1 for r in results if r.answered)
    by_caller = sum(1 for r in results if r.ended_by == "caller")
    silent = [r for r in results if r.call_sid in report.silent_calls]
    # The agent ends a quiet call: legacy with <Hangup> in its TwiML, realtime through the REST API.
    ended_by_agent = sum(1 for r in silent if r.ended_by in ("twiml_hangup", "api"))
    moved = [r for r in results if r.moved]
    worst = max((r.max_silence_ms for r in results), default=0.0)
    states = " → ".join(state for _, state in report.breaker_states)
    return "\n".join(
        [
            f"calls placed: {len(results)}, answered: {answered}, ended by the caller: {by_caller}",
            f"callers who went quiet: {len(silent)}, ended by the agent after its re-prompts: {ended_by_agent}",
            f"moved mid-call to legacy: {len(moved)} (all finished on legacy: "
            f"{all(r.final_mode == 'legacy' for r in moved)})",
            f"longest dead air heard by any caller: {worst:.0f} ms (limit {config.silence_limit_ms:.0f} ms)",
            f"breaker: {states}",
            f"elapsed: {report.elapsed_s:.1f} s",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="voice-router offline end-to-end demo")
    parser.add_argument("--fast", action="store_true", help="the time-compressed scenario (tests use it)")
    parser.add_argument("--output-dir", type=Path, default=Path("var/demo"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    config = DemoConfig.fast() if args.fast else DemoConfig()
    config.output_dir = args.output_dir
    config.progress = True
    report = asyncio.run(run_demo(config))
    print()
    print(report.table)
    print(summarize(report, config))
    print(f"HTML report: {report.html_path.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
