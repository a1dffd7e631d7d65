"""Plumbing the legacy-service emulators share: live knobs, the ``/_emulator`` control routes, the lifecycle.

Every emulator is driven the same way by tests, the demo and outage drills: a dataclass of latency and fault
knobs that can change while it serves (from the test thread or over HTTP), ``POST /_emulator/faults`` and
``GET /_emulator/state`` to do that from outside, and ``start()``/``stop()``/``with`` around a
:class:`~emulators.runner.ServerThread`. Each emulator keeps only what is its own (its knobs, how a request
consumes them, what its state shows).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from emulators.runner import ServerThread

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

K = TypeVar("K", bound="DataclassInstance")


class KnobStore(Generic[K]):
    """A dataclass of knobs behind a lock, changeable while the emulator serves.

    ``update`` checks names and types against the current values (numbers stay numbers, integers stay
    integers, strings stay strings) and then runs ``check`` on the result, so a bad change raises
    ``ValueError`` and leaves every knob as it was. Fault counters ("the next N requests", ``-1`` for every
    one) are consumed with :func:`take` inside :meth:`locked`, so one request's decision is atomic.
    """

    def __init__(self, knobs: K, *, check: Callable[[K], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._knobs = knobs
        self._check = check
        self._names = {f.name for f in dataclasses.fields(knobs)}

    def snapshot(self) -> K:
        """A consistent copy (for a decision that reads several knobs)."""
        with self._lock:
            return dataclasses.replace(self._knobs)

    def update(self, **changes: Any) -> K:
        """Change some knobs; unknown names, wrong types or values ``check`` refuses raise ``ValueError``."""
        unknown = set(changes) - self._names
        if unknown:
            raise ValueError(f"unknown knob(s): {', '.join(sorted(unknown))}")
        with self._lock:
            current = dataclasses.asdict(self._knobs)
            for name, value in changes.items():
                current[name] = _coerce(name, value, type(current[name]))
            knobs = type(self._knobs)(**current)
            if self._check is not None:
                self._check(knobs)
            self._knobs = knobs
            return dataclasses.replace(knobs)

    @contextmanager
    def locked(self) -> Iterator[K]:
        """The live knobs under the lock: read them and :func:`take` counters as one step."""
        with self._lock:
            yield self._knobs


def _coerce(name: str, value: Any, expected: type) -> Any:
    if expected is str:
        if not isinstance(value, str):
            raise ValueError(f"knob {name} must be a string")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"knob {name} must be a number")
    if expected is int and not float(value).is_integer():
        raise ValueError(f"knob {name} must be an integer")
    return expected(value)


def take(knobs: object, counter: str) -> bool:
    """Consume one count of a fault counter (call inside :meth:`KnobStore.locked`); ``-1`` never runs out."""
    remaining: int = getattr(knobs, counter)
    if remaining == 0:
        return False
    if remaining > 0:
        setattr(knobs, counter, remaining - 1)
    return True


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def control_routes(*, apply: Callable[[dict[str, Any]], object], state: Callable[[], Any]) -> list[BaseRoute]:
    """``POST /_emulator/faults`` and ``GET /_emulator/state``.

    The POST body is a JSON object handed to ``apply``, which raises ``ValueError`` (answered 400
    ``{"error": …}``) before changing anything if any part of it is bad; both routes answer ``state()``.
    """

    async def post_faults(request: Request) -> Response:
        try:
            changes = orjson.loads(await request.body())
            if not isinstance(changes, dict):
                raise ValueError("body must be a JSON object")
            apply(changes)
        except (orjson.JSONDecodeError, ValueError) as exc:
            return json_response({"error": str(exc)}, 400)
        return json_response(state())

    async def get_state(request: Request) -> Response:
        return json_response(state())

    return [
        Route("/_emulator/faults", post_faults, methods=["POST"]),
        Route("/_emulator/state", get_state, methods=["GET"]),
    ]


class EmulatorServer:
    """``start()``/``stop()``/``with`` for an emulator app served by a :class:`ServerThread`."""

    def __init__(self, app: Any, *, host: str, port: int) -> None:
        self._server = ServerThread(app, host=host, port=port, timeout_graceful_shutdown=1)

    @property
    def port(self) -> int:
        return self._server.port

    def start(self) -> Self:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def cli_parser(prog: str, description: str | None, *, port: int) -> argparse.ArgumentParser:
    """``python -m emulators.<name>``'s parser with the ``--host``/``--port`` every emulator takes."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=port)
    return parser


def serve_in_foreground(emulator: EmulatorServer, logger: str, announce: str, *args: object) -> None:
    """Log ``announce`` (where to point clients), then keep serving until Ctrl-C."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger(logger).info(announce, *args)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        emulator.stop()
