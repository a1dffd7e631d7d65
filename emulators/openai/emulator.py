"""``OpenAIEmulator``: the chat-completions emulator on a free loopback port, in its own thread."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from emulators.control import EmulatorServer
from emulators.openai.app import ChatCompletionsApp, RecordedRequest, RequestLog
from emulators.openai.knobs import OpenAIKnobs, OpenAIKnobStore
from emulators.openai.replies import ReplyFunction, ReplyPolicy, ReplySource
from emulators.openai.tools import ScriptEntry


class OpenAIEmulator(EmulatorServer):
    """OpenAI and Azure OpenAI chat completions on one port.

    Point ``AsyncOpenAI(base_url=emulator.openai_base_url, api_key=...)`` or
    ``AsyncAzureOpenAI(azure_endpoint=emulator.url, api_key=..., api_version=...)`` at it.
    ``api_key=None`` accepts any non-empty key; ``deployments=None`` accepts any Azure deployment name.
    A ``script`` entry is reply text (``{tool_output}`` stands for the newest ``tool`` message's content) or
    ``{"tool_calls": [{"name": "check_availability", "arguments": {"day": "Tuesday"}}, …]}``.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        deployments: Collection[str] | None = None,
        script: Sequence[ScriptEntry] | None = None,
        reply: ReplyFunction | None = None,
        knobs: OpenAIKnobs | None = None,
        policy: ReplyPolicy | None = None,
    ) -> None:
        self.knobs = OpenAIKnobStore(knobs)
        self.replies = ReplySource(script, reply, policy)
        self.log = RequestLog()
        self._app = ChatCompletionsApp(
            knobs=self.knobs, replies=self.replies, log=self.log, api_key=api_key, deployments=deployments
        )
        super().__init__(self._app.build(), host=host, port=port)

    @property
    def url(self) -> str:
        """Base URL of the server (the Azure ``azure_endpoint``)."""
        return self._server.http_url

    @property
    def openai_base_url(self) -> str:
        """``base_url`` for the plain OpenAI client (``{url}/v1``)."""
        return f"{self._server.http_url}/v1"

    def set_faults(self, **changes: Any) -> OpenAIKnobs:
        """Change latency/fault knobs while running (see :class:`OpenAIKnobs` for the names)."""
        return self.knobs.update(**changes)

    def set_script(self, script: Sequence[ScriptEntry] | None) -> None:
        """Replace the scripted replies (text or ``{"tool_calls": […]}`` entries, used in turn, cycling)."""
        self.replies.set_script(script)

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.log.all()

    def clear_requests(self) -> None:
        self.log.clear()
