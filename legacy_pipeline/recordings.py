"""Download a caller recording from Twilio (``RecordingUrl`` + ``.wav``, HTTP Basic with our account).

The download carries our Twilio credentials, so it only goes to Twilio's API origin (``TWILIO_API_BASE_URL``,
``https://api.twilio.com`` by default): a ``RecordingUrl`` pointing anywhere else is refused before any
request, even in a correctly signed callback. Redirects are followed only within that origin, and the body
is read with a size cap rather than trusted to be small.

Twilio post-processes recordings, and one "may not always be ready right away" (Twilio support, "Getting
Started with Recording Status Callbacks"): a 404 is tried again a few times, briefly, inside the turn's
deadline, rather than answered with the apology at once.
"""

from __future__ import annotations

import asyncio
from typing import Protocol
from urllib.parse import urlsplit

import httpx

MAX_RECORDING_BYTES = 8 * 1024 * 1024  # > 8 min of 8 kHz 16-bit audio; <Record> is capped far below that
TWILIO_API_ORIGIN = "https://api.twilio.com"
MAX_REDIRECTS = 3
# Between tries while Twilio answers 404 (the recording not processed yet).
NOT_READY_WAITS_S = (0.25, 0.5, 1.0)


class RecordingRefused(ValueError):
    """The recording URL or its response is not one we will download or keep."""


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{(parts.netloc or '').lower()}"


class RecordingFetcher(Protocol):
    async def fetch(self, recording_url: str) -> bytes: ...

    async def aclose(self) -> None: ...


class TwilioRecordingFetcher:
    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        api_origin: str = TWILIO_API_ORIGIN,
        timeout_s: float = 5.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._auth = httpx.BasicAuth(account_sid, auth_token)
        self._origin = origin_of(api_origin or TWILIO_API_ORIGIN)
        self._client = client or httpx.AsyncClient(timeout=timeout_s)

    async def fetch(self, recording_url: str) -> bytes:
        url = recording_url if recording_url.endswith(".wav") else recording_url + ".wav"
        for wait_s in NOT_READY_WAITS_S:
            try:
                return await self._fetch_once(url)
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code != 404:
                    raise
            await asyncio.sleep(wait_s)
        return await self._fetch_once(url)

    async def _fetch_once(self, url: str) -> bytes:
        for _ in range(MAX_REDIRECTS + 1):
            if origin_of(url) != self._origin:
                raise RecordingRefused(f"RecordingUrl is not on {self._origin}")
            async with self._client.stream("GET", url, auth=self._auth) as response:
                if response.is_redirect and "location" in response.headers:
                    url = str(response.url.join(response.headers["location"]))
                    continue
                response.raise_for_status()
                return await self._read_capped(response)
        raise RecordingRefused(f"more than {MAX_REDIRECTS} redirects")

    @staticmethod
    async def _read_capped(response: httpx.Response) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_RECORDING_BYTES:
            raise RecordingRefused(f"recording is larger than {MAX_RECORDING_BYTES} bytes")
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_RECORDING_BYTES:
                raise RecordingRefused(f"recording is larger than {MAX_RECORDING_BYTES} bytes")
        return bytes(body)

    async def aclose(self) -> None:
        await self._client.aclose()
