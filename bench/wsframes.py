"""The RFC 6455 frame header, for the benchmark's raw-socket peers (driver and Voice Live stub).

The benchmark's own ends of the sockets skip the websockets library so that they cost far less CPU than
the server they measure; both need the same header decoding.
"""

from __future__ import annotations


def frame_at(buf: bytearray, pos: int, *, masked: bool) -> tuple[int, int, int, bytes] | None:
    """``(opcode, payload_start, payload_end, mask_key)`` of the frame at ``pos``; None until it is whole.

    ``mask_key`` is empty for unmasked (server → client) frames.
    """
    size = len(buf)
    if size - pos < 2:
        return None
    opcode, length = buf[pos] & 0x0F, buf[pos + 1] & 0x7F
    head = 2
    if length == 126:
        if size - pos < 4:
            return None
        length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
    elif length == 127:
        if size - pos < 10:
            return None
        length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
    key = b""
    if masked:
        key = bytes(buf[pos + head : pos + head + 4])
        head += 4
    start = pos + head
    end = start + length
    if end > size:
        return None
    return opcode, start, end, key
