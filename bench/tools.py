"""Benchmark: what the router adds to an agent tool call, on top of the HTTP round trip itself.

The tool backend emulator runs in its own process at zero added latency. Each round alternates the same
POST made by ``ToolRunner.run`` (argument checks, the request body, the deadline, the bounded read, the
metric) and by a bare ``httpx.AsyncClient.post`` on the same kind of client, so the difference is the
runner's own cost. Sequential calls, then ``--concurrency`` at once (one model answer asking for several
tools, or several calls' tools at the same moment).

    python -m bench.tools [--calls 400] [--concurrency 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from emulators.runner import free_port
from router.agent_profile import AgentTool
from router.observability import Metrics
from router.tool_calls import ToolCall, ToolRunner

RESULTS = Path(__file__).resolve().parent / "results" / "tools.json"
ARGUMENTS = '{"day": "Tuesday"}'
DAY = {"type": "object", "properties": {"day": {"type": "string"}}, "required": ["day"]}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": round(percentile(values, 0.50), 3),
        "p99_ms": round(percentile(values, 0.99), 3),
        "mean_ms": round(statistics.fmean(values), 3),
    }


async def _wait_ready(url: str) -> None:
    deadline = time.monotonic() + 15.0
    async with httpx.AsyncClient() as client:
        while True:
            try:
                if (await client.get(f"{url}/_emulator/state")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the tool backend emulator did not start")
            await asyncio.sleep(0.1)


async def _bare(client: httpx.AsyncClient, url: str, n: int) -> float:
    body = orjson.dumps(
        {
            "tool": "check_availability",
            "call_id": f"c{n}",
            "call_sid": "CA1",
            "pipeline": "bench",
            "arguments": orjson.loads(ARGUMENTS),
        }
    )
    started = time.perf_counter()
    response = await client.post(url, content=body, headers={"content-type": "application/json"})
    response.raise_for_status()
    return (time.perf_counter() - started) * 1000.0


async def _ours(runner: ToolRunner, n: int) -> float:
    started = time.perf_counter()
    result = await runner.run(
        ToolCall(f"c{n}", "check_availability", ARGUMENTS), call_sid="CA1", pipeline="bench"
    )
    if not result.ok:
        raise RuntimeError(f"tool call failed: {result.error}")
    return (time.perf_counter() - started) * 1000.0


async def run(base: str, calls: int, concurrency: int, rounds: int) -> dict[str, Any]:
    await _wait_ready(base)
    url = f"{base}/tools/check_availability"
    tool = AgentTool(name="check_availability", url=url, parameters=DAY)  # its arguments are checked
    async with httpx.AsyncClient() as bare_client, httpx.AsyncClient() as tool_client:
        runner = ToolRunner([tool], tool_client, metrics=Metrics())
        for n in range(50):  # warm both clients' connections
            await _bare(bare_client, url, n)
            await _ours(runner, n)
        seq: dict[str, list[float]] = {"bare": [], "ours": []}
        par: dict[str, list[float]] = {"bare": [], "ours": []}
        for _ in range(rounds):
            for n in range(calls):  # alternate, so drift hits both alike
                seq["bare"].append(await _bare(bare_client, url, n))
                seq["ours"].append(await _ours(runner, n))
            for n in range(calls // concurrency):
                par["bare"].extend(
                    await asyncio.gather(*(_bare(bare_client, url, n * 100 + k) for k in range(concurrency)))
                )
                par["ours"].extend(
                    await asyncio.gather(*(_ours(runner, n * 100 + k) for k in range(concurrency)))
                )
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "sequential": {name: summary(values) for name, values in seq.items()},
        f"concurrent_{concurrency}": {name: summary(values) for name, values in par.items()},
        "ours_extra_p50_ms": {
            "sequential": round(percentile(seq["ours"], 0.5) - percentile(seq["bare"], 0.5), 3),
            "concurrent": round(percentile(par["ours"], 0.5) - percentile(par["bare"], 0.5), 3),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    port = free_port()
    backend = subprocess.Popen(  # its own process: the runner's cost is not mixed with the backend's
        [sys.executable, "-m", "emulators.tool_backend", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        result = asyncio.run(run(f"http://127.0.0.1:{port}", args.calls, args.concurrency, args.rounds))
    finally:
        backend.terminate()
        backend.wait(10)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
