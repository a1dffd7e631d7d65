"""A TCP proxy that can lose one reply: the fault behind a client's "retry on connection error" double write.

Between a client and a server (here redis-server), it relays bytes both ways. When armed with
:meth:`ReplyLosingProxy.lose_next_reply`, the next bytes the server sends are not relayed: the client's
connection is closed instead, so the client sees a connection error although the server ran its request.
The server's side stays open a moment longer, so a request it is still executing is not cut short. With
``then_refuse``, the proxy also stops listening as it loses the reply, so the client's reconnect is refused
(Redis went down right after running the request).
:meth:`ReplyLosingProxy.delay_next_reply` holds the next reply back instead, past the client's timeout.
Requests naming ``SCRIPT`` (redis-py checks that its scripts are loaded before a pipeline runs them) are not
the ones whose reply is lost: the loss falls on the next request after them, the write itself.
"""

from __future__ import annotations

import asyncio
import contextlib

from emulators.runner import free_port

SERVER_SIDE_GRACE_SECONDS = 0.2


class ReplyLosingProxy:
    """Loopback proxy to ``upstream_port``; ``port`` is where clients connect."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.replies_lost = 0
        self._armed = False
        self._refuse_after_loss = False
        self._delay_s = 0.0
        self._delays_left = 0
        self.replies_delayed = 0
        self._last_request = b""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.port = free_port()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def aclose(self) -> None:
        """Stop listening and drop every connection (each relay then ends by itself)."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:
            await asyncio.wait(list(self._tasks))

    def lose_next_reply(self, *, then_refuse: bool = False) -> None:
        self._armed, self._refuse_after_loss = True, then_refuse

    def delay_next_reply(self, seconds: float, count: int = 1) -> None:
        self._delay_s, self._delays_left = seconds, count

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(client_writer)
        server_writer: asyncio.StreamWriter | None = None
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            self._writers.add(server_writer)
            upstream = asyncio.create_task(self._relay(client_reader, server_writer))
            await self._replies(server_reader, client_writer)
            client_writer.transport.abort()  # ends the upstream relay too
            await upstream
            await asyncio.sleep(SERVER_SIDE_GRACE_SECONDS)
        except OSError:
            pass
        finally:
            for writer in (client_writer, server_writer):
                if writer is not None:
                    writer.transport.abort()
                    self._writers.discard(writer)
            self._tasks.discard(task)

    async def _replies(
        self, server_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        while data := await server_reader.read(65536):
            if self._armed and b"SCRIPT" not in self._last_request:  # the server has run it and answered
                self._armed = False
                self.replies_lost += 1
                if self._refuse_after_loss and self._server is not None:
                    self._server.close()  # before the reset, so the client's reconnect finds no listener
                client_writer.transport.abort()  # a reset, as when the connection drops mid-reply
                return
            if self._delays_left and b"SCRIPT" not in self._last_request:
                self._delays_left -= 1
                self.replies_delayed += 1
                await asyncio.sleep(self._delay_s)  # the server has run it; the client gives up meanwhile
            client_writer.write(data)
            await client_writer.drain()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                self._last_request = data
                writer.write(data)
                await writer.drain()
