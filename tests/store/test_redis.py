"""What only the Redis backend promises: replicas share state at once, keys expire, failures are fast errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis

import router.store.redis
from emulators.runner import free_port
from flags.breaker_state import BreakerDocument, BreakerState, BreakerTransition, WindowTotals
from router.store.base import AuditEntry, StoreOutcomeUnknown, StoreUnavailable
from router.store.redis import RedisStore
from tests.store.every_method import EVERY_METHOD, protocol_methods
from tests.support.lossy_proxy import ReplyLosingProxy

T0 = 1_700_000_000


@pytest.fixture
async def replicas(redis_url: str) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    first, second = RedisStore(redis_url), RedisStore(redis_url)
    await first.open()
    await second.open()
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


async def test_replicas_see_each_others_writes(replicas: tuple[RedisStore, RedisStore]) -> None:
    a, b = replicas
    assert await a.swap_rollout(None, {"percent_bp": 100, "version": 1})
    assert await b.get_rollout() == {"percent_bp": 100, "version": 1}
    assert await b.swap_rollout(1, {"percent_bp": 200, "version": 2})
    assert await a.get_rollout() == {"percent_bp": 200, "version": 2}
    assert not await a.swap_rollout(1, {"percent_bp": 300, "version": 2})

    opened = BreakerDocument(state=BreakerState.OPEN, since=T0, reason="trip", version=1)
    assert await a.breaker_swap(None, opened)
    assert await b.breaker_load() == opened
    assert not await b.breaker_swap(None, BreakerDocument(version=1))

    await a.breaker_add_outcome(T0, failed=True, slow=False)
    await b.breaker_add_outcome(T0 + 1, failed=False, slow=True)
    assert await a.breaker_window(T0, T0 + 1) == WindowTotals(calls=2, failures=1, slow=1)
    await b.breaker_clear_window()
    assert await a.breaker_window(T0, T0 + 1) == WindowTotals()

    from_a = await a.append_audit(AuditEntry(T0, "alice", "rollout.set", "", None, {"percent": 1}))
    from_b = await b.append_audit(AuditEntry(T0 + 1, "bob", "breaker.open", "", None, None))
    assert await a.list_audit() == [from_b, from_a]

    await a.put_call({"call_sid": "CA1", "started_at": T0})
    await b.merge_call("CA1", {"status": "completed"})
    await b.append_call_event("CA1", {"event": "moved"})
    assert await a.get_call("CA1") == {
        "call_sid": "CA1",
        "started_at": T0,
        "status": "completed",
        "events": [{"event": "moved"}],
    }


async def test_key_prefix_separates_deployments(redis_url: str) -> None:
    blue, green = RedisStore(redis_url, key_prefix="blue:"), RedisStore(redis_url, key_prefix="green:")
    await blue.open()
    await green.open()
    try:
        assert await blue.swap_rollout(None, {"version": 1})
        await blue.breaker_add_outcome(T0, failed=True, slow=False)
        assert await green.get_rollout() is None
        assert await green.breaker_window(T0, T0) == WindowTotals()
        client = aioredis.Redis.from_url(redis_url)
        try:
            keys = [str(key, "utf-8") if isinstance(key, bytes) else key for key in await client.keys("*")]
        finally:
            await client.aclose()
        assert keys and all(key.startswith("blue:") for key in keys)
    finally:
        await blue.close()
        await green.close()


async def test_window_buckets_and_history_expire_on_their_own(redis_url: str) -> None:
    store = RedisStore(redis_url, key_prefix="t:")
    await store.open()
    client = aioredis.Redis.from_url(redis_url)
    try:
        await store.breaker_add_outcome(T0, failed=False, slow=False)
        await store.append_history("CA1", [{"content": "x"}], cap=3)
        (bucket,) = await client.keys("t:breaker:w:*")
        assert 0 < await client.ttl(bucket) <= router.store.redis.WINDOW_RETENTION_SECONDS
        assert 0 < await client.ttl("t:history:CA1") <= router.store.redis.HISTORY_TTL_SECONDS
        markers = await client.keys("t:once:*")
        assert len(markers) == 2, "one write-once marker per write"
        for marker in markers:
            assert 0 < await client.pttl(marker) <= router.store.redis.ONCE_TTL_MS
    finally:
        await client.aclose()
        await store.close()


async def test_audit_log_is_capped(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(router.store.redis, "AUDIT_CAP", 3)
    store = RedisStore(redis_url)
    await store.open()
    try:
        entries = [
            await store.append_audit(AuditEntry(T0 + i, "ops", "rollout.set", str(i), None, None))
            for i in range(5)
        ]
        assert await store.list_audit(limit=10) == entries[:1:-1]
    finally:
        await store.close()


async def test_a_change_whose_audit_write_fails_in_the_script_is_not_made(redis_url: str) -> None:
    """Redis keeps a script's writes made before a failing command: the document must come last, so a failed
    audit append (here a key of the wrong type) leaves the rollout and the breaker as they were."""
    store = RedisStore(redis_url)
    admin = aioredis.Redis.from_url(redis_url)
    await store.open()
    try:
        closed = BreakerDocument(state=BreakerState.CLOSED, version=1)
        assert await store.breaker_swap(None, closed)
        await store.breaker_add_outcome(T0, failed=True, slow=False)
        await admin.set("vr:audit", "not a sorted set")
        entry = AuditEntry(T0, "ops", "rollout.percent", "ramp", None, {"percent": 5})
        with pytest.raises(StoreUnavailable):
            await store.swap_rollout(None, {"percent_bp": 500, "version": 1}, entry)
        assert await store.get_rollout() is None
        forced = BreakerDocument(state=BreakerState.FORCED_CLOSED, since=T0, reason="noise", version=2)
        with pytest.raises(StoreUnavailable):
            await store.breaker_swap(1, forced, BreakerTransition(closed, "forced_closed", "ops"))
        assert await store.breaker_load() == closed

        await admin.delete("vr:audit")
        assert await store.breaker_swap(1, forced, BreakerTransition(closed, "forced_closed", "ops"))
        assert [e.action for e in await store.list_audit()] == ["breaker.forced_closed"]
        assert await store.breaker_window(T0, T0) == WindowTotals(calls=1, failures=1)
    finally:
        await admin.aclose()
        await store.close()


@pytest.fixture
async def unreachable() -> AsyncIterator[RedisStore]:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.mark.parametrize("method", sorted(EVERY_METHOD))
async def test_unreachable_redis_raises_store_unavailable(unreachable: RedisStore, method: str) -> None:
    """Refused before a byte was sent: the plain error, whose "nothing was changed" is true."""
    with pytest.raises(StoreUnavailable) as raised:
        await EVERY_METHOD[method](unreachable)
    assert not isinstance(raised.value, StoreOutcomeUnknown)


async def test_use_before_open_raises_store_unavailable(redis_url: str) -> None:
    with pytest.raises(StoreUnavailable):
        await RedisStore(redis_url).get_rollout()


async def test_a_redis_restart_is_survived_by_reconnecting(redis_url: str) -> None:
    """A pooled connection that Redis dropped is replaced on the next command, not reported as an outage."""
    store = RedisStore(redis_url)
    await store.open()
    admin = aioredis.Redis.from_url(redis_url)
    try:
        assert await store.swap_rollout(None, {"version": 1})
        await admin.client_kill_filter(_type="normal", skipme=True)
        assert await store.get_rollout() == {"version": 1}
    finally:
        await admin.aclose()
        await store.close()


def test_every_method_list_covers_the_protocol() -> None:
    assert set(EVERY_METHOD) == protocol_methods()


# A lost reply --------------------------------------------------------------------------------------------

_AUDIT = AuditEntry(T0, "ops", "rollout.percent", "ramp", None, {"percent": 5})
_OPENED = BreakerDocument(state=BreakerState.OPEN, since=T0, reason="trip", version=1)

# Every method once, and the audited forms of the two swaps (which EVERY_METHOD calls without audit).
REPLAYED = {
    **EVERY_METHOD,
    "swap_rollout audited": lambda s: s.swap_rollout(None, {"percent_bp": 500, "version": 1}, _AUDIT),
    "breaker_swap audited": lambda s: s.breaker_swap(
        None, _OPENED, BreakerTransition(BreakerDocument(), "tripped", "breaker", clear_window=True)
    ),
    "swap_rollout stale": lambda s: s.swap_rollout(7, {"version": 8}),
    "append_turns, three": lambda s: s.append_turns([{"call_sid": f"CA{i}", "at": T0 + i} for i in range(3)]),
}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _dump(client: aioredis.Redis, prefix: str) -> dict[str, Any]:
    """Every key under ``prefix`` (without it) and its value, except the write-once markers."""
    dump: dict[str, Any] = {}
    for raw in await client.keys(f"{prefix}*"):
        key = _text(raw)[len(prefix) :]
        if key.startswith("once:"):
            continue
        kind = _text(await client.type(raw))
        if kind == "string":
            dump[key] = await client.get(raw)
        elif kind == "hash":
            dump[key] = await client.hgetall(raw)
        elif kind == "list":
            dump[key] = await client.lrange(raw, 0, -1)
        else:
            dump[key] = await client.zrange(raw, 0, -1, withscores=True)
    return dump


@pytest.mark.parametrize("method", sorted(REPLAYED))
async def test_a_write_whose_reply_was_lost_is_applied_once_by_the_retry(redis_url: str, method: str) -> None:
    """The client retries a command once when its connection drops. When the drop comes after Redis ran the
    command (the reply is lost), the retry must not count an outcome twice, append an audit entry, event, turn
    or history message twice, or report a change it made as a lost compare-and-set."""
    url = urlsplit(redis_url)
    proxy = ReplyLosingProxy(int(url.port or 6379))
    await proxy.start()
    clean = RedisStore(redis_url, key_prefix="clean:")
    lossy = RedisStore(f"redis://127.0.0.1:{proxy.port}{url.path}", key_prefix="lossy:")
    admin = aioredis.Redis.from_url(redis_url)
    await clean.open()
    await lossy.open()
    try:
        expected = await REPLAYED[method](clean)  # also loads the method's scripts into Redis
        await lossy.ping()  # a pooled connection for the reply to be lost on
        proxy.lose_next_reply()
        assert await REPLAYED[method](lossy) == expected
        assert proxy.replies_lost == 1, "the fault was not injected"
        assert await _dump(admin, "lossy:") == await _dump(admin, "clean:")
    finally:
        await admin.aclose()
        await lossy.close()
        await clean.close()
        await proxy.aclose()


@pytest.fixture
async def slow_replies(redis_url: str) -> AsyncIterator[tuple[RedisStore, ReplyLosingProxy]]:
    """A store whose replies come through a proxy that can hold them past its 0.3 s socket timeout, with a
    first change already made (its script loaded)."""
    url = urlsplit(redis_url)
    proxy = ReplyLosingProxy(int(url.port or 6379))
    await proxy.start()
    store = RedisStore(f"redis://127.0.0.1:{proxy.port}{url.path}", socket_timeout=0.3)
    await store.open()
    try:
        assert await store.swap_rollout(None, {"percent_bp": 1, "version": 1}, _AUDIT)
        yield store, proxy
    finally:
        await store.close()
        await proxy.aclose()


async def test_a_change_whose_reply_timed_out_is_settled_by_its_marker_not_reported_as_lost(
    slow_replies: tuple[RedisStore, ReplyLosingProxy],
) -> None:
    """A reply slower than the client's socket timeout: Redis made the change, the client saw a timeout and
    the admin API answered 503 "nothing was changed". Sent again under the same marker, the write returns
    the first run's result: the change is reported made, and audited once."""
    store, proxy = slow_replies
    proxy.delay_next_reply(1.0)
    assert await store.swap_rollout(1, {"percent_bp": 500, "version": 2}, _AUDIT)
    assert proxy.replies_delayed == 1, "the fault was not injected"
    assert await store.get_rollout() == {"percent_bp": 500, "version": 2}
    assert len(await store.list_audit()) == 2


