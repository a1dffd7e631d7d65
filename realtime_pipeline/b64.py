"""Base64 as RFC 4648 writes it, the only form passed on: both sides' audio is forwarded without re-encoding.

``binascii.a2b_base64(strict_mode=True)`` still accepts a few spellings no encoder produces: padding past the
last quantum (``AAAA====``), a lone ``=`` after a whole quantum (``AAAA=``) and a length that is not a multiple
of four once padded. Forwarded untouched, they would reach a decoder stricter than Python's (Twilio's, Voice
Live's) as audio it may refuse. Checking the length and the padding run costs two string operations.
"""

from __future__ import annotations

import binascii


def decode_strict(text: str) -> bytes:
    """The bytes of canonical padded base64 ``text``; ``ValueError`` for anything else."""
    if len(text) % 4 or text.endswith("==="):
        raise ValueError("not padded base64: length or padding")
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None
