"""A stand-in for the business's own tool backend (Contoso Dental's booking API), which the agent's tools call.

The router POSTs each tool call to the URL the profile gives it (``router.tool_calls``); this server answers
``POST /tools/<name>`` for the sample profile's tools, records what it was sent, and can be slow or fail on
demand (``POST /_emulator/faults``), so the demo and the tests show what a caller hears when a tool is slow,
down or wrong. Run it alone with ``python -m emulators.tool_backend --port 8095``.
"""

from __future__ import annotations

import asyncio
import threading
import zlib
from dataclasses import asdict, dataclass
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from emulators.control import (
    EmulatorServer,
    KnobStore,
    cli_parser,
    control_routes,
    json_response,
    serve_in_foreground,
    take,
)

SLOTS = ("09:30", "11:00", "14:30")


@dataclass
class ToolBackendKnobs:
    delay_s: float = 0.0
    """Added before every answer."""
    fail_next: int = 0
    """Answer the next N calls with ``fail_status`` (``-1``: every call)."""
    fail_status: int = 500
    stall_next: int = 0
    """Hold the next N calls for ``stall_s`` before answering (a tool that hangs)."""
    stall_s: float = 30.0
    oversize_next: int = 0
    """Answer the next N calls with a body of ``oversize_bytes`` (a tool that dumps a whole table)."""
    oversize_bytes: int = 100_000


def _answer(tool: str, arguments: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The sample tools' answers: deterministic, so a test can tell the model read them."""
    day = str(arguments.get("day") or "").strip()
    if tool == "check_availability":
        if not day:
            return 422, {"error": "day is required"}
        return 200, {"day": day, "free_slots": list(SLOTS)}
    if tool == "book_appointment":
        time_ = str(arguments.get("time") or "").strip()
        if not day or not time_:
            return 422, {"error": "day and time are required"}
        confirmation = f"CD-{zlib.crc32(f'{day} {time_}'.encode()) % 10000:04d}"
        return 200, {"booked": True, "day": day, "time": time_, "confirmation": confirmation}
    return 404, {"error": f"no tool named {tool}"}


class ToolBackendEmulator(EmulatorServer):
    """``POST /tools/check_availability`` and ``/tools/book_appointment``, with fault knobs."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.knobs: KnobStore[ToolBackendKnobs] = KnobStore(ToolBackendKnobs())
        self._lock = threading.Lock()
        self._calls: list[dict[str, Any]] = []
        routes = [
            Route("/tools/{name}", self._tool, methods=["POST"]),
            *control_routes(apply=lambda changes: self.knobs.update(**changes), state=self._state),
        ]
        super().__init__(Starlette(routes=routes), host=host, port=port)

    @property
    def url(self) -> str:
        return self._server.http_url

    def tool_url(self, name: str) -> str:
        return f"{self.url}/tools/{name}"

    def set_faults(self, **changes: Any) -> ToolBackendKnobs:
        return self.knobs.update(**changes)

    @property
    def calls(self) -> list[dict[str, Any]]:
        """Every call received: ``{"path_tool", "body", "headers"}``, oldest first."""
        with self._lock:
            return list(self._calls)

    def _state(self) -> dict[str, Any]:
        return {"knobs": asdict(self.knobs.snapshot()), "calls": len(self.calls)}

    async def _tool(self, request: Request) -> Response:
        name = request.path_params["name"]
        raw = await request.body()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return json_response({"error": "body is not JSON"}, 400)
        with self._lock:
            self._calls.append({"path_tool": name, "body": body, "headers": dict(request.headers)})
        with self.knobs.locked() as knobs:
            stall = knobs.stall_s if take(knobs, "stall_next") else 0.0
            fail = knobs.fail_status if take(knobs, "fail_next") else 0
            oversize = knobs.oversize_bytes if take(knobs, "oversize_next") else 0
            delay = knobs.delay_s
        if stall or delay:
            await asyncio.sleep(stall + delay)
        if fail:
            return json_response({"error": "the booking system is down"}, fail)
        if oversize:
            return Response(b"x" * oversize, media_type="text/plain")
        arguments = body.get("arguments") if isinstance(body, dict) else None
        status, answer = _answer(name, arguments if isinstance(arguments, dict) else {})
        return json_response(answer, status)


def main(argv: list[str] | None = None) -> None:
    parser = cli_parser("python -m emulators.tool_backend", __doc__, port=8095)
    args = parser.parse_args(argv)
    emulator = ToolBackendEmulator(host=args.host, port=args.port).start()
    serve_in_foreground(
        emulator, "emulators.tool_backend", "tool backend emulator on %s/tools/", emulator.url
    )


if __name__ == "__main__":
    main()