async def test_a_change_never_confirmed_is_reported_as_maybe_made(
    slow_replies: tuple[RedisStore, ReplyLosingProxy],
) -> None:
    store, proxy = slow_replies
    proxy.delay_next_reply(1.0, count=2)  # the second try's reply is late too
    with pytest.raises(StoreOutcomeUnknown):
        await store.swap_rollout(1, {"percent_bp": 500, "version": 2}, _AUDIT)
    assert proxy.replies_delayed == 2
    assert await store.get_rollout() == {"percent_bp": 500, "version": 2}, "it was made: 'may have been'"
    assert len(await store.list_audit()) == 2, "and audited once"


async def test_a_change_whose_reply_was_lost_as_redis_went_down_is_reported_as_maybe_made(
    redis_url: str,
) -> None:
    """Redis ran the write, the connection dropped before its reply, and the reconnect is refused. redis-py
    raises the same ConnectionError as for a Redis that was never reached; "nothing was changed" would be
    false here, so the store must say the change may have been made."""
    url = urlsplit(redis_url)
    proxy = ReplyLosingProxy(int(url.port or 6379))
    await proxy.start()
    store = RedisStore(f"redis://127.0.0.1:{proxy.port}{url.path}")
    await store.open()
    try:
        assert await store.swap_rollout(None, {"percent_bp": 1, "version": 1}, _AUDIT)  # loads the script
        proxy.lose_next_reply(then_refuse=True)
        with pytest.raises(StoreOutcomeUnknown, match="may have been made"):
            await store.swap_rollout(1, {"percent_bp": 500, "version": 2}, _AUDIT)
        assert proxy.replies_lost == 1, "the fault was not injected"
    finally:
        await store.close()
        await proxy.aclose()
    direct = RedisStore(redis_url)
    await direct.open()
    try:
        assert await direct.get_rollout() == {"percent_bp": 500, "version": 2}, "it was made: 'may have been'"
        assert len(await direct.list_audit()) == 2, "and audited once"
    finally:
        await direct.close()


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0", "rediss://127.0.0.1:1/0", "unix:///tmp/redis.sock"])
async def test_every_url_scheme_gets_connections_that_note_their_sends(url: str) -> None:
    """Without the noting connection, a refused write could not be told from a lost reply."""
    store = RedisStore(url)
    await store.open()
    try:
        assert store._sends_noted
        connection_class = store._redis.connection_pool.connection_class
        assert connection_class.__name__.startswith("_Noting"), connection_class
    finally:
        await store.close()
