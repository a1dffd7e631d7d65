"""Download a caller recording from Twilio (``RecordingUrl`` + ``.wav``, HTTP Basic with our account)."""

from __future__ import annotations

from typing import Protocol

import httpx

MAX_RECORDING_BYTES = 8 * 1024 * 1024  # > 8 min of 8 kHz 16-bit audio; <Record> is capped far below that


class RecordingFetcher(Protocol):
    async def fetch(self, recording_url: str) -> bytes: ...

    async def aclose(self) -> None: ...


class TwilioRecordingFetcher:
    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        timeout_s: float = 5.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._auth = httpx.BasicAuth(account_sid, auth_token)
        self._client = client or httpx.AsyncClient(timeout=timeout_s)

    async def fetch(self, recording_url: str) -> bytes:
        url = recording_url if recording_url.endswith(".wav") else recording_url + ".wav"
        if not url.startswith(("https://", "http://")):
            raise ValueError("RecordingUrl is not an http(s) URL")
        response = await self._client.get(url, auth=self._auth, follow_redirects=True)
        response.raise_for_status()
        if len(response.content) > MAX_RECORDING_BYTES:
            raise ValueError(f"recording is larger than {MAX_RECORDING_BYTES} bytes")
        return response.content

    async def aclose(self) -> None:
        await self._client.aclose()
