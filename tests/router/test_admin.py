"""The admin API: bearer auth, validation that names the field, audited changes, breaker controls."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from router.store.base import StoreOutcomeUnknown
from router.store.factory import open_store
from tests.router.conftest import RunningRouter


def audit(router: RunningRouter) -> list[dict]:
    response = router.admin("GET", "/admin/audit", params={"limit": 100})
    assert response.status_code == 200
    return response.json()


@pytest.mark.parametrize(
    "token", [None, "wrong-token", "test-admin-token-but-longer", "raw:Basic test-admin-token"]
)
def test_admin_requires_the_exact_bearer_token(router: RunningRouter, token: str | None) -> None:
    assert router.admin("GET", "/admin/rollout", token=token).status_code == 401
    response = router.admin("PUT", "/admin/rollout", token=token, json={"percent": 50, "reason": "x"})
    assert response.status_code == 401
    assert response.json() == {"error": "missing or wrong bearer token"}
    assert router.admin("GET", "/admin/rollout").json()["percent"] == 0.0
    assert audit(router) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"percent": 101}, "percent"),
        ({"percent": -1}, "percent"),
        ({"percent": "abc"}, "percent"),
        ({"percent": "50"}, "percent"),
        ({"percent": 12.345}, "percent"),
        ({"percent": True}, "percent"),
        ({"percent": None}, "percent"),
        ({"mode": "sometimes"}, "mode"),
        ({"stickiness": "ip"}, "stickiness"),
        ({"percent": 10, "colour": "red"}, "colour"),
    ],
)
def test_invalid_rollout_changes_are_422_naming_the_field_and_change_nothing(
    router: RunningRouter, body: dict, field: str
) -> None:
    response = router.admin("PUT", "/admin/rollout", json={**body, "reason": "testing"})
    assert response.status_code == 422
    assert response.json()["error"].startswith(f"{field}:")
    state = router.admin("GET", "/admin/rollout").json()
    assert state["percent"] == 0.0 and state["mode"] == "split" and state["version"] == 0
    assert audit(router) == []


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_changes_without_a_reason_are_refused(router: RunningRouter, reason: str | None) -> None:
    body: dict = {"percent": 20}
    if reason is not None:
        body["reason"] = reason
    response = router.admin("PUT", "/admin/rollout", json=body)
    assert response.status_code == 422
    assert response.json()["error"].startswith("reason:")
    breaker = router.admin("POST", "/admin/breaker", json={"action": "open"})
    assert breaker.status_code == 422
    assert router.admin("GET", "/admin/breaker").json()["state"] == "closed"
    assert audit(router) == []


def test_a_reason_is_measured_without_its_surrounding_whitespace(router: RunningRouter) -> None:
    """The 500-character cap was applied before the trim: a pasted reason with a trailing newline block
    was refused although what would be stored was short enough."""
    reason = "x" * 490
    response = router.admin("PUT", "/admin/rollout", json={"percent": 5, "reason": f"  {reason}{' ' * 20}\n"})
    assert response.status_code == 200, response.text
    assert audit(router)[0]["reason"] == reason
    too_long = router.admin("PUT", "/admin/rollout", json={"percent": 6, "reason": "y" * 501})
    assert too_long.status_code == 422 and too_long.json()["error"].startswith("reason:")


def test_malformed_json_body_is_422(router: RunningRouter) -> None:
    response = router.admin("PUT", "/admin/rollout", content=b"{not json")
    assert response.status_code == 422
    assert response.json()["error"].startswith("body:")


def test_rollout_change_is_audited_with_actor_before_after_and_reason(router: RunningRouter) -> None:
    response = router.admin(
        "PUT", "/admin/rollout", json={"percent": 12.34, "reason": "first ramp", "actor": "alice"}
    )
    assert response.status_code == 200
    state = response.json()
    assert state["percent"] == 12.34 and state["updated_by"] == "alice" and state["version"] == 1
    router.admin(
        "PUT", "/admin/rollout", json={"mode": "legacy_only", "reason": "incident 42", "actor": "bob"}
    )
    entries = audit(router)
    assert [e["action"] for e in entries] == ["rollout.mode", "rollout.percent"]
    newest, first = entries
    assert newest["actor"] == "bob" and newest["reason"] == "incident 42"
    assert newest["before"]["mode"] == "split" and newest["after"]["mode"] == "legacy_only"
    assert first["before"] is None and first["after"]["percent"] == 12.34
    assert router.admin("GET", "/admin/rollout").json()["mode"] == "legacy_only"


def test_a_change_whose_audit_entry_cannot_be_written_is_not_made(
    router: RunningRouter, tmp_path: Path
) -> None:
    """The 503 says "nothing was changed": then the rollout must be unchanged, not live and unaudited."""
    with sqlite3.connect(tmp_path / "state.db") as other:  # the router's own SQLite file
        other.execute(
            "CREATE TRIGGER audit_fails BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'disk I/O (test)'); END"
        )
    response = router.admin("PUT", "/admin/rollout", json={"percent": 50, "reason": "ramp"})
    assert response.status_code == 503 and "nothing was changed" in response.json()["error"]
    with sqlite3.connect(tmp_path / "state.db") as other:
        other.execute("DROP TRIGGER audit_fails")
    assert router.admin("GET", "/admin/rollout").json()["percent"] == 0.0
    assert audit(router) == []


@pytest.mark.parametrize(
    ("path", "body", "method"),
    [
        ("/admin/rollout", {"percent": 50, "reason": "ramp"}, "swap_rollout"),
        ("/admin/breaker", {"action": "open", "reason": "vendor incident"}, "breaker_swap"),
    ],
)
def test_a_change_the_store_did_not_confirm_is_not_answered_nothing_was_changed(
    router: RunningRouter, monkeypatch: pytest.MonkeyPatch, path: str, body: dict[str, Any], method: str
) -> None:
    """Redis ran the write but its reply timed out twice: "nothing was changed" would be false."""

    async def unconfirmed(*args: Any, **kwargs: Any) -> bool:
        raise StoreOutcomeUnknown("a write was not confirmed in time and may have been made (test)")

    monkeypatch.setattr(router.store._inner, method, unconfirmed)
    response = router.admin("POST" if "breaker" in path else "PUT", path, json=body)
    assert response.status_code == 503
    error = response.json()["error"]
    assert "may have been made" in error and "nothing was changed" not in error


def test_kill_switch_routes_everyone_to_legacy(router: RunningRouter) -> None:
    router.admin("PUT", "/admin/rollout", json={"percent": 100, "reason": "go"})
    assert router.incoming_call("CA" + "1" * 32).headers["X-Voice-Router-Pipeline"] == "realtime"
    router.admin("PUT", "/admin/rollout", json={"mode": "legacy_only", "reason": "kill"})
    response = router.incoming_call("CA" + "2" * 32)
    assert response.headers["X-Voice-Router-Pipeline"] == "legacy"
    assert response.headers["X-Voice-Router-Reason"] == "kill_switch"


def test_allow_and_deny_lists(router: RunningRouter) -> None:
    vip, blocked = "+14155550111", "+14155550222"
    bad = router.admin(
        "POST", "/admin/rollout/allow", json={"op": "add", "number": "555-1234", "reason": "x"}
    )
    assert bad.status_code == 422 and bad.json()["error"].startswith("number:")
    for number in ("+\u0661\u0664\u0661\u0665\u0665\u0665\u0665\u0660\u0661\u0661\u0661", "+14155550111\n"):
        odd = router.admin(
            "POST", "/admin/rollout/allow", json={"op": "add", "number": number, "reason": "x"}
        )
        assert odd.status_code == 422, number  # Arabic-Indic digits, a trailing newline: never a caller ID
    bad_op = router.admin("POST", "/admin/rollout/allow", json={"op": "toggle", "number": vip, "reason": "x"})
    assert bad_op.status_code == 422 and bad_op.json()["error"].startswith("op:")
    assert (
        router.admin(
            "POST", "/admin/rollout/vip", json={"op": "add", "number": vip, "reason": "x"}
        ).status_code
        == 404
    )
    ok = router.admin(
        "POST", "/admin/rollout/allow", json={"op": "add", "number": vip, "reason": "beta tester"}
    )
    assert ok.status_code == 200 and ok.json()["allow"] == [vip]
    router.admin("POST", "/admin/rollout/deny", json={"op": "add", "number": blocked, "reason": "complained"})
    router.admin("PUT", "/admin/rollout", json={"percent": 100, "reason": "all in"})
    allowed = router.incoming_call("CA" + "3" * 32, vip)
    assert allowed.headers["X-Voice-Router-Pipeline"] == "realtime"
    denied = router.incoming_call("CA" + "4" * 32, blocked)
    assert denied.headers["X-Voice-Router-Pipeline"] == "legacy"
    assert denied.headers["X-Voice-Router-Reason"] == "deny_list"
    router.admin(
        "POST", "/admin/rollout/deny", json={"op": "remove", "number": blocked, "reason": "resolved"}
    )
    assert router.admin("GET", "/admin/rollout").json()["deny"] == []
    actions = [e["action"] for e in audit(router)]
    assert actions == ["rollout.deny.remove", "rollout.percent", "rollout.deny.add", "rollout.allow.add"]


def test_concurrent_list_changes_each_keep_the_other(
    router: RunningRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two operators add different numbers at once: both stay on the list, whichever swap loses and retries.

    The first two rollout reads wait for each other, so both requests read the same version before either
    writes; the loser's retry must build its list from the config it re-reads, not from its first read.
    """
    inner_get = router.store._inner.get_rollout
    arrived, both_read = 0, asyncio.Event()

    async def get_rollout_in_step() -> Any:
        nonlocal arrived
        stored = await inner_get()
        arrived += 1
        if arrived <= 2:
            if arrived == 2:
                both_read.set()
            await both_read.wait()
        return stored

    monkeypatch.setattr(router.store._inner, "get_rollout", get_rollout_in_step)
    numbers = ("+14155550101", "+14155550102")
    statuses: dict[str, int] = {}

    def add(number: str) -> None:
        body = {"op": "add", "number": number, "reason": "test numbers"}
        statuses[number] = router.admin("POST", "/admin/rollout/allow", json=body).status_code

    threads = [threading.Thread(target=add, args=(number,)) for number in numbers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    monkeypatch.undo()
    assert statuses == dict.fromkeys(numbers, 200)
    assert router.admin("GET", "/admin/rollout").json()["allow"] == list(numbers)
    newest, first = (entry["after"]["allow"] for entry in audit(router))
    assert newest == list(numbers) and len(first) == 1, "the audit shows each change on top of the other"


def test_operator_breaker_controls_route_and_audit(router: RunningRouter) -> None:
    router.admin("PUT", "/admin/rollout", json={"percent": 100, "reason": "all in"})
    bad = router.admin("POST", "/admin/breaker", json={"action": "explode", "reason": "x"})
    assert bad.status_code == 422 and bad.json()["error"].startswith("action:")
    opened = router.admin(
        "POST", "/admin/breaker", json={"action": "open", "reason": "VL incident", "actor": "oncall"}
    )
    assert opened.status_code == 200 and opened.json()["state"] == "forced_open"
    response = router.incoming_call("CA" + "5" * 32)
    assert response.headers["X-Voice-Router-Pipeline"] == "legacy"
    assert response.headers["X-Voice-Router-Reason"] == "breaker_open"
    closed = router.admin("POST", "/admin/breaker", json={"action": "close", "reason": "ignore noise"})
    assert closed.json()["state"] == "forced_closed"
    reset = router.admin("POST", "/admin/breaker", json={"action": "reset", "reason": "back to normal"})
    assert reset.json()["state"] == "closed"
    status = router.admin("GET", "/admin/breaker").json()
    assert {"state", "failure_rate", "slow_call_rate", "calls_in_window", "since"} <= set(status)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", status["since"])
    transitions = [e for e in audit(router) if e["action"].startswith("breaker")]
    assert [(e["before"]["state"], e["after"]["state"]) for e in transitions] == [
        ("forced_closed", "closed"),
        ("forced_open", "forced_closed"),
        ("closed", "forced_open"),
    ]
    assert transitions[-1]["actor"] == "oncall" and "VL incident" in transitions[-1]["reason"]
    metrics = router.client.get("/metrics").text
    assert 'voice_router_breaker_transitions_total{from_state="closed",to_state="forced_open"} 1.0' in metrics


def add_outcomes(state_url: str, failures: int) -> None:
    """Failed realtime calls in the breaker's window, as a realtime worker records them (its own connection)."""

    async def record() -> None:
        store = open_store(state_url)
        await store.open()
        try:
            for _ in range(failures):
                await store.breaker_add_outcome(int(time.time()), failed=True, slow=False)
        finally:
            await store.close()

    asyncio.run(record())


@pytest.fixture(params=["sqlite", "redis"])
def failing_audit(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Callable[[bool], None]]:
    """A state URL and a switch that makes every audit write fail there while the rest of the store works:
    a trigger on SQLite's audit table; in Redis, an audit sequence that is not a number (INCR fails)."""
    if request.param == "sqlite":
        path = tmp_path / "state.db"

        def sqlite_switch(failing: bool) -> None:
            with sqlite3.connect(path) as other:
                if failing:
                    other.execute(
                        "CREATE TRIGGER audit_fails BEFORE INSERT ON audit "
                        "BEGIN SELECT RAISE(ABORT, 'disk I/O (test)'); END"
                    )
                else:
                    other.execute("DROP TRIGGER audit_fails")

        return f"sqlite:///{path}", sqlite_switch
    url: str = request.getfixturevalue("redis_url")

    saved: list[bytes | str | None] = []

    def redis_switch(failing: bool) -> None:
        client = redis.Redis.from_url(url)
        try:
            if failing:
                saved.append(client.get("vr:audit:seq"))
                client.set("vr:audit:seq", "not a number")
            elif (sequence := saved.pop()) is None:
                client.delete("vr:audit:seq")
            else:
                client.set("vr:audit:seq", sequence)
        finally:
            client.close()

    return url, redis_switch


def test_a_breaker_change_whose_audit_entry_cannot_be_written_is_not_made(
    router_factory: Callable[..., RunningRouter], failing_audit: tuple[str, Callable[[bool], None]]
) -> None:
    """Operator breaker changes are audited in the same write as the change: the 503 "nothing was changed"
    is true (no live, unaudited change), and the window a reset would clear is kept too."""
    state_url, audit_fails = failing_audit
    router = router_factory(state_url=state_url)
    assert (
        router.admin("POST", "/admin/breaker", json={"action": "open", "reason": "drill"}).status_code == 200
    )
    add_outcomes(state_url, 3)
    audit_fails(True)
    for action in ("close", "reset"):
        response = router.admin(
            "POST", "/admin/breaker", json={"action": action, "reason": "x", "actor": "bob"}
        )
        assert response.status_code == 503 and "nothing was changed" in response.json()["error"]
    audit_fails(False)
    status = router.admin("GET", "/admin/breaker").json()
    assert (status["state"], status["reason"], status["calls_in_window"]) == ("forced_open", "drill", 3)
    assert [e["action"] for e in audit(router)] == ["breaker.forced_open"]

    # Both there once the store takes the write.
    reset = router.admin("POST", "/admin/breaker", json={"action": "reset", "reason": "over", "actor": "bob"})
    assert reset.status_code == 200 and reset.json()["calls_in_window"] == 0
    assert [(e["action"], e["actor"]) for e in audit(router)] == [
        ("breaker.reset", "bob"),
        ("breaker.forced_open", "admin-api"),
    ]


def test_a_breaker_change_made_before_the_store_failed_is_not_answered_503(router: RunningRouter) -> None:
    """The change and its audit entry were stored; only reading the status back failed: not "nothing was
    changed"."""
    router.store.down_after = "breaker_swap"
    response = router.admin("POST", "/admin/breaker", json={"action": "open", "reason": "incident"})
    router.store.down, router.store.down_after = False, None
    assert response.status_code == 200
    assert response.json()["state"] == "forced_open" and response.json()["reason"] == "incident"
    assert router.admin("GET", "/admin/breaker").json()["state"] == "forced_open"
    assert [e["action"] for e in audit(router)] == ["breaker.forced_open"]


def test_a_breaker_that_keeps_changing_is_a_409_not_a_500(
    router: RunningRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other replicas winning every compare-and-set (``BreakerConflictError``) is a conflict to retry, as a
    rollout conflict is, not an internal error; nothing was changed or audited."""

    async def always_lost(*args: Any, **kwargs: Any) -> bool:
        return False  # another replica's write landed first, every time

    with monkeypatch.context() as patch:
        patch.setattr(router.store, "breaker_swap", always_lost)
        response = router.admin("POST", "/admin/breaker", json={"action": "open", "reason": "incident"})
    assert response.status_code == 409, response.text
    assert "nothing was changed" in response.json()["error"]
    assert router.admin("GET", "/admin/breaker").json()["state"] == "closed"
    assert audit(router) == []


def test_audit_and_calls_limits_are_validated(router: RunningRouter) -> None:
    assert router.admin("GET", "/admin/audit", params={"limit": "lots"}).status_code == 422
    assert (
        router.admin("GET", "/admin/audit", params={"limit": "\u00b2"}).status_code == 422
    )  # isdigit() takes it
    assert router.admin("GET", "/admin/calls", params={"limit": "0"}).status_code == 422
    assert router.admin("GET", "/admin/calls", params={"since": "yesterday"}).status_code == 422
    # A duration too long for a float (it was a 500) or for int() (a ValueError past 4,300 digits).
    for huge in ("9" * 320 + "d", "9" * 5000 + "s"):
        refused = router.admin("GET", "/admin/comparison", params={"since": huge})
        assert refused.status_code == 422 and "since" in refused.json()["error"]


@pytest.mark.parametrize("value", [[], ["open"], {"x": 1}])
def test_an_action_or_op_that_is_not_a_string_is_422_not_500(router: RunningRouter, value: Any) -> None:
    breaker = router.admin("POST", "/admin/breaker", json={"action": value, "reason": "x"})
    assert breaker.status_code == 422 and breaker.json()["error"].startswith("action:")
    listed = router.admin(
        "POST", "/admin/rollout/allow", json={"op": value, "number": "+14155550111", "reason": "x"}
    )
    assert listed.status_code == 422 and listed.json()["error"].startswith("op:")
    assert router.admin("GET", "/admin/breaker").json()["state"] == "closed"
    assert audit(router) == []
