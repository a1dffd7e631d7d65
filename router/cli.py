"""``python -m router``: the service itself (``serve``) and the operators' commands.

Operator commands talk to a running instance's admin API (``--url``, default ``$ROUTER_URL`` or
http://127.0.0.1:8000, with ``$ADMIN_TOKEN``). Exit status 0 on success, 1 with a one-line error.
"""

from __future__ import annotations

import argparse
import getpass
import math
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import httpx
import orjson


class CommandError(Exception):
    """A one-line, human-readable failure."""


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors follow the contract too: one line on stderr and exit status 1 (argparse: usage, exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(1, f"error: {self.prog}: {message}\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="python -m router", description=__doc__)
    parser.add_argument("--url", default=os.environ.get("ROUTER_URL", "http://127.0.0.1:8000"))
    # ``--url`` is also accepted after an operator command (``rollout status --url …``); SUPPRESS keeps a
    # subcommand that was not given it from overwriting the value given before the command.
    url = _OneLineParser(add_help=False)
    url.add_argument("--url", default=argparse.SUPPRESS, help="the instance's base URL")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--local", action="store_true", help="wire emulators in for missing credentials")
    serve.add_argument("--log-level", default="info")

    rollout = commands.add_parser("rollout", help="read or change the rollout").add_subparsers(
        dest="rollout_command", required=True
    )
    status = rollout.add_parser("status", parents=[url])
    status.add_argument("--json", action="store_true")
    set_cmd = rollout.add_parser("set", parents=[url])
    set_cmd.add_argument("percent")
    set_cmd.add_argument("--reason", required=True)
    mode = rollout.add_parser("mode", parents=[url])
    mode.add_argument("mode", choices=["split", "legacy_only", "realtime_only"])
    mode.add_argument("--reason", required=True)
    for list_name in ("allow", "deny"):
        members = rollout.add_parser(list_name, parents=[url])
        members.add_argument("op", choices=["add", "remove"])
        members.add_argument("number")
        members.add_argument("--reason", required=True)

    breaker = commands.add_parser("breaker", parents=[url], help="inspect or force the realtime breaker")
    breaker.add_argument("action", choices=["status", "open", "close", "reset"])
    breaker.add_argument("--reason")
    breaker.add_argument("--json", action="store_true")

    audit = commands.add_parser("audit", parents=[url], help="who changed what, when, and why")
    audit.add_argument("--limit", type=int, default=20)
    audit.add_argument("--json", action="store_true")

    report = commands.add_parser(
        "report", parents=[url], help="latency and outcome comparison of the two pipelines"
    )
    report.add_argument("--since", default="1h")
    report.add_argument("--json", action="store_true")
    report.add_argument("--html", help="also write the HTML report to this path")
    report.add_argument(
        "--same-population",
        action="store_true",
        help="only the calls of the sticky buckets both arms served in the window (a ramp's buckets)",
    )
    return parser


class AdminClient:
    def __init__(self, base_url: str, token: str, transport: httpx.BaseTransport | None = None) -> None:
        if not token:
            raise CommandError("ADMIN_TOKEN is not set")
        try:
            self._client = httpx.Client(
                base_url=base_url,
                headers={"Authorization": f"Bearer {token}"},
                timeout=10.0,
                transport=transport,
            )
        except httpx.InvalidURL as exc:  # not an HTTPError: it ended in a traceback
            raise CommandError(f"--url {base_url!r}: {exc}") from exc

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._client.request(method, path, **kwargs)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise CommandError(f"cannot reach {self._client.base_url}: {exc}") from exc
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code >= 400:
            raise CommandError(f"{response.status_code}: {_error_message(response, data)}")
        if data is None:  # the admin API always answers JSON: --url points at something else
            raise CommandError(
                f"{self._client.base_url} did not answer with the admin API's JSON: {NOT_JSON_HINT}"
            )
        return data


NOT_JSON_HINT = "is --url a voice-router instance?"


def _error_message(response: httpx.Response, data: Any) -> str:
    """One line: the admin API's ``error``, else the status's reason (an HTML error page from a proxy or
    another service is many lines of markup, not a message)."""
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return " ".join(data["error"].split())
    text = " ".join(response.text.split())
    if response.headers.get("content-type", "").startswith("text/plain") and 0 < len(text) <= 200:
        return text
    return f"{response.reason_phrase or 'error'} ({NOT_JSON_HINT})"


def _actor() -> str:
    try:
        return os.environ.get("ROUTER_ACTOR") or getpass.getuser()
    except OSError:
        return "cli"


def _print_rollout(data: dict[str, Any]) -> None:
    print(f"percent:    {data['percent']}%")
    print(f"mode:       {data['mode']}")
    print(f"stickiness: {data['stickiness']}")
    print(f"allow:      {', '.join(data['allow']) or '-'}")
    print(f"deny:       {', '.join(data['deny']) or '-'}")
    print(f"updated:    {data['updated_at'] or '-'} by {data['updated_by'] or '-'}")


def _print_breaker(data: dict[str, Any]) -> None:
    for key in ("state", "failure_rate", "slow_call_rate", "calls_in_window", "since", "reason"):
        if key in data:
            print(f"{key + ':':17} {data[key]}")


def _print_audit(entries: list[dict[str, Any]]) -> None:
    import time

    for entry in entries:
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry["at"]))
        print(f"{at}Z  {entry['actor']:<16} {entry['action']:<24} {entry['reason']}")


