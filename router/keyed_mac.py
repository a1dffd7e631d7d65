"""HMAC-SHA256 under one fixed key, for the per-call hot path (caller hashes, stream tokens).

Why not ``hmac.digest``: CPython's one-shot OpenSSL HMAC releases the GIL around even a 20-byte message.
The webhook runs next to the SQLite store's thread, so every release let that thread take the GIL and
the event loop waited for it back: under load ``hmac.digest`` cost the webhook milliseconds instead of
about a microsecond (py-spy: 14 % of the loop's samples sat in it). Copying a keyed HMAC object and
finishing it never releases the GIL for small messages, and skips re-deriving the key pads per call.
"""

from __future__ import annotations

import hashlib
import hmac


class KeyedSha256:
    """``HMAC-SHA256(key, message)`` with the key's pads computed once."""

    def __init__(self, key: bytes) -> None:
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)

    def digest(self, message: bytes) -> bytes:
        mac = self._keyed.copy()
        mac.update(message)
        return mac.digest()
