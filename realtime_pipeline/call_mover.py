"""Moving a live call out of the realtime pipeline, through Twilio's REST API: to legacy, or to its end.

Updating the call's ``Url`` makes Twilio stop the ``<Connect><Stream>`` and fetch
``{PUBLIC_BASE_URL}/legacy/start`` for new TwiML, so the caller hears the legacy agent instead of silence
(``?greet=1`` when they heard nothing here: legacy greets them instead of carrying on).
Updating its ``Status`` to ``completed`` hangs up. Closing the stream would not: Twilio would then run the
``<Connect action>``, which leads to legacy too.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

log = logging.getLogger(__name__)


class CallMover(Protocol):
    async def move_to_legacy(self, call_sid: str, reason: str, *, greet: bool = False) -> bool:
        """Redirect the call (``greet``: the caller heard nothing yet); True when Twilio accepted it."""
        ...

    async def hang_up(self, call_sid: str, reason: str) -> bool:
        """End the call; True when Twilio accepted it."""
        ...

    async def aclose(self) -> None: ...


class TwilioCallMover:
    """The real mover: ``twilio`` library with its async HTTP client (created on first use)."""

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        public_base_url: str,
        api_base_url: str = "",
        timeout: float = 5.0,
    ) -> None:
        self._account_sid = account_sid
        self._auth_token = auth_token
        self._target = public_base_url.rstrip("/") + "/legacy/start"
        self._api_base_url = api_base_url
        self._timeout = timeout
        self._client: Any = None
        self._http: Any = None

    def _twilio(self) -> Any:
        if self._client is None:
            from twilio.http.async_http_client import AsyncTwilioHttpClient
            from twilio.rest import Client

            self._http = AsyncTwilioHttpClient(timeout=self._timeout)
            self._client = Client(self._account_sid, self._auth_token, http_client=self._http)
            if self._api_base_url:
                self._client.api.base_url = self._api_base_url.rstrip("/")
        return self._client

    async def move_to_legacy(self, call_sid: str, reason: str, *, greet: bool = False) -> bool:
        url = self._target + "?greet=1" if greet else self._target
        return await self._update(call_sid, reason, "moved to legacy", url=url, method="POST")

    async def hang_up(self, call_sid: str, reason: str) -> bool:
        return await self._update(call_sid, reason, "hung up", status="completed")

    async def _update(self, call_sid: str, reason: str, done: str, **fields: str) -> bool:
        """One ``calls(sid).update``; any failure (refused, unreachable, timed out) is logged and is False."""
        try:
            await self._twilio().calls(call_sid).update_async(**fields)
        except Exception as exc:
            log.error(
                "call could not be %s: %s: %s",
                done,
                type(exc).__name__,
                exc,
                extra={"call_sid": call_sid, "reason": reason},
            )
            return False
        log.info("call %s", done, extra={"call_sid": call_sid, "reason": reason})
        return True

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
            self._client = None
