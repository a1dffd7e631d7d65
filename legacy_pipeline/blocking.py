"""Run a blocking SDK call off the event loop with a hard time limit.

``asyncio.to_thread`` is fine for calls the SDK itself bounds (synthesis, with its timeouts set). The
Speech SDK's ``recognize_once().get()`` has no such bound: a silent service blocks it indefinitely. Here
the call runs in its own daemon thread, so when the limit passes the turn moves on and a stuck thread can
neither hold the shared executor nor block interpreter exit.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def run_blocking(fn: Callable[[], T], *, timeout_s: float, name: str = "blocking-sdk-call") -> T:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result = fn()
        except BaseException as exc:
            loop.call_soon_threadsafe(deliver, None, exc)
        else:
            loop.call_soon_threadsafe(deliver, result, None)

    threading.Thread(target=work, name=name, daemon=True).start()
    return await asyncio.wait_for(future, timeout_s)
