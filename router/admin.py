"""The operators' admin API: read and change the rollout, force the breaker, read audit and calls.

Every change needs a ``reason`` and is audited with actor, before and after. Validation errors are
422 with ``{"error": "<field>: <what is wrong>"}`` and change nothing.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from flags.breaker import BreakerConflictError, CircuitBreaker
from flags.rollout import Mode, RolloutConfig, Stickiness
from router.rollout_service import RolloutConflict, RolloutService
from router.store.base import StateStore, StoreOutcomeUnknown, StoreUnavailable

log = logging.getLogger("router.admin")

E164 = re.compile(r"\+[1-9][0-9]{6,14}")  # ASCII digits: Twilio sends no other kind
MAX_REASON = 500
Handler = Callable[[Request], Awaitable[Response]]


class ComparisonBuilder(Protocol):
    """The comparison report as JSON: calls since ``since`` (epoch seconds, None: all), only the same sticky
    bucket population when ``same_population`` (``router.report_population``)."""

    def __call__(
        self, since: float | None, *, same_population: bool = False
    ) -> Awaitable[dict[str, Any]]: ...


class Invalid(Exception):
    """A request field is wrong; the message names the field."""


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _error(message: str, status: int) -> Response:
    return _json({"error": message}, status)


def parse_percent(value: Any) -> int:
    """0..100 with at most two decimals, as basis points. Strings and booleans are refused."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise Invalid("percent: must be a number between 0 and 100")
    try:
        number = Decimal(str(value))
    except InvalidOperation as exc:
        raise Invalid("percent: must be a number between 0 and 100") from exc
    if isinstance(value, str) or not number.is_finite():
        raise Invalid("percent: must be a number between 0 and 100")
    if number < 0 or number > 100:
        raise Invalid("percent: must be between 0 and 100")
    exponent = number.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2:
        raise Invalid("percent: at most two decimals (0.01% steps)")
    return int(number * 100)


def parse_flag(name: str, value: str | None) -> bool:
    """A yes/no query parameter: absent, ``0``, ``false`` or ``no`` is False; ``1``, ``true``, ``yes`` True."""
    text = (value or "").strip().lower()
    if text in {"", "0", "false", "no"}:
        return False
    if text in {"1", "true", "yes"}:
        return True
    raise Invalid(f"{name}: use true or false")


def parse_since(value: str | None) -> float | None:
    """``1h``, ``30m``, ``2d``, ``45s`` → an epoch-seconds cut-off; None for no limit."""
    if not value:
        return None
    # At most nine digits: longer than any record's age, and a count a float can take (past about 300
    # digits the subtraction below overflowed into a 500).
    match = re.fullmatch(r"(\d{1,9})([smhd])", value.strip())
    if not match:
        raise Invalid("since: use a duration like 30m, 1h or 2d (at most 9 digits)")
    seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return time.time() - seconds