def _percent_value(text: str) -> float | int | str:
    """The number an operator typed ('25', '12.5', '1e1'); anything else goes as typed, for the server to
    refuse with its own message (NaN and infinities too: JSON has no such numbers)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


def run_operator_command(args: argparse.Namespace, client: AdminClient) -> int:
    actor = _actor()
    if args.command == "rollout":
        sub = args.rollout_command
        if sub == "status":
            data = client.request("GET", "/admin/rollout")
        elif sub == "set":
            percent = _percent_value(args.percent)
            data = client.request(
                "PUT", "/admin/rollout", json={"percent": percent, "reason": args.reason, "actor": actor}
            )
        elif sub == "mode":
            data = client.request(
                "PUT", "/admin/rollout", json={"mode": args.mode, "reason": args.reason, "actor": actor}
            )
        else:
            data = client.request(
                "POST",
                f"/admin/rollout/{sub}",
                json={"op": args.op, "number": args.number, "reason": args.reason, "actor": actor},
            )
        if getattr(args, "json", False):
            print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        else:
            _print_rollout(data)
    elif args.command == "breaker":
        if args.action == "status":
            data = client.request("GET", "/admin/breaker")
        else:
            if not args.reason:
                raise CommandError("--reason is required to change the breaker")
            data = client.request(
                "POST", "/admin/breaker", json={"action": args.action, "reason": args.reason, "actor": actor}
            )
        if args.json:
            print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        else:
            _print_breaker(data)
    elif args.command == "audit":
        entries = client.request("GET", "/admin/audit", params={"limit": args.limit})
        if args.json:
            print(orjson.dumps(entries, option=orjson.OPT_INDENT_2).decode())
        else:
            _print_audit(entries)
    elif args.command == "report":
        params = {"since": args.since}
        if args.same_population:
            params["same_population"] = "true"
        data = client.request("GET", "/admin/comparison", params=params)
        _print_report(data, as_json=args.json, html_path=args.html)
    return 0


def _print_report(data: dict[str, Any], *, as_json: bool, html_path: str | None) -> None:
    from router.comparison import Comparison, render_table
    from router.report_html import render_html

    if as_json:
        print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    comparison = Comparison.from_dict(data)
    if not as_json:
        print(render_table(comparison))
    if html_path:
        try:
            with open(html_path, "w", encoding="utf-8") as handle:
                handle.write(render_html(comparison))
        except OSError as exc:  # a missing directory, a read-only path: one line, not a traceback
            raise CommandError(f"cannot write the HTML report to {html_path}: {exc.strerror or exc}") from exc
        print(f"HTML report: {html_path}", file=sys.stderr)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def serve(args: argparse.Namespace) -> int:
    import uvicorn
    import yaml
    from pydantic import ValidationError

    from router.app import create_app
    from router.observability import configure_logging
    from router.server_options import uvicorn_options
    from router.settings import Settings
    from router.store.factory import prepare_sqlite_folder

    configure_logging(args.log_level)
    # uvicorn re-raises SIGTERM after its graceful shutdown; turning it into SystemExit lets the
    # ``finally`` below stop the local profile's emulators instead of dying with them still running.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        settings = Settings()
    except ValidationError as exc:
        for error in exc.errors():
            name = str(error["loc"][0]).upper() if error["loc"] else "settings"
            print(f"invalid setting {name}: {error['msg']}", file=sys.stderr)
        return 1
    if not args.local:
        missing = settings.missing_required()
        if missing:
            for name in missing:
                print(f"missing required setting: {name}", file=sys.stderr)
            return 1
    running: list[Any] = []
    try:
        if args.local:
            from emulators.local_profile import start_local_services

            try:
                settings, running = start_local_services(settings, host=args.host, port=args.port)
            except (RuntimeError, OSError) as exc:  # Azurite not installed or not starting, a port taken
                print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
                return 1
        try:
            app = create_app(settings)
            prepare_sqlite_folder(settings.state_url)
        except (ValueError, OSError) as exc:  # e.g. a STATE_URL of an unknown scheme, or an unwritable folder
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except yaml.YAMLError as exc:  # an AGENT_PROFILE that is no YAML (its message names the file)
            print(f"error: not valid YAML: {' '.join(str(exc).split())}", file=sys.stderr)
            return 1
        uvicorn.run(
            app,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            # uvicorn formats every access line's arguments before the logger drops it; skip that work
            # when the level would drop it anyway.
            access_log=args.log_level.lower() in {"trace", "debug", "info"},
            **uvicorn_options(settings),
        )
    finally:
        for service in running:
            service.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return serve(args)
        client = AdminClient(args.url, os.environ.get("ADMIN_TOKEN", ""))
        try:
            return run_operator_command(args, client)
        except (KeyError, TypeError, AttributeError) as exc:
            # A 200 in JSON that is not the admin API's answer (another service at --url): one line.
            raise CommandError(
                f"the answer from {args.url} is not the admin API's ({type(exc).__name__}: {exc})"
            ) from None
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
