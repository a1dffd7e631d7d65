"""The StateStore contract, run against SQLite and against a real redis-server."""

from __future__ import annotations

import asyncio

import pytest

import router.store.redis
import router.store.sqlite
from flags.breaker_state import BreakerDocument, BreakerState, BreakerTransition, HalfOpenTally, WindowTotals
from flags.rollout import Mode, RolloutConfig
from router.records import CallRecord, Pipeline, TurnRecord
from router.store.base import AuditEntry, StateStore, WebhookClaim

T0 = 1_700_000_000


def rollout(version: int, percent_bp: int) -> dict[str, object]:
    return RolloutConfig(percent_bp=percent_bp, version=version, allow=frozenset({"+15550001"})).to_dict()


def call(sid: str, started_at: float, **changes: object) -> dict[str, object]:
    record = CallRecord(
        call_sid=sid,
        pipeline=Pipeline.REALTIME,
        reason="rollout_in",
        bucket=1234,
        percent=12.5,
        caller_hash="h-" + sid,
        started_at=started_at,
    )
    return {"events": [], **record.to_dict(), **changes}


def turn(sid: str, number: int, at: float) -> dict[str, object]:
    return TurnRecord(
        call_sid=sid,
        pipeline=Pipeline.LEGACY,
        turn=number,
        at=at,
        response_ms=812.5,
        stages={"stt": 120.0, "tts": 210.25},
        user_text=f"utterance {number}",
    ).to_dict()


async def test_implements_the_protocol_and_answers_ping(store: StateStore) -> None:
    assert isinstance(store, StateStore)
    await store.ping()


# Rollout -------------------------------------------------------------------------------------------------


async def test_rollout_compare_and_set(store: StateStore) -> None:
    assert await store.get_rollout() is None
    assert not await store.swap_rollout(0, rollout(1, 100)), "0 is not 'nothing stored'"
    assert await store.swap_rollout(None, rollout(1, 100))
    assert not await store.swap_rollout(None, rollout(1, 999)), "None creates only when absent"
    assert await store.get_rollout() == rollout(1, 100)

    assert await store.swap_rollout(1, rollout(2, 2_500))
    assert not await store.swap_rollout(1, rollout(2, 5_000)), "a stale version is refused"
    stored = await store.get_rollout()
    assert stored is not None
    assert RolloutConfig.from_dict(stored) == RolloutConfig(
        percent_bp=2_500, version=2, allow=frozenset({"+15550001"})
    )


async def test_rollout_round_trips_every_field(store: StateStore) -> None:
    config = RolloutConfig(
        percent_bp=1_234,
        mode=Mode.LEGACY_ONLY,
        allow=frozenset({"a", "b"}),
        deny=frozenset({"c"}),
        version=7,
        updated_at="2024-05-01T10:00:00Z",
        updated_by="ops@example.com",
    )
    assert await store.swap_rollout(None, config.to_dict())
    stored = await store.get_rollout()
    assert stored is not None and RolloutConfig.from_dict(stored) == config


async def test_concurrent_rollout_swaps_have_one_winner_per_version(store: StateStore) -> None:
    assert await store.swap_rollout(None, rollout(1, 0))
    for version in (1, 2, 3):
        attempts = [store.swap_rollout(version, rollout(version + 1, contender)) for contender in range(12)]
        results = await asyncio.gather(*attempts)
        assert results.count(True) == 1
        winner = results.index(True)
        assert await store.get_rollout() == rollout(version + 1, winner)


# Breaker -------------------------------------------------------------------------------------------------


async def test_breaker_document_compare_and_set(store: StateStore) -> None:
    assert await store.breaker_load() is None
    opened = BreakerDocument(
        state=BreakerState.HALF_OPEN,
        since=T0 + 0.25,
        reason="failure rate 62.5% >= 50%",
        version=1,
        consecutive_connect_failures=2,
        half_open=HalfOpenTally(permits=2, successes=1, failures=0, slow=1),
    )
    assert await store.breaker_swap(None, opened)
    assert not await store.breaker_swap(None, BreakerDocument(version=1))
    assert await store.breaker_load() == opened

    closed = BreakerDocument(state=BreakerState.CLOSED, since=T0 + 9, version=2)
    assert not await store.breaker_swap(0, closed)
    assert await store.breaker_swap(1, closed)
    assert not await store.breaker_swap(1, BreakerDocument(state=BreakerState.FORCED_OPEN, version=2))
    assert await store.breaker_load() == closed


