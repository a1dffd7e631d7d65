"""Which pipeline one call goes to: a pure function of the rollout, the caller and the breaker state.

Evaluation order, first match wins (LaunchDarkly-style: switches, then individual targets, then the
percentage fallthrough):

1. mode ``legacy_only``      → legacy,   ``kill_switch``
2. mode ``realtime_only``    → realtime, ``forced_realtime`` (operator force; the breaker does not gate it)
3. caller on the deny list   → legacy,   ``deny_list``
4. breaker OPEN/FORCED_OPEN  → legacy,   ``breaker_open``
5. caller on the allow list  → realtime, ``allow_list``
6. sticky bucket             → realtime ``rollout_in`` / legacy ``rollout_out``

The deny list outranks the breaker only in the sense that both send the call to legacy; the reason
names the operator's rule first. The allow list comes after the breaker because an open breaker means
realtime is broken for everyone, test numbers included.

When the breaker is HALF_OPEN, realtime decisions from steps 5 and 6 come back with ``trial=True``:
the router must take a trial permit (``CircuitBreaker.try_acquire_trial()``) and route to legacy with
reason ``breaker_half_open`` if it is refused. ``forced_realtime`` is never a trial.

Three more legacy reasons come from the router, outside this pure function (``router/webhooks.py``):
``store_unavailable`` (no rollout config or breaker state to decide with), ``breaker_conflict`` (the breaker
state could not be settled: its compare-and-set kept losing) and ``realtime_full`` (this worker already
serves its limit of realtime calls; checked before the trial permit).
"""

from __future__ import annotations

from dataclasses import dataclass

from flags.breaker_state import BreakerState
from flags.bucketing import BUCKETS, bucket
from flags.rollout import Mode, RolloutConfig, Stickiness
from router.records import Pipeline

# ``From`` values that identify nobody: withheld caller ID must not make every anonymous caller share
# one bucket (and so one pipeline), so those calls are keyed by CallSid instead. Twilio presents
# withheld numbers as words or as the pseudo-number +266696687 ("ANONYMOUS" on a keypad).
_ANONYMOUS_CALLERS = frozenset(
    {"", "anonymous", "restricted", "unknown", "private", "unavailable", "blocked", "+266696687", "266696687"}
)

_OPEN_STATES = frozenset({BreakerState.OPEN, BreakerState.FORCED_OPEN})


@dataclass(frozen=True, slots=True)
class Decision:
    pipeline: Pipeline
    reason: str
    bucket: int | None  # the caller's bucket (0..9999) when the percentage decided, else None
    percent: float  # the rollout percent in force when deciding
    trial: bool = False  # realtime while the breaker is half-open: needs a trial permit


def normalize_caller(caller: str) -> str:
    """``From`` without whitespace (``"+1 415 555 0100"`` → ``"+14155550100"``)."""
    return "".join(caller.split())


def is_anonymous(caller: str) -> bool:
    """True when the (normalised) ``From`` does not identify a caller."""
    return caller.lower() in _ANONYMOUS_CALLERS


def sticky_key(config: RolloutConfig, *, caller: str, call_sid: str) -> str:
    """What the bucket is computed from: the caller's number, or the CallSid when per-call or anonymous."""
    return _key(config, normalize_caller(caller), call_sid)


def _key(config: RolloutConfig, number: str, call_sid: str) -> str:
    if config.stickiness is Stickiness.FROM and not is_anonymous(number):
        return number
    return call_sid


def decide(config: RolloutConfig, *, caller: str, call_sid: str, breaker_state: BreakerState) -> Decision:
    """Route one call. Pure and synchronous: the router calls it on the webhook's hot path."""
    percent = config.percent
    if config.mode is Mode.LEGACY_ONLY:
        return Decision(Pipeline.LEGACY, "kill_switch", None, percent)
    if config.mode is Mode.REALTIME_ONLY:
        return Decision(Pipeline.REALTIME, "forced_realtime", None, percent)
    number = normalize_caller(caller)
    if number in config.deny:
        return Decision(Pipeline.LEGACY, "deny_list", None, percent)
    if breaker_state in _OPEN_STATES:
        return Decision(Pipeline.LEGACY, "breaker_open", None, percent)
    trial = breaker_state is BreakerState.HALF_OPEN
    if number in config.allow:
        return Decision(Pipeline.REALTIME, "allow_list", None, percent, trial)
    value = bucket(config.salt, _key(config, number, call_sid), BUCKETS)
    if value < config.percent_bp:
        return Decision(Pipeline.REALTIME, "rollout_in", value, percent, trial)
    return Decision(Pipeline.LEGACY, "rollout_out", value, percent)
