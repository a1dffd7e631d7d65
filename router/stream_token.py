"""Per-call Media Streams token: an expiring HMAC bound to the CallSid.

The router puts it in ``<Parameter name="token">`` of the ``<Stream>``; Twilio hands it back in
``start.customParameters.token``. Without it, anyone who can reach ``/twilio/media`` with a valid-looking
upgrade could open Voice Live sessions on our bill; with it, a stream is only served for a call we routed,
shortly after we routed it.
"""

from __future__ import annotations

import base64
import hmac
import time
from collections.abc import Callable

from router.keyed_mac import KeyedSha256


class StreamTokens:
    def __init__(self, secret: bytes, ttl_seconds: float, clock: Callable[[], float] = time.time) -> None:
        if not secret:
            raise ValueError("stream token secret must not be empty")
        self._mac_of = KeyedSha256(secret)
        self._ttl = ttl_seconds
        self._clock = clock

    def _mac(self, call_sid: str, expires: int) -> str:
        digest = self._mac_of.digest(f"{call_sid}.{expires}".encode())
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def issue(self, call_sid: str) -> str:
        expires = int(self._clock() + self._ttl)
        return f"{expires}.{self._mac(call_sid, expires)}"

    def verify(self, token: str | None, call_sid: str | None) -> bool:
        """True iff ``token`` was issued for ``call_sid`` and has not expired."""
        # Issued tokens are ASCII. The token comes from whoever opened the stream: anything else is refused
        # here, since compare_digest raises TypeError on a non-ASCII str and int() takes non-ASCII digits.
        if not token or not call_sid or "." not in token or not token.isascii():
            return False
        expires_text, _, mac = token.partition(".")
        if not expires_text.isdigit():
            return False
        expires = int(expires_text)
        if expires < self._clock():
            return False
        return hmac.compare_digest(mac.encode(), self._mac(call_sid, expires).encode())