async def test_concurrent_breaker_swaps_have_one_winner(store: StateStore) -> None:
    attempts = [
        store.breaker_swap(None, BreakerDocument(state=BreakerState.OPEN, reason=f"r{i}", version=1))
        for i in range(10)
    ]
    results = await asyncio.gather(*attempts)
    assert results.count(True) == 1
    loaded = await store.breaker_load()
    assert loaded is not None and loaded.reason == f"r{results.index(True)}"


async def test_a_breaker_transition_is_stored_with_its_audit_entry_or_not_at_all(store: StateStore) -> None:
    """An operator's change (or a transition) and its audit entry are one write; so is its window clear."""
    await store.breaker_add_outcome(T0, failed=True, slow=False)
    closed = BreakerDocument(state=BreakerState.CLOSED, since=T0, version=1)
    assert await store.breaker_swap(None, closed)
    forced = BreakerDocument(state=BreakerState.FORCED_OPEN, since=T0 + 5, reason="VL incident", version=2)
    opening = BreakerTransition(closed, "forced_open", "oncall")
    assert not await store.breaker_swap(None, forced, opening), "a stale version is refused"
    assert await store.list_audit() == [], "a refused swap wrote an audit entry"

    assert await store.breaker_swap(1, forced, opening)
    assert await store.breaker_load() == forced
    [entry] = await store.list_audit()
    assert entry == AuditEntry(
        at=T0 + 5,
        actor="oncall",
        action="breaker.forced_open",
        reason="VL incident",
        before=closed.to_dict(),
        after=forced.to_dict(),
        id=entry.id,
    )
    assert await store.breaker_window(T0, T0) == WindowTotals(calls=1, failures=1), "no clear asked for"

    reset = BreakerDocument(state=BreakerState.CLOSED, since=T0 + 9, reason="back to normal", version=3)
    resetting = BreakerTransition(forced, "reset", "oncall", clear_window=True)
    assert not await store.breaker_swap(1, reset, resetting)
    assert await store.breaker_window(T0, T0) == WindowTotals(calls=1, failures=1), "a refused swap cleared"
    assert await store.breaker_swap(2, reset, resetting)
    assert await store.breaker_window(T0, T0) == WindowTotals()
    assert [e.action for e in await store.list_audit()] == ["breaker.reset", "breaker.forced_open"]


async def test_breaker_window_sums_inclusive_ranges(store: StateStore) -> None:
    assert await store.breaker_window(T0, T0 + 300) == WindowTotals()
    await store.breaker_add_outcome(T0, failed=False, slow=False)
    await store.breaker_add_outcome(T0, failed=True, slow=False)
    await store.breaker_add_outcome(T0 + 1, failed=False, slow=True)
    await store.breaker_add_outcome(T0 + 10, failed=True, slow=True)
    await store.breaker_add_outcome(T0 + 11, failed=True, slow=False)

    assert await store.breaker_window(T0, T0 + 11) == WindowTotals(calls=5, failures=3, slow=2)
    assert await store.breaker_window(T0, T0) == WindowTotals(calls=2, failures=1, slow=0)
    assert await store.breaker_window(T0 + 1, T0 + 10) == WindowTotals(calls=2, failures=1, slow=2)
    assert await store.breaker_window(T0 + 2, T0 + 9) == WindowTotals()
    assert await store.breaker_window(T0 - 300, T0 - 1) == WindowTotals()
    assert await store.breaker_window(T0 + 11, T0 + 400) == WindowTotals(calls=1, failures=1, slow=0)


async def test_breaker_window_counts_concurrent_outcomes(store: StateStore) -> None:
    await asyncio.gather(*(store.breaker_add_outcome(T0, failed=i % 3 == 0, slow=False) for i in range(30)))
    assert await store.breaker_window(T0, T0) == WindowTotals(calls=30, failures=10, slow=0)