def _iso(epoch: float) -> str | None:
    """ISO 8601 UTC like the breaker status's ``since`` (None before any transition)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch)) if epoch else None


def _reason(body: dict[str, Any]) -> str:
    reason = body.get("reason")
    if not isinstance(reason, str) or not (reason := reason.strip()):
        raise Invalid("reason: required (say why you are changing it)")
    if len(reason) > MAX_REASON:
        raise Invalid(f"reason: at most {MAX_REASON} characters")
    return reason


def _actor(body: dict[str, Any]) -> str:
    actor = body.get("actor", "admin-api")
    if not isinstance(actor, str) or not actor.strip() or len(actor) > 100:
        raise Invalid("actor: must be a short non-empty string")
    return actor.strip()


def _limit(request: Request, default: int = 50) -> int:
    raw = request.query_params.get("limit", str(default))
    # isascii() too: str.isdigit() also accepts "²", which int() then refuses with a ValueError (a 500).
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 10_000:
        raise Invalid("limit: must be a whole number from 1 to 10000")
    return int(raw)


class AdminApi:
    def __init__(
        self,
        *,
        token: str,
        rollout: RolloutService,
        breaker: CircuitBreaker,
        store: StateStore,
        comparison: ComparisonBuilder | None = None,
        flush_records: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._token = token.encode()
        self._rollout = rollout
        self._breaker = breaker
        self._store = store
        self._comparison = comparison
        self._flush_records = flush_records

    def routes(self) -> list[Route]:
        return [
            Route("/admin/rollout", self._guard(self.get_rollout), methods=["GET"]),
            Route("/admin/rollout", self._guard(self.put_rollout), methods=["PUT"]),
            Route("/admin/rollout/{list_name:str}", self._guard(self.change_list), methods=["POST"]),
            Route("/admin/breaker", self._guard(self.get_breaker), methods=["GET"]),
            Route("/admin/breaker", self._guard(self.post_breaker), methods=["POST"]),
            Route("/admin/audit", self._guard(self.get_audit), methods=["GET"]),
            Route("/admin/calls", self._guard(self.get_calls), methods=["GET"]),
            Route("/admin/comparison", self._guard(self.get_comparison), methods=["GET"]),
        ]

    def _authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented or not self._token:
            return False
        return hmac.compare_digest(presented.strip().encode(), self._token)

    def _guard(self, handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            if not self._authorised(request):
                return _error("missing or wrong bearer token", 401)
            try:
                return await handler(request)
            except Invalid as exc:
                return _error(str(exc), 422)
            except RolloutConflict as exc:
                return _error(str(exc), 409)
            except BreakerConflictError:
                return _error(
                    "the breaker kept changing under this request; nothing was changed, try again", 409
                )
            except StoreOutcomeUnknown:
                log.error("state store did not confirm an admin change in time")
                return _error(
                    "the state store did not confirm the change in time: it may have been made; "
                    "read the current state before trying again",
                    503,
                )
            except StoreUnavailable:
                log.error("state store unreachable during an admin call")
                return _error("state store unreachable; nothing was changed", 503)

        return endpoint

    async def _body(self, request: Request) -> dict[str, Any]:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            raise Invalid("body: must be a JSON object") from exc
        if not isinstance(body, dict):
            raise Invalid("body: must be a JSON object")
        return body

    # Rollout ---------------------------------------------------------------------------------------
    async def get_rollout(self, request: Request) -> Response:
        return _json((await self._rollout.current()).to_dict())

    async def put_rollout(self, request: Request) -> Response:
        body = await self._body(request)
        unknown = set(body) - {"percent", "mode", "stickiness", "reason", "actor"}
        if unknown:
            raise Invalid(f"{sorted(unknown)[0]}: unknown field")
        changes: dict[str, Any] = {}
        if "percent" in body:
            changes["percent_bp"] = parse_percent(body["percent"])
        if "mode" in body:
            try:
                changes["mode"] = Mode(body["mode"])
            except ValueError as exc:
                raise Invalid(f"mode: must be one of {', '.join(m.value for m in Mode)}") from exc
        if "stickiness" in body:
            try:
                changes["stickiness"] = Stickiness(body["stickiness"])
            except ValueError as exc:
                raise Invalid(f"stickiness: must be one of {', '.join(s.value for s in Stickiness)}") from exc
        if not changes:
            raise Invalid("percent: give at least one of percent, mode, stickiness")
        reason, actor = _reason(body), _actor(body)
        action = "rollout." + "+".join(k.removesuffix("_bp") for k in changes)
        config = await self._rollout.change(action, changes, actor=actor, reason=reason)
        return _json(config.to_dict())

    async def change_list(self, request: Request) -> Response:
        list_name = request.path_params["list_name"]
        if list_name not in {"allow", "deny"}:
            return _error("no such list; use allow or deny", 404)
        body = await self._body(request)
        op = body.get("op")
        if not isinstance(op, str) or op not in {"add", "remove"}:
            raise Invalid("op: must be add or remove")
        number = body.get("number")
        if not isinstance(number, str) or not E164.fullmatch(number):
            raise Invalid("number: must be an E.164 number like +14155550123")
        reason, actor = _reason(body), _actor(body)

        def edit(before: RolloutConfig) -> dict[str, frozenset[str]]:
            # From the config each compare-and-set attempt read: a list built from an earlier read would
            # undo an operator's change that landed in between.
            members: frozenset[str] = getattr(before, list_name)
            return {list_name: members | {number} if op == "add" else members - {number}}

        config = await self._rollout.change(f"rollout.{list_name}.{op}", edit, actor=actor, reason=reason)
        return _json(config.to_dict())

    # Breaker ---------------------------------------------------------------------------------------
    async def get_breaker(self, request: Request) -> Response:
        return _json((await self._breaker.status()).to_dict())

    async def post_breaker(self, request: Request) -> Response:
        body = await self._body(request)
        action = body.get("action")
        if not isinstance(action, str) or action not in {"open", "close", "reset"}:
            raise Invalid("action: must be open, close or reset")
        reason, actor = _reason(body), _actor(body)
        # The change and its audit entry are one write: when it fails (StoreUnavailable, a 503 "nothing was
        # changed"), neither is stored.
        if action == "open":
            doc = await self._breaker.force_open(actor=actor, reason=reason)
        elif action == "close":
            doc = await self._breaker.force_closed(actor=actor, reason=reason)
        else:
            doc = await self._breaker.reset(actor=actor, reason=reason)
        try:
            status = await self._breaker.status()
        except StoreUnavailable:
            # Changed and audited; only the read-back failed, so not the 503 that says nothing was changed.
            log.error("state store unreachable reading the breaker back after an operator change")
            return _json({"state": doc.state.value, "since": _iso(doc.since), "reason": doc.reason})
        return _json(status.to_dict())

    # Audit, calls, comparison ------------------------------------------------------------------------
    async def get_audit(self, request: Request) -> Response:
        entries = await self._store.list_audit(_limit(request))
        return _json([entry.to_dict() for entry in entries])

    async def get_calls(self, request: Request) -> Response:
        since, limit = parse_since(request.query_params.get("since")), _limit(request)
        await self._flushed()
        return _json(await self._store.list_calls(limit, since=since))

    async def get_comparison(self, request: Request) -> Response:
        if self._comparison is None:
            return _error("comparison is not available in this build", 404)
        since = parse_since(request.query_params.get("since", "1h"))
        same_population = parse_flag("same_population", request.query_params.get("same_population"))
        await self._flushed()
        return _json(await self._comparison(since, same_population=same_population))

    async def _flushed(self) -> None:
        """Operators expect to see the calls just routed: write the webhook's pending records first."""
        if self._flush_records is not None:
            await self._flush_records()
