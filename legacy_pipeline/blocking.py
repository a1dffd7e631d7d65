"""Run a blocking SDK call off the event loop with a hard time limit, on a bounded number of threads.

``asyncio.to_thread`` is fine for calls the SDK itself bounds (synthesis, with its timeouts set). The
Speech SDK's ``recognize_once().get()`` has no such bound: a silent service blocks it indefinitely. Here
the call runs in its own daemon thread, so when the limit passes the turn moves on and a stuck thread can
neither hold the shared executor nor block interpreter exit.

A thread the turn gave up on still runs until the SDK lets go, so :class:`ThreadSlots` counts threads,
not waiting turns: a slot is freed by the thread itself when it really ends. During an outage every turn
would otherwise leave one more blocked thread behind, without limit. ``on_abandon`` lets the caller ask
the SDK to let go sooner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import traceback
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger("legacy_pipeline.blocking")


class NoFreeThread(RuntimeError):
    """Every slot is held by a running (possibly abandoned) call; the new call was not started."""


class ThreadSlots:
    """At most ``limit`` threads at once; taken on the event loop, given back by the thread when it ends.

    Taking a slot waits briefly at most (:func:`run_blocking`'s ``slot_wait_s``): when all are held (in an
    outage, by threads still blocked in the SDK) the caller fails soon rather than queueing behind calls that
    may not return for a minute, while a burst just over the limit waits for the next slot to come free.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._in_use = 0
        self._lock = threading.Lock()  # held for an increment only: never blocks the loop for long

    @property
    def in_use(self) -> int:
        return self._in_use

    def try_acquire(self) -> bool:
        with self._lock:
            if self._in_use >= self.limit:
                return False
            self._in_use += 1
            return True

    def release(self) -> None:
        with self._lock:
            if self._in_use <= 0:
                raise RuntimeError("ThreadSlots released more often than acquired")
            self._in_use -= 1


SLOT_POLL_S = 0.02  # a slot comes free on another thread: looked for this often while waiting


async def _take_slot(slots: ThreadSlots, wait_s: float) -> float | None:
    """Take a slot, waiting up to ``wait_s``: the seconds waited, or None when none came free."""
    if slots.try_acquire():
        return 0.0
    loop = asyncio.get_running_loop()
    started = loop.time()
    while (waited := loop.time() - started) < wait_s:
        await asyncio.sleep(min(SLOT_POLL_S, wait_s - waited))
        if slots.try_acquire():
            return loop.time() - started
    return None


async def run_blocking(
    fn: Callable[[], T],
    *,
    timeout_s: float,
    name: str = "blocking-sdk-call",
    slots: ThreadSlots | None = None,
    slot_wait_s: float = 0.0,
    on_abandon: Callable[[], None] | None = None,
) -> T:
    """``fn()`` on a thread of its own, awaited for at most ``timeout_s``.

    With ``slots``, the thread holds one slot from before it starts until ``fn`` returns (even long after
    the caller stopped waiting); :class:`NoFreeThread` is raised, without starting a thread, when none comes
    free within ``slot_wait_s`` (that wait counts against ``timeout_s``).
    ``on_abandon`` is called when the caller stops waiting (timeout or cancellation) while ``fn`` is still
    running; it runs on the loop's default executor, never on the loop, and nothing waits for it.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def reply(result: T | None, error: BaseException | None) -> None:
        # The loop may be closed by the time an abandoned call ends; nobody is waiting for it then.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(deliver, result, error)

    returned = threading.Event()

    def work() -> None:
        try:
            result = fn()
        except BaseException as exc:
            returned.set()
            # The traceback keeps fn's frames, and with them what fn held: a Speech SDK recognizer takes
            # ~10 s to release after a failed recognition. Handed to the loop as is, the last reference
            # went with the exception and that release ran on the event loop, stalling every call.
            _release_frames(exc)
            reply(None, exc)
        else:
            returned.set()
            reply(result, None)
        finally:
            if slots is not None:
                slots.release()

    if slots is not None:
        waited = await _take_slot(slots, min(slot_wait_s, timeout_s))
        if waited is None:
            raise NoFreeThread(f"all {slots.limit} threads for {name} are busy")
        timeout_s -= waited
    try:
        threading.Thread(target=work, name=name, daemon=True).start()
    except BaseException:
        if slots is not None:
            slots.release()
        raise
    try:
        # Not wait_for: on Python 3.11 it returns the result of a call that ends as its caller is cancelled
        # (a turn's deadline), losing the cancellation, and the turn then ran on with no deadline at all.
        async with asyncio.timeout(timeout_s):
            return await future
    except BaseException:
        if on_abandon is not None and not returned.is_set():
            _abandon(loop, on_abandon, name)
        raise


def _abandon(loop: asyncio.AbstractEventLoop, on_abandon: Callable[[], None], name: str) -> None:
    """Run ``on_abandon`` off the loop: it calls into the SDK, which may take its locks."""

    def logged(done: asyncio.Future[None]) -> None:
        if not done.cancelled() and done.exception() is not None:
            log.warning("stopping an abandoned %s failed", name, exc_info=done.exception())

    try:
        loop.run_in_executor(None, on_abandon).add_done_callback(logged)
    except RuntimeError:  # the loop or its executor is shutting down: the SDK's own limit still applies
        log.warning("could not stop an abandoned %s: the event loop is closing", name)


def _release_frames(exc: BaseException) -> None:
    """Drop the locals of the finished frames in ``exc``'s traceback (and its chained exceptions')."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)  # frames still running are skipped
        pending += [current.__cause__, current.__context__]
