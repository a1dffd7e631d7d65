"""Two app instances on one real Redis: operator changes and breaker state are shared."""

from __future__ import annotations

import asyncio
import time

from flags.breaker import CircuitBreaker, Outcome
from flags.clock import SystemClock
from router.app import NoRealtime
from router.store.factory import open_store
from tests.router.conftest import RunningRouter


class FullWorker(NoRealtime):
    """A replica already serving its limit of realtime calls."""

    def has_capacity(self) -> bool:
        return False


def route(router: RunningRouter, call_sid: str) -> tuple[str, str]:
    response = router.incoming_call(call_sid)
    assert response.status_code == 200
    return response.headers["X-Voice-Router-Pipeline"], response.headers["X-Voice-Router-Reason"]


HALF_OPEN_ONE_TRIAL = {
    "config_cache_seconds": 0.0,
    "breaker_wait_open_seconds": 1.0,
    "breaker_consecutive_connect_failures": 1,
    "breaker_half_open_calls": 1,
}


def half_open(router: RunningRouter, redis_url: str) -> None:
    """Trip the shared breaker as a realtime worker would (its own connection to the store), then wait out the
    1 s open wait: half-open, one trial permit (the replicas run with ``HALF_OPEN_ONE_TRIAL``)."""

    async def trip() -> None:
        store = open_store(redis_url)
        await store.open()
        try:
            config = router.components.breaker.config  # the replica's own thresholds
            await CircuitBreaker(config, store, clock=SystemClock()).record(Outcome.CONNECT_FAILURE)
        finally:
            await store.close()

    asyncio.run(trip())
    assert router.admin("GET", "/admin/breaker").json()["state"] == "open"
    time.sleep(1.1)


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
    a: RunningRouter = router_factory(state_url=redis_url, **HALF_OPEN_ONE_TRIAL)
    b: RunningRouter = router_factory(state_url=redis_url, **HALF_OPEN_ONE_TRIAL)
    a.admin("PUT", "/admin/rollout", json={"percent": 100, "reason": "ramp"})

    half_open(a, redis_url)

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


def test_a_webhook_retry_sent_to_legacy_by_a_full_replica_gives_the_trial_permit_back(
    router_factory, redis_url: str
) -> None:
    """The retry reached a replica with no room for another realtime call: Twilio follows its legacy answer,
    so the permit the first attempt took would never report. It is given back, and the next caller can be
    the trial at once instead of after the stale-trial timeout."""
    a: RunningRouter = router_factory(state_url=redis_url, **HALF_OPEN_ONE_TRIAL)
    full: RunningRouter = router_factory(state_url=redis_url, realtime=FullWorker(), **HALF_OPEN_ONE_TRIAL)
    a.admin("PUT", "/admin/rollout", json={"percent": 100, "reason": "ramp"})
    half_open(a, redis_url)

    call_sid, token = "CA" + "6" * 32, {"I-Twilio-Idempotency-Token": "5d0c77aa-first-and-retry"}
    assert a.incoming_call(call_sid, headers=token).headers["X-Voice-Router-Pipeline"] == "realtime"
    assert full.admin("GET", "/admin/breaker").json()["trial_permits"] == 1
    retry = full.incoming_call(call_sid, headers=token)
    assert (retry.headers["X-Voice-Router-Pipeline"], retry.headers["X-Voice-Router-Reason"]) == (
        "legacy",
        "realtime_full",
    )
    assert full.admin("GET", "/admin/breaker").json()["trial_permits"] == 0
    assert route(a, "CA" + "7" * 32) == ("realtime", "rollout_in")  # the next caller is the trial