async def test_breaker_clear_window_forgets_every_bucket(store: StateStore) -> None:
    for second in range(T0, T0 + 5):
        await store.breaker_add_outcome(second, failed=True, slow=True)
    await store.breaker_clear_window()
    assert await store.breaker_window(T0 - 10, T0 + 10) == WindowTotals()

    await store.breaker_add_outcome(T0 + 2, failed=False, slow=True)
    assert await store.breaker_window(T0 - 10, T0 + 10) == WindowTotals(calls=1, failures=0, slow=1)


# Audit ---------------------------------------------------------------------------------------------------


async def test_audit_is_numbered_and_listed_newest_first(store: StateStore) -> None:
    assert await store.list_audit() == []
    appended = []
    for i in range(5):
        entry = AuditEntry(
            at=T0 + i,
            actor="ops@example.com",
            action="rollout.set",
            reason=f"step {i}",
            before={"percent": i} if i else None,
            after={"percent": i + 1, "allow": ["+1555"]},
        )
        stored = await store.append_audit(entry)
        assert stored.id is not None
        assert stored == AuditEntry(**{**entry.to_dict(), "id": stored.id})
        appended.append(stored)

    ids = [entry.id or 0 for entry in appended]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert await store.list_audit() == appended[::-1]
    assert await store.list_audit(limit=2) == [appended[4], appended[3]]
    assert await store.list_audit(limit=0) == []


async def test_identical_audit_entries_are_all_kept(store: StateStore) -> None:
    entry = AuditEntry(at=T0, actor="a", action="breaker.open", reason="", before=None, after=None)
    first, second = await store.append_audit(entry), await store.append_audit(entry)
    assert first.id != second.id
    assert await store.list_audit() == [second, first]


async def test_a_rollout_swap_with_an_audit_entry_stores_both_or_neither(store: StateStore) -> None:
    """The admin API's change and its audit entry are one write: a stale swap leaves no audit entry."""
    entry = AuditEntry(
        at=T0, actor="ops", action="rollout.percent", reason="ramp", before=None, after={"v": 1}
    )
    assert await store.swap_rollout(None, rollout(1, 100), entry)
    assert await store.get_rollout() == rollout(1, 100)
    [stored] = await store.list_audit()
    assert stored == AuditEntry(**{**entry.to_dict(), "id": stored.id})
    assert not await store.swap_rollout(None, rollout(1, 999), entry), "a stale version is refused"
    assert await store.list_audit() == [stored], "a refused swap wrote an audit entry"
    later = await store.append_audit(entry)  # one numbering for both ways of appending
    assert later.id is not None and stored.id is not None and later.id > stored.id


# Calls ---------------------------------------------------------------------------------------------------


async def test_put_and_get_call(store: StateStore) -> None:
    assert await store.get_call("CA-missing") is None
    record = call("CA1", T0 + 0.5, breaker_trial=True)
    await store.put_call(record)
    stored = await store.get_call("CA1")
    assert stored == record
    assert stored is not None and CallRecord.from_dict(stored).breaker_trial is True


async def test_merge_call_is_shallow_and_creates(store: StateStore) -> None:
    await store.put_call(call("CA1", T0))
    await store.merge_call("CA1", {"status": "completed", "ended_at": T0 + 42.0, "extra": {"a": [1, 2]}})
    assert await store.get_call("CA1") == {
        **call("CA1", T0),
        "status": "completed",
        "ended_at": T0 + 42.0,
        "extra": {"a": [1, 2]},
    }

    await store.merge_call("CA-new", {"moved_to_legacy": True})
    assert await store.get_call("CA-new") == {"call_sid": "CA-new", "moved_to_legacy": True, "events": []}


async def test_call_events_append_in_order_without_losing_any(store: StateStore) -> None:
    await store.put_call(call("CA1", T0))
    await store.append_call_event("CA1", {"at": T0 + 1, "event": "session.updated"})
    await asyncio.gather(*(store.append_call_event("CA1", {"n": i}) for i in range(20)))
    await store.merge_call("CA1", {"status": "completed"})  # a merge leaves the events alone

    stored = await store.get_call("CA1")
    assert stored is not None and stored["status"] == "completed"
    events = stored["events"]
    assert events[0] == {"at": T0 + 1, "event": "session.updated"}
    assert sorted(event["n"] for event in events[1:]) == list(range(20))


async def test_event_for_an_unknown_call_creates_it(store: StateStore) -> None:
    await store.append_call_event("CA9", {"event": "early"})
    assert await store.get_call("CA9") == {"call_sid": "CA9", "events": [{"event": "early"}]}


