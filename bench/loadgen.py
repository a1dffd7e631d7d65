"""A small HTTP/1.1 load generator on raw asyncio streams (keep-alive, one request in flight per
connection), so the client costs far less CPU than the server it measures."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    elapsed_s: float = 0.0

    @property
    def completed(self) -> int:
        return len(self.latencies_ms)

    @property
    def rps(self) -> float:
        return self.completed / self.elapsed_s if self.elapsed_s else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
        return ordered[index]


RequestFactory = Callable[[int], bytes]
POOL_SIZE = 20_000


async def _open(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(host, port)


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


def build_post(host: str, port: int, path: str, body: bytes, headers: Sequence[tuple[str, str]]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def closed_loop(
    host: str, port: int, make_request: RequestFactory, *, connections: int, seconds: float
) -> LoadResult:
    """Each connection sends its next request as soon as the previous answer arrives.

    Requests come from a pool built before the clock starts (signing one costs the generator more than
    the bare endpoint costs the server), reused round-robin once the run outlasts the pool.
    """
    result = LoadResult()
    counter = 0
    pool = [make_request(index) for index in range(POOL_SIZE)]
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal counter
        reader, writer = await _open(host, port)
        try:
            while time.perf_counter() < deadline:
                counter += 1
                request = pool[counter % POOL_SIZE]
                started = time.perf_counter()
                try:
                    status = await _exchange(reader, writer, request)
                except (OSError, asyncio.IncompleteReadError):
                    result.errors += 1
                    writer.close()
                    reader, writer = await _open(host, port)
                    continue
                result.latencies_ms.append((time.perf_counter() - started) * 1000)
                result.statuses[status] = result.statuses.get(status, 0) + 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    result.elapsed_s = time.perf_counter() - started
    return result


async def open_loop(
    host: str, port: int, make_request: RequestFactory, *, rate: float, seconds: float, connections: int = 64
) -> LoadResult:
    """Requests at a fixed arrival rate (no coordinated omission: latency counts from the scheduled time).

    Every request is built (and signed) before the clock starts, and the generator's own garbage collector
    is off while it runs: a pause of the load generator would otherwise be counted as the server's latency.
    """
    result = LoadResult()
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await _open(host, port))
    total = int(rate * seconds)
    requests = [make_request(index) for index in range(total)]
    gc.collect()
    gc.disable()
    start = time.perf_counter()

    async def one(index: int) -> None:
        scheduled = start + index / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        reader, writer = await pool.get()
        try:
            status = await _exchange(reader, writer, requests[index])
        except (OSError, asyncio.IncompleteReadError):
            result.errors += 1
            writer.close()
            pool.put_nowait(await _open(host, port))
            return
        result.latencies_ms.append((time.perf_counter() - scheduled) * 1000)
        result.statuses[status] = result.statuses.get(status, 0) + 1
        pool.put_nowait((reader, writer))

    try:
        await asyncio.gather(*(one(i) for i in range(total)))
    finally:
        gc.enable()
    result.elapsed_s = time.perf_counter() - start
    while not pool.empty():
        pool.get_nowait()[1].close()
    return result
