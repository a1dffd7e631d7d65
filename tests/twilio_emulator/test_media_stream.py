"""The caller emulator's media stream leaves nothing running behind it, however its call ends."""

from __future__ import annotations

import asyncio
import base64
import hashlib

from emulators.twilio.measure import CallerEars
from emulators.twilio.media_stream import MediaStreamSession

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


async def _deaf_router(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accepts the upgrade, then never reads again: a close handshake sent to it is never answered."""
    head = await reader.readuntil(b"\r\n\r\n")
    key = next(
        line.split(b":", 1)[1].strip()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key")
    )
    accept = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())
    writer.write(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    await writer.drain()
    await asyncio.sleep(3600)


async def test_a_stream_cancelled_while_closing_stops_its_pumps() -> None:
    server = await asyncio.start_server(_deaf_router, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"ws://127.0.0.1:{port}/twilio/media"
    session = MediaStreamSession(
        connect_url=url,
        signed_url=url,
        signature="unchecked",
        account_sid="AC" + "0" * 32,
        call_sid="CA" + "0" * 32,
        parameters={},
        ears=CallerEars("CA" + "0" * 32),
    )
    try:
        await session.open()
        ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        call = asyncio.create_task(session.run_until(ended))
        await asyncio.sleep(0.1)  # media is flowing
        ended.set_result("caller hung up")
        await asyncio.sleep(0.2)  # run_until is in close(), waiting for a close handshake that never comes
        call.cancel()  # and the call is cancelled meanwhile
        await asyncio.gather(call, return_exceptions=True)
        pumps = [t for t in asyncio.all_tasks() if t.get_name().startswith(session.stream_sid)]
        assert all(t.done() for t in pumps), pumps
    finally:
        server.close()
