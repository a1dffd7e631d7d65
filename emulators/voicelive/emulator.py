"""``VoiceLiveEmulator``: the Voice Live emulator running on a loopback port in a background thread."""

from __future__ import annotations

from typing import Any, Self
from urllib.parse import urlencode

from emulators.runner import ServerThread
from emulators.voicelive.config import VoiceLiveEmulatorConfig
from emulators.voicelive.connection import MAX_APPEND_BASE64_CHARS
from emulators.voicelive.faults import Faults
from emulators.voicelive.records import EmulatorState, SessionRecord
from emulators.voicelive.server import (
    REALTIME_PATH,
    TransportRegistry,
    build_app,
    fault_aware_protocol,
    install_denial_log_filter,
)

# An append of the documented 15 MiB, base64-encoded, plus the JSON around it, must fit in one frame.
WS_MAX_SIZE = MAX_APPEND_BASE64_CHARS + 64 * 1024


class VoiceLiveEmulator:
    """An Azure AI Voice Live endpoint on ``127.0.0.1``: point the SDK's ``endpoint=`` at ``.url``."""

    def __init__(self, config: VoiceLiveEmulatorConfig | None = None) -> None:
        self.config = config or VoiceLiveEmulatorConfig()
        self.faults: Faults = self.config.faults
        self.state = EmulatorState()
        self._registry = TransportRegistry()
        self.app = build_app(
            config=self.config, faults=self.faults, state=self.state, registry=self._registry
        )
        self._server: ServerThread | None = None

    # ------------------------------------------------------------------
    def start(self) -> Self:
        if self._server is None:
            install_denial_log_filter()
            self._server = ServerThread(
                self.app,
                host=self.config.host,
                port=self.config.port,
                http=fault_aware_protocol(self.faults, self.state, self._registry),
                ws_max_size=WS_MAX_SIZE,
            )
            self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the emulator is not running")
        return self._server.port

    @property
    def url(self) -> str:
        """HTTP base URL, e.g. ``http://127.0.0.1:PORT`` (the SDK turns it into ``ws://…/voice-live/realtime``)."""
        return f"http://{self.config.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """WebSocket URL of the realtime route, without a query."""
        return f"ws://{self.config.host}:{self.port}{REALTIME_PATH}"

    def realtime_url(
        self, *, model: str = "gpt-realtime", api_version: str = "2025-10-01", **query: str
    ) -> str:
        """Full ``ws://`` URL with the required query (extra query parameters via keyword arguments)."""
        params: dict[str, Any] = {"api-version": api_version, "model": model, **query}
        return f"{self.ws_url}?{urlencode(params)}"

    @property
    def api_key(self) -> str:
        """The first accepted API key."""
        return self.config.api_keys[0]

    @property
    def sessions(self) -> list[SessionRecord]:
        return self.state.sessions

    def state_dict(self) -> dict[str, Any]:
        return self.state.to_dict() | {"faults": self.faults.to_dict()}