async def test_put_call_replaces_document_and_events(store: StateStore) -> None:
    await store.put_call(call("CA1", T0, status="completed", extra=True))
    await store.append_call_event("CA1", {"event": "old"})
    replacement = call("CA1", T0 + 5, events=[{"event": "new"}])
    await store.put_call(replacement)
    assert await store.get_call("CA1") == replacement


async def test_put_call_without_events_keeps_the_stored_events(store: StateStore) -> None:
    await store.put_call(call("CA1", T0))
    await store.append_call_event("CA1", {"event": "status"})
    again = {key: value for key, value in call("CA1", T0, reason="retried").items() if key != "events"}
    await store.put_calls([again])  # e.g. Twilio re-sending the voice webhook
    assert await store.get_call("CA1") == {**again, "events": [{"event": "status"}]}


async def test_put_call_of_one_record_without_events_keeps_the_stored_events(store: StateStore) -> None:
    """The single-record path too (the breaker's half-open trial writes its record with put_call)."""
    await store.put_call(call("CA1", T0))
    await store.append_call_event("CA1", {"event": "legacy.resumed"})
    again = {key: value for key, value in call("CA1", T0, reason="retried").items() if key != "events"}
    await store.put_call(again)
    assert await store.get_call("CA1") == {**again, "events": [{"event": "legacy.resumed"}]}


async def test_list_calls_newest_first_with_limit_and_since(store: StateStore) -> None:
    for i, started in enumerate([T0 + 30, T0 + 10, T0 + 40, T0 + 20]):
        await store.put_call(call(f"CA{i}", started))
    await store.append_call_event("CA2", {"event": "x"})

    listed = await store.list_calls()
    assert [c["call_sid"] for c in listed] == ["CA2", "CA0", "CA3", "CA1"]
    assert listed[0]["events"] == [{"event": "x"}]
    assert [c["call_sid"] for c in await store.list_calls(limit=2)] == ["CA2", "CA0"]
    assert [c["call_sid"] for c in await store.list_calls(since=T0 + 20)] == ["CA2", "CA0", "CA3"]
    assert [c["call_sid"] for c in await store.list_calls(limit=1, since=T0 + 15)] == ["CA2"]
    assert await store.list_calls(since=T0 + 41) == []


async def test_merging_started_at_reorders_the_list(store: StateStore) -> None:
    await store.put_call(call("CA1", T0 + 1))
    await store.put_call(call("CA2", T0 + 2))
    await store.merge_call("CA1", {"started_at": T0 + 3})
    assert [c["call_sid"] for c in await store.list_calls(since=T0)] == ["CA1", "CA2"]


# Turns ---------------------------------------------------------------------------------------------------


async def test_turns_oldest_first_since_and_per_call(store: StateStore) -> None:
    await store.append_turn(turn("CA1", 1, T0 + 5.5))
    await store.append_turn(turn("CA2", 0, T0 + 1.25))
    await store.append_turn(turn("CA1", 0, T0 + 1.0))
    await store.append_turn(turn("CA2", 1, T0 + 9.0))

    everything = await store.list_turns()
    assert [(t["call_sid"], t["turn"]) for t in everything] == [
        ("CA1", 0),
        ("CA2", 0),
        ("CA1", 1),
        ("CA2", 1),
    ]
    assert TurnRecord.from_dict(everything[2]) == TurnRecord.from_dict(turn("CA1", 1, T0 + 5.5))

    assert [t["turn"] for t in await store.list_turns(call_sid="CA1")] == [0, 1]
    assert [(t["call_sid"], t["turn"]) for t in await store.list_turns(since=T0 + 1.25)] == [
        ("CA2", 0),
        ("CA1", 1),
        ("CA2", 1),
    ]
    assert [t["turn"] for t in await store.list_turns(since=T0 + 2, call_sid="CA2")] == [1]
    assert [t["at"] for t in await store.list_turns(limit=2)] == [T0 + 1.0, T0 + 1.25]
    assert await store.list_turns(call_sid="CA-none") == []


