"""Twilio's REST API, the one endpoint voice-router uses: updating a live call.

``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`` is how the realtime pipeline moves a call
to legacy mid-call (``Url`` + ``Method``) and how a bridge hangs up (``Status=completed``). The emulator
answers exactly as Twilio does on the wire (form body, HTTP Basic ``AccountSid:AuthToken``, Call resource
JSON, error JSON ``{code, message, more_info, status}``) so the real ``twilio`` client library can be
pointed at it with ``client.api.base_url = emulator.url``.

Every accepted update is recorded in ``.updates``; the optional async ``on_update(call_sid, fields)`` hook is
how :class:`emulators.twilio.caller.TwilioCallSimulator` really redirects (or hangs up) the live call.
Without a simulator attached, any well-formed ``CA…`` SID is treated as an in-progress call.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import email.utils
import hmac
import re
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Self

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from emulators.runner import ServerThread

API_VERSION = "2010-04-01"
SID_PATTERN = re.compile(r"^(AC|CA)[0-9a-fA-F]{32}$")
UPDATE_FIELDS = (
    "Url",
    "Method",
    "Status",
    "FallbackUrl",
    "FallbackMethod",
    "StatusCallback",
    "StatusCallbackMethod",
    "Twiml",
    "TimeLimit",
)
ENDED_STATUSES = frozenset({"completed", "canceled", "failed", "busy", "no-answer"})

UpdateHook = Callable[[str, dict[str, str]], Awaitable[None]]


@dataclass
class RestFaults:
    """What the emulator does wrong on purpose; change it while running (or via ``/_emulator/faults``)."""

    latency_ms: float = 0.0  # added before answering every update
    fail_status: int | None = None  # answer every update with this HTTP status (e.g. 500, 503)
    fail_next: int = 0  # answer the next N updates with ``fail_status`` (or 500), then recover (clears it)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CallResource:
    """The parts of Twilio's Call resource the emulator tracks."""

    sid: str
    from_: str = "+15005550006"
    to: str = "+15005550001"
    status: str = "in-progress"
    direction: str = "inbound"
    date_created: float = field(default_factory=time.time)
    date_updated: float = field(default_factory=time.time)
    start_time: float = field(default_factory=time.time)
    end_time: float | None = None


def twilio_date(epoch: float) -> str:
    """Twilio's REST dates are RFC 2822 in UTC: ``Tue, 31 Aug 2010 20:36:28 +0000``."""
    return email.utils.formatdate(epoch, usegmt=False).replace("-0000", "+0000")


def error_body(status: int, code: int, message: str) -> bytes:
    """Twilio's REST error shape (what ``TwilioRestException`` parses)."""
    return orjson.dumps(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        }
    )


def _json(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="application/json")


