"""A retried Twilio webhook gets the first attempt's answer instead of being handled twice.

Twilio retries a webhook whose connection failed (once by default; more often, and also after a read timeout
or an error answer, when the URL's connection overrides say so), and every attempt carries the same
``I-Twilio-Idempotency-Token``. A connection can fail after the request reached us, with the answer lost on
the way back, so a retry is not proof that the first attempt did nothing: without this a retried legacy turn
would ask the LLM twice and record the turn twice, and a retried ``POST /twilio/voice`` in half-open would
take a second breaker trial. A retry that arrives while the first attempt is still being handled waits for
its answer.

Kept in memory per worker for ``ttl_s`` = 20 s (Twilio gives all attempts together at most 15 s), at most
``max_entries`` = 10,000 answers (about 1 KB each; past ~500 requests/s the oldest go early). With ``shared``
(the legacy routes: :mod:`router.shared_replay`) a request this worker has not seen goes through the state
store, so a retry that a load balancer sends to another worker gets the first attempt's answer too; without
it (``POST /twilio/voice``, which stays off the store) such a retry is handled again. Only requests whose
signature was checked get here; the key also holds the CallSid, so a token replayed with another call's
signed request finds nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from router.observability import Metrics
from router.shared_replay import SharedReplay

log = logging.getLogger("router.webhook_replay")

IDEMPOTENCY_HEADER = b"i-twilio-idempotency-token"
MAX_TOKEN_LENGTH = 128


def idempotency_token(request: Request) -> str | None:
    """Twilio's ``I-Twilio-Idempotency-Token`` header, if any (read from the ASGI scope directly)."""
    for name, value in request.scope["headers"]:
        if name == IDEMPOTENCY_HEADER:
            return value.decode("latin-1")[:MAX_TOKEN_LENGTH] or None
    return None


class _Answer:
    """One request's answer: ``None`` while the first attempt runs; retries that arrive meanwhile wait."""

    __slots__ = ("expires_at", "response", "waiters")

    def __init__(self, expires_at: float) -> None:
        self.expires_at = expires_at
        self.response: Response | None = None
        self.waiters: list[asyncio.Future[Response | None]] | None = None


class WebhookReplay:
    """First answers by ``(CallSid, token)``, for ``ttl_s``, at most ``max_entries`` of them."""

    def __init__(
        self,
        *,
        ttl_s: float = 20.0,
        max_entries: int = 10_000,
        monotonic: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
        shared: SharedReplay | None = None,
    ) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._monotonic = monotonic
        self._metrics = metrics
        self._shared = shared
        # Inserted in time order with one TTL, so the oldest is always first. (An OrderedDict: a plain dict
        # emptied from the front makes finding its first key slower with every removal, until it resizes.)
        self._answers: OrderedDict[str, _Answer] = OrderedDict()

    def __len__(self) -> int:
        return len(self._answers)

    async def answer(
        self, route: str, call_sid: str, token: str | None, handle: Callable[[], Awaitable[Response]]
    ) -> Response:
        """``handle()``'s answer, or, for a retry of a request already handled, that request's answer."""
        if token is None:
            return await handle()
        key = f"{call_sid}\x00{token}"
        answers = self._answers
        while True:
            now = self._monotonic()
            found = answers.get(key)
            if found is None or found.expires_at <= now:
                break
            response = found.response
            if response is None:  # the first attempt is still running
                waiter: asyncio.Future[Response | None] = asyncio.get_running_loop().create_future()
                found.waiters = (found.waiters or []) + [waiter]
                response = await waiter
            if response is not None:
                if self._metrics is not None:
                    self._metrics.webhook_replays.labels(route).inc()
                log.info("answered a Twilio retry of %s with the first attempt's answer", route)
                return response
            # That attempt failed: the first retry to wake does the work, the others wait on it in turn.
        entry = answers[key] = _Answer(now + self._ttl_s)
        if found is not None:
            answers.move_to_end(key)  # where the newest belong
        self._trim(now)
        try:
            if self._shared is None:
                response = await handle()
            else:  # not seen here: maybe by another worker (same-worker retries wait above, off the store)
                response = await self._shared.answer(route, call_sid, token, handle)
        except BaseException:
            if answers.get(key) is entry:
                del answers[key]
            self._wake(entry, None)
            raise
        entry.response = response
        self._wake(entry, response)
        return response

    @staticmethod
    def _wake(entry: _Answer, response: Response | None) -> None:
        for waiter in entry.waiters or ():
            if not waiter.done():
                waiter.set_result(response)
        entry.waiters = None

    def _trim(self, now: float) -> None:
        answers = self._answers
        while answers and (
            len(answers) > self._max_entries or next(iter(answers.values())).expires_at <= now
        ):
            answers.popitem(last=False)