async def test_append_turns_writes_a_batch_in_order(store: StateStore) -> None:
    await store.append_turns([])
    await store.append_turns([turn("CA1", 0, T0 + 1.0), turn("CA2", 0, T0 + 1.0), turn("CA1", 1, T0 + 0.5)])
    assert [(t["call_sid"], t["turn"]) for t in await store.list_turns()] == [
        ("CA1", 1),
        ("CA1", 0),
        ("CA2", 0),
    ]
    assert [t["turn"] for t in await store.list_turns(call_sid="CA1")] == [1, 0]
    assert await store.list_turns(call_sid="CA2") == [turn("CA2", 0, T0 + 1.0)]


async def test_turns_with_equal_times_keep_insertion_order(store: StateStore) -> None:
    for number in range(5):
        await store.append_turn(turn("CA1", number, T0))
    await store.append_turn(turn("CA1", 0, T0))  # an identical record is a second record
    assert [t["turn"] for t in await store.list_turns(call_sid="CA1")] == [0, 1, 2, 3, 4, 0]


# History and values --------------------------------------------------------------------------------------


async def test_history_keeps_the_newest_cap_messages(store: StateStore) -> None:
    assert await store.get_history("CA1") == []
    await store.append_history("CA1", [{"role": "user", "content": "one"}], cap=3)
    await store.append_history(
        "CA1",
        [{"role": "assistant", "content": "two"}, {"role": "user", "content": "three"}],
        cap=3,
    )
    await store.append_history("CA2", [{"role": "user", "content": "other call"}], cap=3)
    await store.append_history(
        "CA1",
        [{"role": "assistant", "content": "four"}, {"role": "user", "content": "five"}],
        cap=3,
    )
    assert [m["content"] for m in await store.get_history("CA1")] == ["three", "four", "five"]
    assert await store.get_history("CA2") == [{"role": "user", "content": "other call"}]

    await store.append_history("CA1", [], cap=1)
    assert [m["content"] for m in await store.get_history("CA1")] == ["five"]


