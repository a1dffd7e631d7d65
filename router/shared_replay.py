"""A Twilio retry that lands on another worker gets the first attempt's answer, through the state store.

:class:`~router.webhook_replay.WebhookReplay` keeps answers in each worker's memory, so without this a retry
that a load balancer sends to another worker (or replica on the same Redis or SQLite file) runs the legacy
turn again: the LLM is asked twice and the turn and its history are recorded twice. ``SharedReplay`` sits
behind that per-worker cache (a retry on the same worker never reaches the store):

* the first attempt claims the request in the store before it starts (one atomic set-if-absent with an
  expiry) and stores its answer (status, headers, body) in place of the claim when it is done;
* a retry that finds the answer replays it; one that finds only a live claim polls until the answer is
  there, the claim is gone, or ``wait_s`` has passed, and then does the work itself.

The claim is a short lease (``claim_ttl_s``) that the first attempt renews every third of it while it works,
so a retry takes over only from an attempt that evidently died: it raised or was cancelled (its claim is
given back at once), or its worker died (nothing renews the claim, which expires within one lease), or it
sent no answer in ``wait_s``. The waiting counts against the retry's own deadline: behind a worker that died
mid-turn a retry loses at most one lease (seconds) and still has time for the turn; behind an attempt that
is alive it gets its answer.

The store must never fail a turn: when a claim or an answer cannot be read or written within
``op_timeout_s``, the request is handled as without this (per worker), the error is counted
(``voice_router_store_errors_total{operation="webhook_claim"}``, ``…"webhook_answer"``) and logged once per
outage, and the store is left alone for ``retry_after_s``. Only the legacy routes use it: ``POST
/twilio/voice`` keeps its answers in memory only, off the store (its throughput is the webhook benchmark's).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from starlette.responses import Response

from router.observability import Metrics
from router.store.base import StateStore, StoreUnavailable, WebhookClaim

log = logging.getLogger("router.shared_replay")

T = TypeVar("T")


def encode_answer(response: Response) -> dict[str, Any]:
    """What a retry needs to send the same answer: status, headers (not the length: recomputed), body."""
    headers = [
        [name.decode("latin-1"), value.decode("latin-1")]
        for name, value in response.raw_headers
        if name != b"content-length"
    ]
    body = base64.b64encode(bytes(response.body)).decode("ascii")
    return {"status": response.status_code, "headers": headers, "body": body}


def decode_answer(answer: dict[str, Any]) -> Response:
    body = base64.b64decode(answer["body"])
    response = Response(body, status_code=int(answer["status"]))
    response.raw_headers = [
        *((str(name).encode("latin-1"), str(value).encode("latin-1")) for name, value in answer["headers"]),
        (b"content-length", str(len(body)).encode("latin-1")),
    ]
    return response


class SharedReplay:
    """First answers shared through ``store`` by ``(CallSid, token)``; see the module doc."""

    def __init__(
        self,
        store: StateStore,
        *,
        claim_ttl_s: float,
        wait_s: float,
        answer_ttl_s: float = 20.0,
        poll_s: float = 0.1,
        op_timeout_s: float = 1.0,
        retry_after_s: float = 5.0,
        metrics: Metrics | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._claim_ttl_s = claim_ttl_s
        self._wait_s = wait_s
        self._answer_ttl_s = answer_ttl_s
        self._poll_s = poll_s
        self._op_timeout_s = op_timeout_s
        self._retry_after_s = retry_after_s
        self._metrics = metrics
        self._monotonic = monotonic
        self._skip_until = float("-inf")  # the store failed: per-worker answers only until then
        self._down = False
        self._releases: set[asyncio.Task[None]] = set()

    async def answer(
        self, route: str, call_sid: str, token: str, handle: Callable[[], Awaitable[Response]]
    ) -> Response:
        """``handle()``'s answer, or the one an earlier attempt of this request stored."""
        if self._monotonic() < self._skip_until:
            return await handle()
        key = f"{call_sid}:{token}"
        owner = uuid.uuid4().hex  # this attempt's, so a claim is never taken for another attempt's
        claim = await self._claim(key, owner)
        give_up_at = self._monotonic() + self._wait_s
        while claim is not None and not claim.claimed and claim.answer is None:
            if self._monotonic() >= give_up_at:
                log.warning(
                    "no answer from the first attempt of %s within %gs: its retry is handled here",
                    route,
                    self._wait_s,
                    extra={"call_sid": call_sid},
                )
                break
            await asyncio.sleep(self._poll_s)
            claim = await self._claim(key, owner)
        if claim is not None and claim.answer is not None:
            if self._metrics is not None:
                self._metrics.webhook_replays.labels(route).inc()
            log.info("answered a Twilio retry of %s with the answer another worker stored", route)
            return decode_answer(claim.answer)
        held = claim is not None and claim.claimed
        renewal = self._keep_claim(route, key, owner) if held else None
        try:
            response = await handle()
        except BaseException:
            if held:
                self._release_later(key, owner)
            raise
        finally:
            if renewal is not None:
                renewal.cancel()
        if claim is not None:  # the store answered: the answer goes there too (the first one stored stays)
            answer = encode_answer(response)
            await self._attempt(
                "webhook_answer", lambda: self._store.webhook_answer(key, answer, self._answer_ttl_s)
            )
        return response

    async def _claim(self, key: str, owner: str) -> WebhookClaim | None:
        """The store's answer to the claim; None when it failed (then the request is handled per worker)."""
        return await self._attempt(
            "webhook_claim", lambda: self._store.webhook_claim(key, owner, self._claim_ttl_s)
        )

    async def _attempt(self, operation: str, call: Callable[[], Awaitable[T]]) -> T | None:
        try:
            async with asyncio.timeout(self._op_timeout_s):
                result = await call()
        except Exception as exc:  # a failed, slow or broken store: never the turn's failure
            self._failed(operation, exc)
            return None
        if self._down:
            self._down = False
            log.warning("state store answers again: Twilio retries are shared between workers again")
        return result

    def _failed(self, operation: str, exc: Exception) -> None:
        if self._metrics is not None:
            self._metrics.store_errors.labels(operation).inc()
        self._skip_until = self._monotonic() + self._retry_after_s
        if not self._down:
            self._down = True
            log.warning(
                "state store failed (%s: %s): Twilio retries are handled per worker until it answers again",
                operation,
                "timed out" if isinstance(exc, TimeoutError) else exc,
                exc_info=not isinstance(exc, StoreUnavailable | TimeoutError),
            )

    def _keep_claim(self, route: str, key: str, owner: str) -> asyncio.Task[None]:
        """Renew this attempt's lease every third of it until cancelled (the attempt is over)."""

        async def renew() -> None:
            while True:
                await asyncio.sleep(self._claim_ttl_s / 3)
                claim = await self._attempt(
                    "webhook_claim", lambda: self._store.webhook_claim(key, owner, self._claim_ttl_s)
                )
                if claim is not None and not claim.claimed:  # lost it (the store was slower than the lease)
                    log.warning("%s lost its claim mid-turn: a retry may run it too", route)
                    return

        return asyncio.get_running_loop().create_task(renew(), name="webhook-claim-renewal")

    def _release_later(self, key: str, owner: str) -> None:
        """Give the claim back in the background: the failure or cancellation goes on without waiting."""

        async def release() -> None:
            await self._attempt("webhook_release", lambda: self._store.webhook_release(key, owner))

        task = asyncio.get_running_loop().create_task(release(), name="webhook-release")
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)
