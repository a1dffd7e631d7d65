"""How long one routing decision takes (target: ≤ 20 µs), and the breaker's per-call overhead.

Run: ``python -m bench.decision [--n 200000]``. Prints p50/p99/max µs per ``decide()`` over a mix of
callers, modes, lists and breaker states (each call timed on its own with ``perf_counter_ns``, so the
timer's own ~0.05-0.1 µs is included), the batch mean, and the in-memory breaker's ``current()`` and
``record()`` for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time

from flags.breaker import BreakerConfig, CircuitBreaker, Outcome
from flags.breaker_state import BreakerState
from flags.clock import FakeClock
from flags.decision import decide
from flags.memory_backend import InMemoryBreakerBackend
from flags.rollout import Mode, RolloutConfig, Stickiness


def _percentiles(samples_ns: list[int]) -> str:
    ordered = sorted(samples_ns)
    p50 = ordered[len(ordered) // 2] / 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1000
    return f"p50 {p50:.2f} µs  p99 {p99:.2f} µs  max {ordered[-1] / 1000:.1f} µs"


def bench_decide(n: int) -> None:
    rng = random.Random(1)
    numbers = [f"+1{rng.randrange(200, 999)} {rng.randrange(10**7):07d}" for _ in range(5_000)]
    allow = frozenset(n.replace(" ", "") for n in numbers[:50])
    deny = frozenset(n.replace(" ", "") for n in numbers[50:100])
    configs = [
        RolloutConfig(percent_bp=3_750, allow=allow, deny=deny),
        RolloutConfig(percent_bp=1_234, stickiness=Stickiness.CALL_SID, allow=allow, deny=deny),
        RolloutConfig(percent_bp=5_000, mode=Mode.LEGACY_ONLY),
    ]
    states = [*[BreakerState.CLOSED] * 8, BreakerState.HALF_OPEN, BreakerState.OPEN]
    callers = [*numbers, "anonymous", ""]
    cases = [
        (rng.choice(configs), rng.choice(callers), f"CA{i:032x}", rng.choice(states))
        for i in range(min(n, 50_000))
    ]
    for config, caller, call_sid, state in cases[:5_000]:  # warm up
        decide(config, caller=caller, call_sid=call_sid, breaker_state=state)

    samples: list[int] = []
    clock = time.perf_counter_ns
    for i in range(n):
        config, caller, call_sid, state = cases[i % len(cases)]
        start = clock()
        decide(config, caller=caller, call_sid=call_sid, breaker_state=state)
        samples.append(clock() - start)

    start = clock()
    for i in range(n):
        config, caller, call_sid, state = cases[i % len(cases)]
        decide(config, caller=caller, call_sid=call_sid, breaker_state=state)
    batch_mean = (clock() - start) / n / 1000
    print(f"decide() x {n}: {_percentiles(samples)}  batch mean {batch_mean:.2f} µs")
    print(f"  mean {statistics.fmean(samples) / 1000:.2f} µs; target ≤ 20 µs")


async def bench_breaker(n: int) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerConfig(), InMemoryBreakerBackend(), clock=clock)
    reads: list[int] = []
    records: list[int] = []
    outcomes = [Outcome.SUCCESS] * 9 + [Outcome.SLOW]
    for i in range(n):
        start = time.perf_counter_ns()
        await breaker.current()
        reads.append(time.perf_counter_ns() - start)
        start = time.perf_counter_ns()
        await breaker.record(outcomes[i % len(outcomes)])
        records.append(time.perf_counter_ns() - start)
        clock.advance(0.05)
    print(f"breaker.current() x {n} (in-memory backend): {_percentiles(reads)}")
    print(f"breaker.record()  x {n} (in-memory backend): {_percentiles(records)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200_000, help="decisions to time")
    parser.add_argument("--breaker-n", type=int, default=20_000, help="breaker reads/records to time")
    args = parser.parse_args()
    bench_decide(args.n)
    asyncio.run(bench_breaker(args.breaker_n))


if __name__ == "__main__":
    main()
