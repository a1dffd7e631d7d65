"""Two app instances on one real Redis: operator changes and breaker state are shared."""

from __future__ import annotations

import asyncio
import time

from flags.breaker import BreakerConfig, CircuitBreaker, Outcome
from flags.clock import SystemClock
from router.store.factory import open_store
from tests.router.conftest import RunningRouter


def route(router: RunningRouter, call_sid: str) -> tuple[str, str]:
    response = router.incoming_call(call_sid)
    assert response.status_code == 200
    return response.headers["X-Voice-Router-Pipeline"], response.headers["X-Voice-Router-Reason"]


def test_a_change_on_one_replica_is_seen_by_the_other_within_a_second(router_factory, redis_url: str) -> None:
    a: RunningRouter = router_factory(state_url=redis_url, config_cache_seconds=0.5)
    b: RunningRouter = router_factory(state_url=redis_url, config_cache_seconds=0.5)
    assert route(b, "CA" + "0" * 32) == ("legacy", "rollout_out")  # b has now cached 0%

    assert a.admin("PUT", "/admin/rollout", json={"percent": 100, "reason": "ramp"}).status_code == 200
    changed_at = time.monotonic()
    # The promise: every replica routes by the new config within one second of the change.
    time.sleep(max(0.0, 1.0 - (time.monotonic() - changed_at)))
    assert route(b, "CA" + "1" * 32) == ("realtime", "rollout_in")
    assert b.admin("GET", "/admin/rollout").json()["updated_by"] == "admin-api"

    # The audit log is shared too.
    assert [e["action"] for e in b.admin("GET", "/admin/audit").json()] == ["rollout.percent"]


def test_breaker_forced_open_on_one_replica_routes_legacy_on_the_other(
    router_factory, redis_url: str
) -> None:
    a: RunningRouter = router_factory(state_url=redis_url)
    b: RunningRouter = router_factory(state_url=redis_url)
    a.admin("PUT", "/admin/rollout", json={"percent": 100, "reason": "ramp"})
    time.sleep(0.6)
    assert route(b, "CA" + "2" * 32)[0] == "realtime"
    assert a.admin("POST", "/admin/breaker", json={"action": "open", "reason": "drill"}).status_code == 200
    assert b.admin("GET", "/admin/breaker").json()["state"] == "forced_open"
    time.sleep(1.0)  # within one second every replica routes by the new breaker state
    assert route(b, "CA" + "3" * 32) == ("legacy", "breaker_open")
    # Call records written through either replica are visible from both, within the same second (each
    # replica writes its records behind its answers; a reader can only flush its own replica's queue).
    deadline = time.monotonic() + 1.0
    sids = {c["call_sid"] for c in a.admin("GET", "/admin/calls").json()}
    while not {"CA" + "2" * 32, "CA" + "3" * 32} <= sids and time.monotonic() < deadline:
        time.sleep(0.02)
        sids = {c["call_sid"] for c in a.admin("GET", "/admin/calls").json()}
    assert {"CA" + "2" * 32, "CA" + "3" * 32} <= sids


def test_a_webhook_retry_on_another_replica_keeps_the_half_open_trial(router_factory, redis_url: str) -> None:
    """Twilio retried /twilio/voice (same token) and the retry reached the other replica, which has not seen
    the first attempt: it must answer realtime with the first attempt's trial, not refuse the call a trial
    (legacy) while the only permit stays taken for it."""
    settings = {
        "state_url": redis_url,
        "config_cache_seconds": 0.0,
        "breaker_wait_open_seconds": 1.0,
        "breaker_consecutive_connect_failures": 1,
        "breaker_half_open_calls": 1,
    }
    a: RunningRouter = router_factory(**settings)
    b: RunningRouter = router_factory(**settings)
    a.admin("PUT", "/admin/rollout", json={"percent": 100, "reason": "ramp"})

    async def trip() -> None:  # as a realtime worker would, through its own connection to the shared store
        store = open_store(redis_url)
        await store.open()
        try:
            config = BreakerConfig(consecutive_connect_failures=1, wait_open_seconds=1.0, half_open_calls=1)
            await CircuitBreaker(config, store, clock=SystemClock()).record(Outcome.CONNECT_FAILURE)
        finally:
            await store.close()

    asyncio.run(trip())
    assert a.admin("GET", "/admin/breaker").json()["state"] == "open"
    time.sleep(1.1)  # past the open wait: half-open, one trial permit

    call_sid, token = "CA" + "4" * 32, {"I-Twilio-Idempotency-Token": "2b7e0c1a-first-and-retry"}
    first = a.incoming_call(call_sid, headers=token)
    retry = b.incoming_call(call_sid, headers=token)
    assert (first.headers["X-Voice-Router-Pipeline"], first.headers["X-Voice-Router-Reason"]) == (
        "realtime",
        "rollout_in",
    )
    assert (retry.headers["X-Voice-Router-Pipeline"], retry.headers["X-Voice-Router-Reason"]) == (
        "realtime",
        "rollout_in",
    )
    assert "<Stream" in retry.text
    status = b.admin("GET", "/admin/breaker").json()
    assert (status["state"], status["trial_permits"]) == ("half_open", 1)  # one call, one permit
    assert route(b, "CA" + "5" * 32) == ("legacy", "breaker_half_open")  # the round's only permit is taken
