"""Run an ASGI app on a real loopback socket in a background thread.

Emulators and tests both need "this app, listening on a free port, now". The server gets its own thread
and event loop so that blocking SDK calls (the Speech SDK's ``.get()``) in the caller cannot deadlock it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

IDLE_CONNECTION_SECONDS = 120  # how long an emulator keeps an idle HTTP connection open


def free_port(host: str = "127.0.0.1") -> int:
    """Ask the kernel for a currently unused TCP port on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class ServerThread:
    """A uvicorn server for ``app`` on ``host:port`` (port 0 picks a free one), in a daemon thread."""

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        ws_max_size: int = 16 * 1024 * 1024,
        **uvicorn_options: Any,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        # The same WebSocket implementation ``python -m router serve`` uses, so tests exercise it.
        uvicorn_options.setdefault("ws", "websockets-sansio")
        # Cloud services keep an idle connection open for minutes; uvicorn closes it after 5 s, the very
        # moment httpx's own pool (the OpenAI SDK's, the demo's control client) gives it up. A request sent on
        # it as the server closes it dies with a read error on a busy box: a fault of the stand-in, not of the
        # service it stands for.
        uvicorn_options.setdefault("timeout_keep_alive", IDLE_CONNECTION_SECONDS)
        config = uvicorn.Config(
            app,
            host=host,
            port=self.port,
            log_level=log_level,
            lifespan="auto",
            ws_max_size=ws_max_size,
            **uvicorn_options,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=f"asgi-{self.port}", daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._server.serve())
        finally:
            loop.close()

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"server on port {self.port} exited during start-up")
            if time.monotonic() > deadline:
                raise TimeoutError(f"server on port {self.port} did not start within {timeout}s")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def serving(app: Any, **options: Any) -> Iterator[ServerThread]:
    """``with serving(app) as server:`` — the app listens on ``server.http_url`` inside the block."""
    server = ServerThread(app, **options).start()
    try:
        yield server
    finally:
        server.stop()
