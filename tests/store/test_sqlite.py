"""What only the SQLite backend promises: the file survives restarts, WAL, errors become StoreUnavailable."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

import router.store.sqlite
from flags.breaker_state import BreakerDocument, BreakerState, WindowTotals
from router.store.base import AuditEntry, StoreUnavailable
from router.store.sqlite import SqliteStore
from tests.store.every_method import EVERY_METHOD

T0 = 1_700_000_000


async def test_everything_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "state.db"
    first = SqliteStore(path)
    await first.open()
    await first.swap_rollout(None, {"percent_bp": 500, "version": 1})
    await first.breaker_swap(None, BreakerDocument(state=BreakerState.OPEN, reason="trip", version=1))
    await first.breaker_add_outcome(T0, failed=True, slow=False)
    audit = await first.append_audit(AuditEntry(T0, "ops", "rollout.set", "ramp", None, {"percent": 5}))
    await first.put_call({"call_sid": "CA1", "started_at": T0, "status": "in-progress"})
    await first.append_call_event("CA1", {"event": "answered"})
    await first.append_turn({"call_sid": "CA1", "at": T0 + 1, "turn": 0, "pipeline": "legacy"})
    await first.append_history("CA1", [{"role": "user", "content": "hi"}], cap=10)
    await first.set_value("k", {"v": 1})
    await first.close()

    second = SqliteStore(path)
    await second.open()
    try:
        assert await second.get_rollout() == {"percent_bp": 500, "version": 1}
        assert await second.breaker_load() == BreakerDocument(
            state=BreakerState.OPEN, reason="trip", version=1
        )
        assert await second.breaker_window(T0, T0) == WindowTotals(calls=1, failures=1, slow=0)
        assert await second.list_audit() == [audit]
        assert await second.get_call("CA1") == {
            "call_sid": "CA1",
            "started_at": T0,
            "status": "in-progress",
            "events": [{"event": "answered"}],
        }
        assert [t["turn"] for t in await second.list_turns()] == [0]
        assert await second.get_history("CA1") == [{"role": "user", "content": "hi"}]
        assert await second.get_value("k") == {"v": 1}
        # ids keep counting after a restart
        later = await second.append_audit(AuditEntry(T0 + 1, "ops", "rollout.set", "", None, None))
        assert later.id is not None and audit.id is not None and later.id > audit.id
    finally:
        await second.close()


async def test_file_uses_wal_journal(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    await store.open()
    await store.close()
    with sqlite3.connect(tmp_path / "state.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_two_instances_on_one_file_have_one_cas_winner(tmp_path: Path) -> None:
    """BEGIN IMMEDIATE makes read-check-write atomic across connections (another process, the CLI)."""
    stores = [SqliteStore(tmp_path / "state.db") for _ in range(3)]
    for store in stores:
        await store.open()
    try:
        assert await stores[0].swap_rollout(None, {"version": 1})
        for version in (1, 2, 3, 4):
            attempts = [
                store.swap_rollout(version, {"version": version + 1, "by": n})
                for n, store in enumerate(stores * 3)
            ]
            results = await asyncio.gather(*attempts)
            assert results.count(True) == 1
            assert await stores[1].get_rollout() == {"version": version + 1, "by": results.index(True) % 3}
    finally:
        for store in stores:
            await store.close()


async def test_expired_values_are_pruned_from_the_file(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    await store.open()
    try:
        await store.set_value("short", {"v": 1}, ttl=0.01)
        await asyncio.sleep(0.05)
        await store.set_value("other", {"v": 2})
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "state.db") as conn:
        assert [key for (key,) in conn.execute("SELECT key FROM kv")] == ["other"]


async def test_parent_that_is_a_file_raises_store_unavailable(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("x")
    store = SqliteStore(tmp_path / "not-a-dir" / "state.db")
    with pytest.raises(StoreUnavailable):
        await store.open()
    with pytest.raises(StoreUnavailable):
        await store.ping()


async def test_path_that_is_a_directory_raises_store_unavailable(tmp_path: Path) -> None:
    (tmp_path / "state.db").mkdir()
    store = SqliteStore(tmp_path / "state.db")
    with pytest.raises(StoreUnavailable):
        await store.open()


async def test_use_before_open_or_after_close_raises_store_unavailable(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    with pytest.raises(StoreUnavailable):
        await store.get_rollout()
    await store.open()
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.list_calls()


async def test_a_call_without_a_sid_is_refused(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    await store.open()
    try:
        with pytest.raises(ValueError, match="call_sid"):
            await store.put_call({"started_at": T0})
    finally:
        await store.close()


async def test_a_write_that_fails_halfway_leaves_nothing_and_the_next_write_works(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    await store.open()

    def half(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO kv (key, doc, expires_at) VALUES ('half', '{}', 9e99)")
        raise RuntimeError("failed after its first statement")

    try:
        with pytest.raises(RuntimeError, match="first statement"):
            await store._write(half)  # its savepoint is rolled back; the connection stays usable
        count = await store._read(lambda conn: conn.execute("SELECT count(*) FROM kv").fetchone()[0])
        assert count == 0
        await store.put_call({"call_sid": "CA1", "started_at": T0})
        assert await store.get_call("CA1") == {"call_sid": "CA1", "started_at": T0, "events": []}
    finally:
        await store.close()


@pytest.mark.parametrize("method", sorted(EVERY_METHOD))
async def test_every_method_on_an_unopenable_file_raises_store_unavailable(
    tmp_path: Path, method: str
) -> None:
    (tmp_path / "not-a-dir").write_text("x")
    store = SqliteStore(tmp_path / "not-a-dir" / "state.db")
    with pytest.raises(StoreUnavailable):
        await store.open()
    with pytest.raises(StoreUnavailable):
        await EVERY_METHOD[method](store)


async def test_wal_is_checkpointed_in_the_background_not_on_the_write_path(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    await store.open()
    try:
        database = tmp_path / "state.db"
        initial = database.stat().st_size
        for index in range(300):
            await store.append_turn({"call_sid": f"CA{index}", "at": 1.0 + index, "text": "x" * 2000})
        # Commits only append to the WAL (no automatic checkpoint inside a write)...
        assert database.stat().st_size == initial
        # ...and the background checkpointer moves the pages into the database file within a second or so.
        for _ in range(100):
            if database.stat().st_size > initial:
                break
            await asyncio.sleep(0.05)
        assert database.stat().st_size > initial
    finally:
        await store.close()


class _StallingDecoder:
    """``orjson`` as the SQLite store module sees it, except that decoding a document containing ``marker``
    stalls (on the store's thread) until ``release``: a report read caught in the middle."""

    def __init__(self, marker: bytes) -> None:
        self.marker = marker
        self.entered, self.release = threading.Event(), threading.Event()

    def dumps(self, value: Any) -> bytes:
        return orjson.dumps(value)

    def loads(self, data: str | bytes) -> Any:
        raw = data.encode() if isinstance(data, str) else data
        if self.marker in raw:
            self.entered.set()
            self.release.wait()
        return orjson.loads(raw)


LONG_READS: dict[str, Callable[[SqliteStore], Awaitable[list[dict[str, Any]]]]] = {
    "list_turns": lambda store: store.list_turns(),
    "list_calls": lambda store: store.list_calls(limit=1_000_000),
}


@pytest.mark.parametrize("long_read", sorted(LONG_READS))
async def test_webhook_reads_and_writes_are_not_queued_behind_a_long_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, long_read: str
) -> None:
    """While a report's listing is stuck mid-read, the webhook's rollout read and record write complete."""
    store = SqliteStore(tmp_path / "state.db")
    await store.open()
    decoder = _StallingDecoder(b"stall-here")
    try:
        await store.swap_rollout(None, {"version": 1})
        await store.put_call({"call_sid": "CA1", "started_at": T0, "note": "stall-here"})
        await store.append_turn({"call_sid": "CA1", "at": T0 + 1, "note": "stall-here"})
        monkeypatch.setattr(router.store.sqlite, "orjson", decoder)
        report = asyncio.ensure_future(LONG_READS[long_read](store))
        assert await asyncio.to_thread(decoder.entered.wait, 30), "the long read never started"
        # The timeouts only keep a regression from hanging the suite; nothing here depends on speed.
        assert await asyncio.wait_for(store.get_rollout(), timeout=30) == {"version": 1}
        await asyncio.wait_for(store.put_calls([{"call_sid": "CA2", "started_at": T0 + 2}]), timeout=30)
        assert not report.done(), "the long read was still stalled while the webhook was served"
        decoder.release.set()
        assert [row["call_sid"] for row in await report] == ["CA1"]
    finally:
        decoder.release.set()
        await store.close()


async def test_expired_webhook_claims_and_answers_are_pruned_from_the_file(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    await store.open()
    try:
        await store.webhook_claim("CA1:dead", "owner", 0.01)
        await store.webhook_answer("CA1:answered", {"status": 200}, 0.01)
        await store.webhook_claim("CA1:live", "owner", 60.0)
        await asyncio.sleep(0.05)
        await store.prune_records(0.0)
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "state.db") as conn:
        assert [key for (key,) in conn.execute("SELECT key FROM webhook_answers")] == ["CA1:live"]