class TwilioRestEmulator:
    """Fake ``api.twilio.com`` for call updates. ``start()`` serves it on a free loopback port."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        on_update: UpdateHook | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.on_update: UpdateHook | None = on_update
        self.faults = RestFaults()
        self.updates: list[tuple[str, dict[str, str]]] = []
        # When True only calls registered with ``open_call`` exist (the call simulator turns it on).
        self.known_calls_only = False
        self._calls: dict[str, CallResource] = {}
        self._recordings: dict[str, bytes] = {}  # RecordingSid -> WAV bytes
        self._lock = threading.Lock()
        self._host = host
        self._port = port
        self._server: ServerThread | None = None
        self.app = Starlette(
            routes=[
                Route(
                    f"/{API_VERSION}/Accounts/{{account_sid}}/Calls/{{call_sid}}.json",
                    self._update_call,
                    methods=["POST"],
                ),
                Route(
                    f"/{API_VERSION}/Accounts/{{account_sid}}/Calls/{{call_sid}}.json",
                    self._fetch_call,
                    methods=["GET"],
                ),
                Route(
                    f"/{API_VERSION}/Accounts/{{account_sid}}/Recordings/{{recording}}",
                    self._fetch_recording,
                    methods=["GET"],
                ),
                Route("/_emulator/faults", self._set_faults, methods=["POST", "GET"]),
            ]
        )

    # Lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> Self:
        self._server = ServerThread(self.app, host=self._host, port=self._port).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("TwilioRestEmulator is not started")
        return self._server.http_url

    # Call registry (used by the call simulator) ------------------------------------------------------
    def open_call(self, call_sid: str, *, from_: str, to: str, direction: str = "inbound") -> None:
        with self._lock:
            self._calls[call_sid] = CallResource(sid=call_sid, from_=from_, to=to, direction=direction)

    def end_call(self, call_sid: str, status: str = "completed") -> None:
        with self._lock:
            call = self._calls.get(call_sid)
            if call is not None and call.status not in ENDED_STATUSES:
                call.status = status
                call.end_time = call.date_updated = time.time()

    def call_status(self, call_sid: str) -> str | None:
        with self._lock:
            call = self._calls.get(call_sid)
            return call.status if call else None

    def add_recording(self, recording_sid: str, wav: bytes) -> str:
        """Keep ``wav`` and return its ``RecordingUrl`` (Twilio's form: no extension; ``.wav`` also works)."""
        with self._lock:
            self._recordings[recording_sid] = wav
        return f"{self.url}/{API_VERSION}/Accounts/{self.account_sid}/Recordings/{recording_sid}"

    def updates_for(self, call_sid: str) -> list[dict[str, str]]:
        return [fields for sid, fields in list(self.updates) if sid == call_sid]

    # HTTP --------------------------------------------------------------------------------------------
    def _authenticate(self, request: Request, account_sid: str) -> Response | None:
        header = request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        user = password = ""
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user = password = ""
        good = (
            hmac.compare_digest(user, self.account_sid)
            and hmac.compare_digest(password, self.auth_token)
            and account_sid == self.account_sid
        )
        if good:
            return None
        return Response(
            error_body(401, 20003, "Authenticate"),
            status_code=401,
            media_type="application/json",
            headers={"WWW-Authenticate": 'Basic realm="Twilio API"'},
        )

    def _resource(self, call: CallResource) -> bytes:
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{call.sid}.json"
        duration = None
        if call.end_time is not None:
            duration = str(int(call.end_time - call.start_time))
        return orjson.dumps(
            {
                "sid": call.sid,
                "account_sid": self.account_sid,
                "parent_call_sid": None,
                "to": call.to,
                "to_formatted": call.to,
                "from": call.from_,
                "from_formatted": call.from_,
                "phone_number_sid": None,
                "status": call.status,
                "direction": call.direction,
                "api_version": API_VERSION,
                "date_created": twilio_date(call.date_created),
                "date_updated": twilio_date(call.date_updated),
                "start_time": twilio_date(call.start_time),
                "end_time": twilio_date(call.end_time) if call.end_time else None,
                "duration": duration,
                "price": None,
                "price_unit": "USD",
                "answered_by": None,
                "forwarded_from": None,
                "caller_name": None,
                "group_sid": None,
                "queue_time": "0",
                "trunk_sid": None,
                "uri": uri,
                "subresource_uris": {
                    "notifications": uri.replace(".json", "/Notifications.json"),
                    "recordings": uri.replace(".json", "/Recordings.json"),
                    "streams": uri.replace(".json", "/Streams.json"),
                },
            }
        )

    def _lookup(self, call_sid: str, path: str) -> CallResource | Response:
        with self._lock:
            call = self._calls.get(call_sid)
            if call is None and not self.known_calls_only and SID_PATTERN.match(call_sid):
                call = self._calls[call_sid] = CallResource(sid=call_sid)
        if call is None or not call_sid.startswith("CA"):
            message = f"The requested resource {path} was not found"
            return _json(error_body(404, 20404, message), 404)
        return call

    async def _fetch_call(self, request: Request) -> Response:
        denied = self._authenticate(request, request.path_params["account_sid"])
        if denied is not None:
            return denied
        found = self._lookup(request.path_params["call_sid"], request.url.path)
        if isinstance(found, Response):
            return found
        with self._lock:
            return _json(self._resource(found))

    async def _update_call(self, request: Request) -> Response:
        denied = self._authenticate(request, request.path_params["account_sid"])
        if denied is not None:
            return denied
        call_sid: str = request.path_params["call_sid"]
        form = await request.form()
        fields = {name: str(form[name]) for name in UPDATE_FIELDS if name in form}

        faults = self.faults
        if faults.latency_ms > 0:
            await asyncio.sleep(faults.latency_ms / 1000.0)
        if faults.fail_next > 0 or faults.fail_status is not None:
            status = faults.fail_status or 500
            if faults.fail_next > 0:
                faults.fail_next -= 1
                if faults.fail_next == 0:
                    faults.fail_status = None  # the status was for those N updates: recover
            return _json(error_body(status, 20500, "Internal Server Error"), status)

        found = self._lookup(call_sid, request.url.path)
        if isinstance(found, Response):
            return found
        if "Url" in fields and "Twiml" in fields:
            # Twilio rejects both with a 400; the exact error code is not documented in our sources.
            return _json(error_body(400, 21205, "Twiml and Url parameters are mutually exclusive"), 400)
        status_value = fields.get("Status")
        if status_value is not None and status_value not in ("canceled", "completed"):
            message = f"Status must be one of canceled, completed (got {status_value!r})"
            return _json(error_body(400, 21218, message), 400)
        if not fields.get("Url") and not fields.get("Twiml") and status_value is None:
            return _json(error_body(400, 21201, "No 'Url', 'Twiml' or 'Status' parameter given"), 400)
        if fields.get("Method", "POST").upper() not in ("GET", "POST"):
            return _json(error_body(400, 21206, "Method must be GET or POST"), 400)
        with self._lock:
            if found.status in ENDED_STATUSES:
                return _json(error_body(400, 21220, "Call is not in-progress. Cannot redirect."), 400)
            found.date_updated = time.time()
            if status_value is not None:
                found.status = status_value
                found.end_time = found.date_updated
        self.updates.append((call_sid, fields))
        if self.on_update is not None:
            await self.on_update(call_sid, fields)
        with self._lock:
            return _json(self._resource(found))

    async def _fetch_recording(self, request: Request) -> Response:
        """Recordings are media: Twilio serves them with HTTP Basic when "enforce auth on media" is on."""
        denied = self._authenticate(request, request.path_params["account_sid"])
        if denied is not None:
            return denied
        name: str = request.path_params["recording"]
        sid, _, extension = name.partition(".")
        with self._lock:
            wav = self._recordings.get(sid)
        if wav is None or extension not in ("", "wav"):
            message = f"The requested resource {request.url.path} was not found"
            return _json(error_body(404, 20404, message), 404)
        return Response(wav, media_type="audio/x-wav")

    async def _set_faults(self, request: Request) -> Response:
        if request.method == "POST":
            body = await request.body()
            try:
                changes = orjson.loads(body or b"{}")
            except orjson.JSONDecodeError:
                return _json(orjson.dumps({"error": "body must be a JSON object"}), 400)
            if not isinstance(changes, dict):
                return _json(orjson.dumps({"error": "body must be a JSON object"}), 400)
            known = set(RestFaults.__dataclass_fields__)
            unknown = sorted(set(changes) - known)
            if unknown:
                return _json(orjson.dumps({"error": f"unknown fault fields: {', '.join(unknown)}"}), 400)
            problem = _fault_type_error(changes)
            if problem is not None:
                return _json(orjson.dumps({"error": problem}), 400)
            for name, value in changes.items():
                setattr(self.faults, name, value)
        return _json(orjson.dumps(self.faults.to_dict()))


def _fault_type_error(changes: dict[str, Any]) -> str | None:
    """Why ``changes`` cannot be applied to :class:`RestFaults` (a number where one is due), or ``None``."""
    for name, value in changes.items():
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if name == "fail_status" and value is not None and not (number and isinstance(value, int)):
            return "fail_status must be an HTTP status (an integer) or null"
        if name == "fail_next" and not (number and isinstance(value, int)):
            return "fail_next must be an integer"
        if name == "latency_ms" and not number:
            return "latency_ms must be a number"
    return None


def main(argv: list[str] | None = None) -> None:
    """``python -m emulators.twilio.rest --port P --account-sid AC… --auth-token T``."""
    parser = argparse.ArgumentParser(description="Twilio REST (call update) emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--account-sid", default="AC" + "0" * 32)
    parser.add_argument("--auth-token", default="local-twilio-token")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    emulator = TwilioRestEmulator(args.account_sid, args.auth_token, host=args.host, port=args.port)
    emulator.faults.latency_ms = args.latency_ms
    emulator.start()
    print(f"Twilio REST emulator on {emulator.url} (account {args.account_sid})", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()


if __name__ == "__main__":
    main()
