"""How Twilio fetches a webhook: signed, under its connection overrides, retried when they say so.

Twilio reads per-URL *connection overrides* from the URL's fragment (``…/legacy/turn#rc=2&rp=ct,rt``), which
is never sent to the server (twilio.com/docs/usage/webhooks/webhooks-connection-overrides):

- ``ct`` connect timeout, 100–10000 ms, default 5000; ``rt`` read timeout, 100–15000, default 15000;
- ``tt`` total time for every attempt together, 100–15000, default 15000;
- ``rc`` retry count, 0–5, default **1**; ``rp`` retry policy, which failures are retried: ``ct``
  (the connection failed: refused, reset, timed out), ``rt`` (no answer within the read timeout), ``4xx``,
  ``5xx``, ``all``. The default is ``ct``: Twilio's 11205 page describes the default as "two 5-second
  attempts" to connect.

So by default one dropped connection does not fail a call, and a request that reached the server but timed
out is not sent twice. When a policy does send one twice (``rt``, or a connection reset after the server
read the request), every attempt carries the first one's ``I-Twilio-Idempotency-Token``: that is how the
router (``router.webhook_replay``) recognises a retry. Out-of-range or unknown overrides are ignored, and
the default is used. Timeouts are real time, like the bot's side (see ``emulators.twilio.caller``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qsl, urlencode

import httpx

from router.twilio_signature import sign

log = logging.getLogger(__name__)

RETRY_POLICIES = frozenset({"ct", "rt", "4xx", "5xx"})
# override → (field, lowest, highest), in milliseconds
_TIMEOUTS_MS = {
    "ct": ("connect_ms", 100, 10_000),
    "rt": ("read_ms", 100, 15_000),
    "tt": ("total_ms", 100, 15_000),
}


@dataclass(frozen=True)
class ConnectionOverrides:
    """Twilio's HTTP callback settings for one URL; the defaults are Twilio's own."""

    connect_ms: int = 5_000
    read_ms: int = 15_000
    total_ms: int = 15_000
    retries: int = 1
    retry_on: frozenset[str] = field(default_factory=lambda: frozenset({"ct"}))

    @classmethod
    def split(cls, url: str, defaults: ConnectionOverrides | None = None) -> tuple[str, ConnectionOverrides]:
        """``url`` without its fragment, and the overrides the fragment sets over ``defaults``."""
        base, _, fragment = url.partition("#")
        overrides = defaults or cls()
        if not fragment:
            return base, overrides
        changes: dict[str, object] = {}
        for key, value in parse_qsl(fragment):
            if key in _TIMEOUTS_MS and value.isdigit():
                name, low, high = _TIMEOUTS_MS[key]
                if low <= int(value) <= high:
                    changes[name] = int(value)
            elif key == "rc" and value.isdigit() and int(value) <= 5:
                changes["retries"] = int(value)
            elif key == "rp":
                policies = {p.strip() for p in value.split(",")}
                if "all" in policies:
                    policies = set(RETRY_POLICIES)
                if policies and policies <= RETRY_POLICIES:
                    changes["retry_on"] = frozenset(policies)
        return base, replace(overrides, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Retry:
    """One retried attempt, as the simulator logs it."""

    url: str
    failure: str  # ct | rt | 4xx | 5xx
    detail: str
    idempotency_token: str


def failure_class(exc: httpx.HTTPError) -> str | None:
    """Which retry policy covers this failure: ``ct`` when no answer could be read because the connection
    failed (refused, reset, closed before the status line), ``rt`` when the answer did not come in time."""
    if isinstance(exc, httpx.ReadTimeout | httpx.WriteTimeout):
        return "rt"
    if isinstance(
        exc, httpx.ConnectTimeout | httpx.PoolTimeout | httpx.NetworkError | httpx.RemoteProtocolError
    ):
        return "ct"
    return None


class TwilioWebhookFetcher:
    """Sends one webhook the way Twilio does: sign, apply the URL's overrides, retry per its policy."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        auth_token: str,
        to_router: Callable[[str], str],
        defaults: ConnectionOverrides | None = None,
        on_retry: Callable[[Retry], None] | None = None,
    ) -> None:
        self._http = http
        self._auth_token = auth_token
        self._to_router = to_router
        self.defaults = defaults or ConnectionOverrides()
        self._on_retry = on_retry

    async def fetch(self, url: str, method: str, params: dict[str, str]) -> httpx.Response:
        """The final answer (any status); ``httpx.HTTPError`` when no attempt got one."""
        url, overrides = ConnectionOverrides.split(url, self.defaults)
        token = str(uuid.uuid4())
        deadline = time.monotonic() + overrides.total_ms / 1000.0
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            try:
                response = await self._send(url, method, params, token, overrides, remaining)
            except httpx.HTTPError as exc:
                failure = failure_class(exc) or "other"
                if not self._retry(failure, attempt, overrides, deadline):
                    raise
                detail = repr(exc)
            else:
                failure = f"{response.status_code // 100}xx"
                if response.status_code < 400 or not self._retry(failure, attempt, overrides, deadline):
                    return response
                detail = f"answered {response.status_code}"
            if self._on_retry is not None:
                self._on_retry(Retry(url, failure, detail, token))
            log.info("retrying %s %s after %s (%s)", method, url, failure, detail)

    @staticmethod
    def _retry(failure: str, attempt: int, overrides: ConnectionOverrides, deadline: float) -> bool:
        """Whether the policy retries this failure and the retry count and total time allow one more."""
        return failure in overrides.retry_on and attempt <= overrides.retries and time.monotonic() < deadline

    async def _send(
        self,
        url: str,
        method: str,
        params: dict[str, str],
        token: str,
        overrides: ConnectionOverrides,
        remaining_s: float,
    ) -> httpx.Response:
        headers = {"User-Agent": "TwilioProxy/1.1", "I-Twilio-Idempotency-Token": token}
        timeout = httpx.Timeout(
            connect=min(overrides.connect_ms / 1000.0, remaining_s),
            read=min(overrides.read_ms / 1000.0, remaining_s),
            write=min(overrides.read_ms / 1000.0, remaining_s),
            pool=min(overrides.connect_ms / 1000.0, remaining_s),
        )
        try:
            async with asyncio.timeout(remaining_s):  # tt bounds the attempt as a whole, not each read
                if method == "GET":
                    full = url + ("&" if "?" in url else "?") + urlencode(params)
                    headers["X-Twilio-Signature"] = sign(self._auth_token, full, {})
                    return await self._http.get(self._to_router(full), headers=headers, timeout=timeout)
                headers["X-Twilio-Signature"] = sign(self._auth_token, url, params)
                return await self._http.post(
                    self._to_router(url), data=params, headers=headers, timeout=timeout
                )
        except TimeoutError as exc:
            raise httpx.ReadTimeout(f"total time tt={overrides.total_ms} ms spent") from exc
