"""A ``VoiceLiveConnector`` wrapping the real one so a test can kill a live socket or refuse new ones."""

from __future__ import annotations

from collections.abc import Mapping

from realtime_pipeline.voicelive_client import (
    VoiceLiveConnection,
    VoiceLiveUnreachable,
    WebsocketsConnection,
    WebsocketsConnector,
)


class ControlledConnector:
    def __init__(self) -> None:
        self._inner = WebsocketsConnector()
        self.connections: list[WebsocketsConnection] = []
        self.refuse_after: int | None = None  # refuse once this many connections were made

    async def connect(
        self, url: str, headers: Mapping[str, str], *, open_timeout: float
    ) -> VoiceLiveConnection:
        if self.refuse_after is not None and len(self.connections) >= self.refuse_after:
            raise VoiceLiveUnreachable("connection refused (test)")
        connection = await self._inner.connect(url, headers, open_timeout=open_timeout)
        assert isinstance(connection, WebsocketsConnection)
        self.connections.append(connection)
        return connection

    def abort(self, index: int) -> None:
        """Drop the TCP connection without a close frame (call on the server's loop)."""
        self.connections[index]._ws.transport.abort()