async def test_history_expires(store: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(router.store.sqlite, "HISTORY_TTL_SECONDS", 0.05)
    monkeypatch.setattr(router.store.redis, "HISTORY_TTL_SECONDS", 0.05)
    await store.append_history("CA1", [{"content": "old"}], cap=5)
    await asyncio.sleep(0.15)
    assert await store.get_history("CA1") == []
    await store.append_history("CA1", [{"content": "new"}], cap=5)
    assert await store.get_history("CA1") == [{"content": "new"}]


async def test_values_round_trip_and_expire(store: StateStore) -> None:
    assert await store.get_value("missing") is None
    await store.set_value("counter:CA1", {"turns": 1})
    await store.set_value("counter:CA1", {"turns": 2, "nested": {"x": [1.5]}})
    await store.set_value("short", {"v": 1}, ttl=0.05)
    await store.set_value("gone", {"v": 1})
    await store.set_value("gone", {"v": 2}, ttl=0)
    await asyncio.sleep(0.15)
    assert await store.get_value("counter:CA1") == {"turns": 2, "nested": {"x": [1.5]}}
    assert await store.get_value("short") is None
    assert await store.get_value("gone") is None


# Twilio webhook retries ------------------------------------------------------------------------------------

ANSWER = {"status": 200, "headers": [["content-type", "text/xml"]], "body": "PFJlc3BvbnNlLz4="}


async def test_a_webhook_claim_has_one_holder_until_it_is_answered(store: StateStore) -> None:
    assert await store.webhook_claim("CA1:tok", "first", 10.0) == WebhookClaim(claimed=True)
    assert await store.webhook_claim("CA1:tok", "first", 10.0) == WebhookClaim(claimed=True), "its own claim"
    assert await store.webhook_claim("CA1:tok", "retry", 10.0) == WebhookClaim(), "held by another attempt"
    assert await store.webhook_claim("CA1:other", "retry", 10.0) == WebhookClaim(claimed=True)
    await store.webhook_answer("CA1:tok", ANSWER, 20.0)
    assert await store.webhook_claim("CA1:tok", "retry", 10.0) == WebhookClaim(answer=ANSWER)
    await store.webhook_answer("CA1:tok", {**ANSWER, "status": 500}, 20.0)
    assert await store.webhook_claim("CA1:tok", "late", 10.0) == WebhookClaim(answer=ANSWER), (
        "the first stays"
    )
    await store.webhook_release("CA1:tok", "first")
    assert await store.webhook_claim("CA1:tok", "late", 10.0) == WebhookClaim(answer=ANSWER), "answered: kept"


async def test_concurrent_webhook_claims_have_one_winner(store: StateStore) -> None:
    claims = await asyncio.gather(*(store.webhook_claim("CA1:tok", f"attempt-{i}", 10.0) for i in range(8)))
    assert sorted(claim.claimed for claim in claims) == [False] * 7 + [True]


async def test_a_webhook_claim_expires_or_is_released_and_a_retry_takes_over(store: StateStore) -> None:
    assert (await store.webhook_claim("CA1:tok", "dead", 0.05)).claimed
    assert not (await store.webhook_claim("CA1:tok", "retry", 10.0)).claimed
    await asyncio.sleep(0.1)
    assert (await store.webhook_claim("CA1:tok", "retry", 10.0)).claimed, "the dead attempt's claim expired"

    assert (await store.webhook_claim("CA2:tok", "failed", 10.0)).claimed
    await store.webhook_release("CA2:tok", "someone-else")
    assert not (await store.webhook_claim("CA2:tok", "retry", 10.0)).claimed, "only its holder releases it"
    await store.webhook_release("CA2:tok", "failed")
    assert (await store.webhook_claim("CA2:tok", "retry", 10.0)).claimed


async def test_a_webhook_claim_its_holder_claims_again_is_renewed_and_outlives_its_first_lease(
    store: StateStore,
) -> None:
    """A live attempt renews its short lease; only a dead one's runs out."""
    assert (await store.webhook_claim("CA1:tok", "live", 1.0)).claimed
    await asyncio.sleep(0.6)
    assert (await store.webhook_claim("CA1:tok", "live", 1.0)).claimed, "renewed"
    await asyncio.sleep(0.6)  # past the first lease, inside the renewed one (0.4 s of slack for a slow box)
    assert not (await store.webhook_claim("CA1:tok", "retry", 10.0)).claimed
    await asyncio.sleep(0.7)  # the renewals stopped: the lease runs out
    assert (await store.webhook_claim("CA1:tok", "retry", 10.0)).claimed
    assert await store.webhook_claim("CA1:tok", "live", 10.0) == WebhookClaim(), "a lost claim is not renewed"


async def test_webhook_answers_expire(store: StateStore) -> None:
    await store.webhook_answer("CA1:tok", ANSWER, 0.05)  # also with no claim before it (the claim expired)
    assert await store.webhook_claim("CA1:tok", "retry", 10.0) == WebhookClaim(answer=ANSWER)
    await asyncio.sleep(0.1)
    assert await store.webhook_claim("CA1:tok", "much-later", 10.0) == WebhookClaim(claimed=True)


async def test_prune_records_deletes_old_calls_with_their_events_and_turns(store: StateStore) -> None:
    base = 1_700_000_000.0
    for index, started in enumerate((base - 100, base - 50, base + 10)):
        sid = f"CA{index}"
        await store.put_call({"call_sid": sid, "started_at": started})
        await store.append_call_event(sid, {"type": "x"})
        await store.append_turn({"call_sid": sid, "at": started + 1, "turn": 1})
    await store.append_call_event("CAorphan", {"type": "only events"})  # no record: started_at unknown
    await store.append_turn({"call_sid": "CAgone", "at": base - 500, "turn": 3})

    assert await store.prune_records(base) == 2

    assert [c["call_sid"] for c in await store.list_calls(limit=10, since=base - 1000)] == ["CA2"]
    assert await store.get_call("CA0") is None and await store.get_call("CA1") is None
    assert await store.get_call("CAorphan") is not None
    assert [t["call_sid"] for t in await store.list_turns()] == ["CA2"]
    assert await store.list_turns(call_sid="CA0") == []
    assert await store.prune_records(base) == 0


async def test_pruning_a_call_removes_its_turns_from_every_view(store: StateStore) -> None:
    """Including a turn newer than the cut-off: the call it belonged to is gone."""
    base = 1_700_000_000.0
    await store.put_call({"call_sid": "CA0", "started_at": base - 100})
    await store.append_turn({"call_sid": "CA0", "at": base - 99, "turn": 0})
    await store.append_turn({"call_sid": "CA0", "at": base + 5, "turn": 3})  # the call went on past it
    assert await store.prune_records(base) == 1
    assert await store.list_turns() == []
    assert await store.list_turns(call_sid="CA0") == []


async def test_pruning_old_turns_removes_them_from_their_call_too(store: StateStore) -> None:
    """A turn older than the cut-off goes whatever its call (here one with no record), per call as well."""
    base = 1_700_000_000.0
    await store.append_turn({"call_sid": "CAnorecord", "at": base - 500, "turn": 1})
    await store.append_turn({"call_sid": "CAnorecord", "at": base + 1, "turn": 2})
    assert await store.prune_records(base) == 0
    assert [t["turn"] for t in await store.list_turns()] == [2]
    assert [t["turn"] for t in await store.list_turns(call_sid="CAnorecord")] == [2]


async def test_put_calls_writes_a_batch_like_put_call(store: StateStore) -> None:
    base = 1_700_000_000.0
    await store.put_call({"call_sid": "CA0", "started_at": base, "status": "old"})
    await store.append_call_event("CA0", {"type": "stale"})
    await store.put_calls(
        [
            {"call_sid": "CA0", "started_at": base, "status": "replaced", "events": []},
            {"call_sid": "CA1", "started_at": base + 1, "events": [{"type": "e"}]},
        ]
    )
    assert await store.get_call("CA0") == {
        "call_sid": "CA0",
        "started_at": base,
        "status": "replaced",
        "events": [],
    }
    second = await store.get_call("CA1")
    assert second is not None and second["events"] == [{"type": "e"}]
    assert [c["call_sid"] for c in await store.list_calls()] == ["CA1", "CA0"]
    await store.put_calls([])
    with pytest.raises(ValueError):
        await store.put_calls([{"call_sid": "CA2", "started_at": base}, {"started_at": base}])
    assert await store.get_call("CA2") is None  # nothing of a refused batch is written


async def test_put_calls_with_one_call_twice_keeps_the_later_record(store: StateStore) -> None:
    base = 1_700_000_000.0
    await store.put_calls(
        [
            {"call_sid": "CA5", "started_at": base, "status": "first", "events": [{"type": "a"}]},
            {"call_sid": "CA6", "started_at": base + 0.5, "note": 'quotes " and \\ and ünï'},
            {"call_sid": "CA5", "started_at": base + 1, "status": "second", "events": [{"type": "b"}]},
        ]
    )
    assert await store.get_call("CA5") == {
        "call_sid": "CA5",
        "started_at": base + 1,
        "status": "second",
        "events": [{"type": "b"}],
    }
    other = await store.get_call("CA6")
    assert other is not None and other["note"] == 'quotes " and \\ and ünï'
    assert other["started_at"] == base + 0.5


async def test_the_longest_breaker_window_the_settings_accept_is_kept_whole(store: StateStore) -> None:
    """``BREAKER_WINDOW_SECONDS`` above the stores' bucket retention (2 h) was accepted, and the breaker then
    silently judged the last 2 h only (SQLite deletes older buckets, Redis expires them and clips the
    read): a 3 h window under-counted calls and failures and could stay closed through an outage. The
    setting now stops at the retention, and a window of that length is counted whole by both stores."""
    from pydantic import ValidationError

    from flags.breaker import BreakerConfig, CircuitBreaker, Outcome
    from flags.clock import FakeClock
    from router.settings import Settings

    retention = min(router.store.sqlite.WINDOW_RETENTION_SECONDS, router.store.redis.WINDOW_RETENTION_SECONDS)
    with pytest.raises(ValidationError):
        Settings(breaker_window_seconds=retention + 1)
    longest = Settings(breaker_window_seconds=retention).breaker_window_seconds
    clock = FakeClock(T0)
    breaker = CircuitBreaker(BreakerConfig(window_seconds=longest), store, clock=clock)
    for _ in range(9):
        await breaker.record(Outcome.FAILURE)
    clock.advance(longest - 1)  # the first nine are still inside the window (its oldest second)
    await breaker.record(Outcome.SUCCESS)  # the tenth call: minimum reached, 90 % failed
    status = await breaker.status()
    assert (status.calls_in_window, status.state) == (10, BreakerState.OPEN)
