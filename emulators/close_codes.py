"""Which WebSocket close codes an emulator's fault can send (shared by every emulator that closes sockets)."""

from __future__ import annotations

from typing import Any

SENDABLE_CLOSE_CODES = "1000-1003, 1007-1014, 3000-4999"


def sendable_close_code(code: Any) -> bool:
    """RFC 6455 7.4.1: 1005, 1006 and 1015 "MUST NOT be set as a status code in a Close control frame".

    Accepting them would record a code no client can ever receive; 1004 and 1016-2999 are reserved too.
    """
    if isinstance(code, bool) or not isinstance(code, int):
        return False
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999
