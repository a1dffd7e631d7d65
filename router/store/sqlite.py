"""SQLite state store: the embedded default for one replica (``STATE_URL=sqlite:///var/state.db``).

One connection lives on one worker thread, so every operation runs whole and in submission order without
blocking the event loop, and no two coroutines can interleave statements inside one transaction. Operations
that queue up while the worker is busy run as one group: one transaction, each operation inside its own
SAVEPOINT (so one failing operation rolls back only itself), one COMMIT, one wake-up of the event loop.
Under load that turns N thread round trips and N commits into one (group commit). Writes take
the write lock up front (``BEGIN IMMEDIATE``) so compare-and-set also holds against another process on the
same file (the CLI while the server runs). WAL + ``synchronous=NORMAL``: readers never wait for the writer and
a commit costs no fsync (a power cut may lose the last commits, never corrupt the file).

Long reads (listing calls and turns for a report or the admin API) run the same way on a second, read-only
connection with its own thread: a report reading a day of records takes seconds, and on the one worker the
webhook's reads and writes would wait behind it. WAL lets the two connections read at the same time.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import orjson

from flags.breaker_state import BreakerDocument, BreakerTransition, WindowTotals
from router.store.base import AuditEntry, StoreUnavailable, WebhookClaim, breaker_audit_entry
from router.store.documents import call_sid_of, split_events

T = TypeVar("T")

WINDOW_RETENTION_SECONDS = 7_200  # longer than any breaker window we would configure
HISTORY_TTL_SECONDS = 86_400.0  # a conversation's history outlives its call by about a day
BUSY_TIMEOUT_SECONDS = 5.0  # another process holding the write lock (CLI) is waited for, on the worker
CHECKPOINT_INTERVAL_SECONDS = 1.0

_ROLLOUT = "rollout"
_BREAKER = "breaker"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    name TEXT PRIMARY KEY, version INTEGER NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS breaker_window (
    second INTEGER PRIMARY KEY, calls INTEGER NOT NULL, failures INTEGER NOT NULL, slow INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS calls (
    call_sid TEXT PRIMARY KEY, started_at REAL NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS calls_started_at ON calls (started_at);
CREATE TABLE IF NOT EXISTS call_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, call_sid TEXT NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS call_events_call_sid ON call_events (call_sid);
CREATE TABLE IF NOT EXISTS turns (
    id INTEGER PRIMARY KEY AUTOINCREMENT, call_sid TEXT NOT NULL, at REAL NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS turns_at ON turns (at);
CREATE INDEX IF NOT EXISTS turns_call_sid_at ON turns (call_sid, at);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT, call_sid TEXT NOT NULL, doc TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS history_call_sid ON history (call_sid);
CREATE INDEX IF NOT EXISTS history_expires_at ON history (expires_at);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY, doc TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS kv_expires_at ON kv (expires_at);
CREATE TABLE IF NOT EXISTS webhook_answers (
    key TEXT PRIMARY KEY, owner TEXT NOT NULL, answer TEXT, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS webhook_answers_expires_at ON webhook_answers (expires_at);
"""


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _started_at(body: dict[str, Any]) -> float:
    return float(body.get("started_at") or 0.0)


# Batches go to SQLite as one JSON array bound to one statement. The sqlite3 module releases and retakes
# the GIL around every step, so a row-by-row batch of a few hundred records meant a few hundred GIL
# hand-offs with the event loop, which cost the webhook more than SQLite's own work; one statement per
# batch is one hand-off. json_each keeps the array's order (a later record of the same call wins). Each
# row is ``[call_sid, time, document]`` with the document as a JSON object, not a string inside the
# array: ``json_extract`` hands an object back as its JSON text, so a record is encoded once, not twice.
UPSERT_CALLS_FROM_JSON = (
    "INSERT INTO calls (call_sid, started_at, doc) "
    "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]') "
    "FROM json_each(?) WHERE true ORDER BY key "
    "ON CONFLICT (call_sid) DO UPDATE SET started_at = excluded.started_at, doc = excluded.doc"
)
INSERT_TURNS_FROM_JSON = (
    "INSERT INTO turns (call_sid, at, doc) "
    "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]') "
    "FROM json_each(?) ORDER BY key"
)

MAX_GROUP = 256  # operations committed together at most


@dataclass
class _Job(Generic[T]):
    begin: str | None  # None: run ``fn(None)`` outside any transaction (connect, close)
    fn: Callable[[sqlite3.Connection | None], T]
    future: asyncio.Future[T]
    loop: asyncio.AbstractEventLoop


def _settle(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in outcomes:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class _Worker:
    """The thread that owns the connection and runs queued operations in groups (see the module doc)."""

    def __init__(self, name: str = "sqlite-store") -> None:
        self._queue: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.conn: sqlite3.Connection | None = None
        self._thread.start()

    def submit(self, begin: str | None, fn: Callable[[sqlite3.Connection | None], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Job(begin, fn, future, loop))
        return future

    def stop(self) -> None:
        self._queue.put(None)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if job.begin is None:
                self._deliver([job], self._alone(job))
                continue
            group = [job]
            stopping = False
            while len(group) < MAX_GROUP:
                try:
                    following = self._queue.get_nowait()
                except queue.Empty:
                    break
                if following is None:
                    stopping = True
                    break
                if following.begin is None:
                    self._deliver(group, self._together(group))
                    self._deliver([following], self._alone(following))
                    group = []
                    break
                group.append(following)
            if group:
                self._deliver(group, self._together(group))
            if stopping:
                return

    def _alone(self, job: _Job[Any]) -> list[tuple[Any, BaseException | None]]:
        try:
            return [(job.fn(self.conn), None)]
        except BaseException as exc:
            return [(None, exc)]

    def _together(self, group: list[_Job[Any]]) -> list[tuple[Any, BaseException | None]]:
        conn = self.conn
        if conn is None:
            error = sqlite3.ProgrammingError("the connection is closed")
            return [(None, error) for _ in group]
        begin = "BEGIN IMMEDIATE" if any(job.begin == "BEGIN IMMEDIATE" for job in group) else "BEGIN"
        outcomes: list[tuple[Any, BaseException | None]] = []
        try:
            conn.execute(begin)
            for job in group:
                conn.execute("SAVEPOINT op")
                try:
                    result = job.fn(conn)
                except BaseException as exc:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    outcomes.append((None, exc))
                else:
                    conn.execute("RELEASE op")
                    outcomes.append((result, None))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.rollback()
            return [(None, exc) for _ in group]
        return outcomes

    @staticmethod
    def _deliver(group: list[_Job[Any]], outcomes: list[tuple[Any, BaseException | None]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]]
        by_loop = {}
        for job, (result, error) in zip(group, outcomes, strict=True):
            by_loop.setdefault(job.loop, []).append((job.future, result, error))
        for loop, settled in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting any more
                loop.call_soon_threadsafe(_settle, settled)


class _Checkpointer:
    """Moves the WAL into the database file from its own thread and connection, once a second.

    SQLite's automatic checkpoint runs inside whichever commit crosses 1,000 WAL pages, so every few
    hundred writes one of them (and everything group-committed with it) waits for the copy: a latency
    spike on the webhook. A PASSIVE checkpoint from another connection never blocks readers or writers.
    """

    def __init__(self, path: Path, interval: float = CHECKPOINT_INTERVAL_SECONDS) -> None:
        self._path = path
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self._path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
        except sqlite3.Error:
            return
        try:
            while not self._stop.wait(self._interval):
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop.set()


class SqliteStore:
    """:class:`~router.store.base.StateStore` on one SQLite file; a new instance on the same file sees all."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._worker: _Worker | None = None
        self._long_reads: _Worker | None = None
        self._checkpointer: _Checkpointer | None = None

    # Plumbing -------------------------------------------------------------------------------------------

    async def open(self) -> None:
        if self._worker is not None:
            return
        worker = _Worker()
        try:
            worker.conn = await self._submit(worker.submit(None, lambda _: self._connect()))
        except BaseException:
            worker.stop()
            raise
        long_reads = _Worker("sqlite-store-long-reads")
        try:
            long_reads.conn = await self._submit(long_reads.submit(None, lambda _: self._connect_reader()))
        except BaseException:
            long_reads.stop()
            await self._stop_worker(worker)
            raise
        self._worker, self._long_reads = worker, long_reads
        self._checkpointer = _Checkpointer(self.path)

    async def close(self) -> None:
        worker, self._worker = self._worker, None
        long_reads, self._long_reads = self._long_reads, None
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.stop()
        try:
            if long_reads is not None:
                await self._stop_worker(long_reads)
        finally:
            if worker is not None:
                await self._stop_worker(worker)

    async def _stop_worker(self, worker: _Worker) -> None:
        """Close the worker's connection on its own thread, then end the thread."""
        conn = worker.conn

        def close_connection(_: sqlite3.Connection | None) -> None:
            worker.conn = None
            if conn is not None:
                conn.close()

        try:
            await self._submit(worker.submit(None, close_connection))
        finally:
            worker.stop()

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA wal_autocheckpoint=0")  # the _Checkpointer does it, off the write path
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect_reader(self) -> sqlite3.Connection:
        """A read-only connection for the long reads (the file and its tables exist: ``_connect`` ran)."""
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA query_only=ON")
        except BaseException:
            conn.close()
            raise
        return conn

    async def _submit(self, future: asyncio.Future[T]) -> T:
        try:
            return await future
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"SQLite state store {self.path}: {exc}") from exc

    async def _transaction(
        self, begin: str, fn: Callable[[sqlite3.Connection], T], *, long: bool = False
    ) -> T:
        worker = self._long_reads if long else self._worker
        if worker is None:
            raise StoreUnavailable(f"SQLite state store {self.path} is not open")

        def run(conn: sqlite3.Connection | None) -> T:
            assert conn is not None  # grouped jobs always run with the connection
            return fn(conn)

        return await self._submit(worker.submit(begin, run))

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A consistent snapshot across the statements in ``fn``."""
        return await self._transaction("BEGIN", fn)

    async def _long_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A read that may take seconds (listing calls or turns for a report): on its own connection and
        thread, so the webhook's short reads and writes are not queued behind it. WAL lets both connections
        read at once; the snapshot starts after every write already committed (the admin API flushes first)."""
        return await self._transaction("BEGIN", fn, long=True)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Holds the write lock from the first read, so read-check-write is atomic."""
        return await self._transaction("BEGIN IMMEDIATE", fn)

    async def ping(self) -> None:
        await self._read(lambda conn: conn.execute("SELECT count(*) FROM documents").fetchone())

    # Versioned documents (rollout, breaker) ---------------------------------------------------------------

    async def _load_document(self, name: str) -> dict[str, Any] | None:
        def run(conn: sqlite3.Connection) -> dict[str, Any] | None:
            row = conn.execute("SELECT doc FROM documents WHERE name = ?", (name,)).fetchone()
            return None if row is None else dict(orjson.loads(row[0]))

        return await self._read(run)

    async def _swap_document(
        self,
        name: str,
        expected_version: int | None,
        new: dict[str, Any],
        audit: AuditEntry | None = None,
        *,
        clear_window: bool = False,
    ) -> bool:
        version, doc = int(new.get("version", 0)), _dumps(new)
        audit_body = None if audit is None else _audit_body(audit)

        def run(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT version FROM documents WHERE name = ?", (name,)).fetchone()
            if (None if row is None else int(row[0])) != expected_version:
                return False
            if clear_window:
                conn.execute("DELETE FROM breaker_window")
            conn.execute(
                "INSERT INTO documents (name, version, doc) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET version = excluded.version, doc = excluded.doc",
                (name, version, doc),
            )
            if audit_body is not None:  # same transaction (savepoint): a failure here undoes all of it
                conn.execute("INSERT INTO audit (doc) VALUES (?)", (audit_body,))
            return True

        return await self._write(run)

    async def get_rollout(self) -> dict[str, Any] | None:
        return await self._load_document(_ROLLOUT)

    async def swap_rollout(
        self, expected_version: int | None, new: dict[str, Any], audit: AuditEntry | None = None
    ) -> bool:
        return await self._swap_document(_ROLLOUT, expected_version, new, audit)

    async def breaker_load(self) -> BreakerDocument | None:
        doc = await self._load_document(_BREAKER)
        return None if doc is None else BreakerDocument.from_dict(doc)

    async def breaker_swap(
        self, expected_version: int | None, new: BreakerDocument, transition: BreakerTransition | None = None
    ) -> bool:
        if transition is None:
            return await self._swap_document(_BREAKER, expected_version, new.to_dict())
        audit = breaker_audit_entry(transition, new)
        return await self._swap_document(
            _BREAKER, expected_version, new.to_dict(), audit, clear_window=transition.clear_window
        )

    # Breaker window ---------------------------------------------------------------------------------------

    async def breaker_add_outcome(self, second: int, *, failed: bool, slow: bool) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO breaker_window (second, calls, failures, slow) VALUES (?, 1, ?, ?) "
                "ON CONFLICT (second) DO UPDATE SET calls = calls + 1, "
                "failures = failures + excluded.failures, slow = slow + excluded.slow",
                (second, int(failed), int(slow)),
            )
            conn.execute("DELETE FROM breaker_window WHERE second < ?", (second - WINDOW_RETENTION_SECONDS,))

        await self._write(run)

    async def breaker_window(self, first_second: int, last_second: int) -> WindowTotals:
        def run(conn: sqlite3.Connection) -> WindowTotals:
            calls, failures, slow = conn.execute(
                "SELECT coalesce(sum(calls), 0), coalesce(sum(failures), 0), coalesce(sum(slow), 0) "
                "FROM breaker_window WHERE second BETWEEN ? AND ?",
                (first_second, last_second),
            ).fetchone()
            return WindowTotals(calls=int(calls), failures=int(failures), slow=int(slow))

        return await self._read(run)

    async def breaker_clear_window(self) -> None:
        await self._write(lambda conn: conn.execute("DELETE FROM breaker_window"))

    # Audit ------------------------------------------------------------------------------------------------

    async def append_audit(self, entry: AuditEntry) -> AuditEntry:
        doc = entry.to_dict()
        doc.pop("id")
        body = _audit_body(entry)

        def run(conn: sqlite3.Connection) -> int:
            cursor = conn.execute("INSERT INTO audit (doc) VALUES (?)", (body,))
            assert cursor.lastrowid is not None
            return cursor.lastrowid

        return AuditEntry(**doc, id=await self._write(run))

    async def list_audit(self, limit: int = 50) -> list[AuditEntry]:
        if limit <= 0:
            return []

        def run(conn: sqlite3.Connection) -> list[AuditEntry]:
            rows = conn.execute("SELECT id, doc FROM audit ORDER BY id DESC LIMIT ?", (limit,))
            return [AuditEntry(**orjson.loads(doc), id=int(id_)) for id_, doc in rows]

        return await self._read(run)

    # Calls ------------------------------------------------------------------------------------------------

    async def put_call(self, record: dict[str, Any]) -> None:
        sid = call_sid_of(record)
        body, events = split_events(record)

        def run(conn: sqlite3.Connection) -> None:
            _upsert_call(conn, sid, body)
            if events is not None:  # no ``events`` key: the stored ones are kept (base.py, as Redis does)
                _replace_events(conn, sid, events)

        await self._write(run)

    async def put_calls(self, records: list[dict[str, Any]]) -> None:
        rows: list[tuple[str, float, dict[str, Any]]] = []
        events_of: dict[str, list[dict[str, Any]]] = {}  # the last record with events decides a call's events
        for record in records:
            sid = call_sid_of(record)
            body, events = split_events(record)
            rows.append((sid, _started_at(body), body))
            if events is not None:
                events_of[sid] = events
        batch = _dumps(rows)
        sids = _dumps(list(events_of)) if events_of else None
        event_rows = [(sid, _dumps(event)) for sid, events in events_of.items() for event in events]

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(UPSERT_CALLS_FROM_JSON, (batch,))
            if sids is not None:  # the webhook's new-call records carry none: one statement per batch
                conn.execute(
                    "DELETE FROM call_events WHERE call_sid IN (SELECT value FROM json_each(?))", (sids,)
                )
            if event_rows:
                conn.executemany("INSERT INTO call_events (call_sid, doc) VALUES (?, ?)", event_rows)

        await self._write(run)

    async def merge_call(self, call_sid: str, fields: dict[str, Any]) -> None:
        changes, events = split_events(fields)

        def run(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT doc FROM calls WHERE call_sid = ?", (call_sid,)).fetchone()
            body: dict[str, Any] = {"call_sid": call_sid} if row is None else orjson.loads(row[0])
            body.update(changes)
            body["call_sid"] = call_sid
            _upsert_call(conn, call_sid, body)
            if events is not None:
                _replace_events(conn, call_sid, events)

        await self._write(run)

    async def append_call_event(self, call_sid: str, event: dict[str, Any]) -> None:
        stub, doc = _dumps({"call_sid": call_sid}), _dumps(event)

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR IGNORE INTO calls (call_sid, started_at, doc) VALUES (?, 0, ?)", (call_sid, stub)
            )
            conn.execute("INSERT INTO call_events (call_sid, doc) VALUES (?, ?)", (call_sid, doc))

        await self._write(run)

    async def get_call(self, call_sid: str) -> dict[str, Any] | None:
        def run(conn: sqlite3.Connection) -> dict[str, Any] | None:
            row = conn.execute("SELECT doc FROM calls WHERE call_sid = ?", (call_sid,)).fetchone()
            return None if row is None else _with_events(conn, call_sid, row[0])

        return await self._read(run)

    async def list_calls(self, limit: int = 50, since: float | None = None) -> list[dict[str, Any]]:
        if limit <= 0:
            return []
        low = -math.inf if since is None else since

        def run(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                "SELECT call_sid, doc FROM calls WHERE started_at >= ? "
                "ORDER BY started_at DESC, rowid DESC LIMIT ?",
                (low, limit),
            ).fetchall()
            return _with_all_events(conn, rows)

        return await self._long_read(run)

    async def prune_records(self, before: float) -> int:
        cutoff, now = float(before), time.time()

        def run(conn: sqlite3.Connection) -> int:
            # started_at 0 marks a call known only from events (its record was never written): kept.
            sids = [
                row[0]
                for row in conn.execute(
                    "SELECT call_sid FROM calls WHERE started_at > 0 AND started_at < ?", (cutoff,)
                )
            ]
            conn.executemany("DELETE FROM call_events WHERE call_sid = ?", [(sid,) for sid in sids])
            conn.executemany("DELETE FROM calls WHERE call_sid = ?", [(sid,) for sid in sids])
            conn.executemany("DELETE FROM turns WHERE call_sid = ?", [(sid,) for sid in sids])
            conn.execute("DELETE FROM turns WHERE at < ?", (cutoff,))
            conn.execute("DELETE FROM webhook_answers WHERE expires_at <= ?", (now,))
            return len(sids)

        return await self._write(run)

    # Turns ------------------------------------------------------------------------------------------------

    async def append_turn(self, turn: dict[str, Any]) -> None:
        await self.append_turns([turn])

    async def append_turns(self, turns: list[dict[str, Any]]) -> None:
        batch = _dumps([(call_sid_of(turn), float(turn["at"]), turn) for turn in turns])
        await self._write(lambda conn: conn.execute(INSERT_TURNS_FROM_JSON, (batch,)))

    async def list_turns(
        self, since: float | None = None, call_sid: str | None = None, limit: int = 100_000
    ) -> list[dict[str, Any]]:
        if limit <= 0:
            return []
        low = -math.inf if since is None else since
        params: tuple[Any, ...]
        if call_sid is None:
            query, params = "SELECT doc FROM turns WHERE at >= ? ORDER BY at, id LIMIT ?", (low, limit)
        else:
            query = "SELECT doc FROM turns WHERE call_sid = ? AND at >= ? ORDER BY at, id LIMIT ?"
            params = (call_sid, low, limit)

        def run(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            return [orjson.loads(doc) for (doc,) in conn.execute(query, params)]

        return await self._long_read(run)

    # Conversation history and small values (both expire) ------------------------------------------------------

    async def get_history(self, call_sid: str) -> list[dict[str, Any]]:
        now = time.time()

        def run(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                "SELECT doc FROM history WHERE call_sid = ? AND expires_at > ? ORDER BY id", (call_sid, now)
            )
            return [orjson.loads(doc) for (doc,) in rows]

        return await self._read(run)

    async def append_history(self, call_sid: str, messages: list[dict[str, Any]], cap: int) -> None:
        now = time.time()
        expires_at = now + HISTORY_TTL_SECONDS
        docs = [(call_sid, _dumps(message), expires_at) for message in messages]

        def run(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM history WHERE expires_at <= ?", (now,))
            conn.executemany("INSERT INTO history (call_sid, doc, expires_at) VALUES (?, ?, ?)", docs)
            conn.execute("UPDATE history SET expires_at = ? WHERE call_sid = ?", (expires_at, call_sid))
            conn.execute(
                "DELETE FROM history WHERE call_sid = ? AND id NOT IN "
                "(SELECT id FROM history WHERE call_sid = ? ORDER BY id DESC LIMIT ?)",
                (call_sid, call_sid, max(cap, 0)),
            )

        await self._write(run)

    async def get_value(self, key: str) -> dict[str, Any] | None:
        now = time.time()

        def run(conn: sqlite3.Connection) -> dict[str, Any] | None:
            row = conn.execute("SELECT doc FROM kv WHERE key = ? AND expires_at > ?", (key, now)).fetchone()
            return None if row is None else dict(orjson.loads(row[0]))

        return await self._read(run)

    async def set_value(self, key: str, value: dict[str, Any], ttl: float = 86_400) -> None:
        now = time.time()
        doc = _dumps(value)

        def run(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM kv WHERE expires_at <= ?", (now,))
            if ttl <= 0:
                conn.execute("DELETE FROM kv WHERE key = ?", (key,))
                return
            conn.execute(
                "INSERT INTO kv (key, doc, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET doc = excluded.doc, expires_at = excluded.expires_at",
                (key, doc, now + ttl),
            )

        await self._write(run)

    # Twilio webhook retries across workers (the write lock makes each one atomic across processes) -----------

    async def webhook_claim(self, key: str, owner: str, ttl: float) -> WebhookClaim:
        now = time.time()

        def run(conn: sqlite3.Connection) -> WebhookClaim:
            # Expired claims and answers go on every claim (the index makes it cheap), so the table stays small.
            conn.execute("DELETE FROM webhook_answers WHERE expires_at <= ?", (now,))
            conn.execute(  # the holder's own claim again: its lease renewed
                "UPDATE webhook_answers SET expires_at = ? WHERE key = ? AND owner = ? AND answer IS NULL",
                (now + ttl, key, owner),
            )
            conn.execute(
                "INSERT OR IGNORE INTO webhook_answers (key, owner, answer, expires_at) VALUES (?, ?, NULL, ?)",
                (key, owner, now + ttl),
            )
            holder, answer = conn.execute(
                "SELECT owner, answer FROM webhook_answers WHERE key = ?", (key,)
            ).fetchone()
            if answer is not None:
                return WebhookClaim(answer=dict(orjson.loads(answer)))
            return WebhookClaim(claimed=holder == owner)

        return await self._write(run)

    async def webhook_answer(self, key: str, answer: dict[str, Any], ttl: float) -> None:
        now = time.time()
        doc = _dumps(answer)

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO webhook_answers (key, owner, answer, expires_at) VALUES (?, '', ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET answer = excluded.answer, expires_at = excluded.expires_at "
                "WHERE webhook_answers.answer IS NULL OR webhook_answers.expires_at <= ?",
                (key, doc, now + ttl, now),
            )

        await self._write(run)

    async def webhook_release(self, key: str, owner: str) -> None:
        await self._write(
            lambda conn: conn.execute(
                "DELETE FROM webhook_answers WHERE key = ? AND owner = ? AND answer IS NULL", (key, owner)
            )
        )


def _audit_body(entry: AuditEntry) -> str:
    """The stored form of an audit entry: its fields without the id the table assigns."""
    doc = entry.to_dict()
    doc.pop("id")
    return _dumps(doc)


def _upsert_call(conn: sqlite3.Connection, sid: str, body: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO calls (call_sid, started_at, doc) VALUES (?, ?, ?) "
        "ON CONFLICT (call_sid) DO UPDATE SET started_at = excluded.started_at, doc = excluded.doc",
        (sid, _started_at(body), _dumps(body)),
    )


def _replace_events(conn: sqlite3.Connection, sid: str, events: list[dict[str, Any]]) -> None:
    conn.execute("DELETE FROM call_events WHERE call_sid = ?", (sid,))
    conn.executemany(
        "INSERT INTO call_events (call_sid, doc) VALUES (?, ?)", [(sid, _dumps(event)) for event in events]
    )


def _with_all_events(conn: sqlite3.Connection, rows: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """The call documents of ``rows`` with their events, read in one query (one per call took seconds for
    a day of calls)."""
    calls: list[dict[str, Any]] = []
    events_of: dict[str, list[dict[str, Any]]] = {}
    for sid, doc in rows:
        body: dict[str, Any] = orjson.loads(doc)
        body["events"] = events_of.setdefault(sid, [])
        calls.append(body)
    if not rows:
        return calls
    events = conn.execute(
        "SELECT call_sid, doc FROM call_events WHERE call_sid IN (SELECT value FROM json_each(?)) ORDER BY id",
        (_dumps(list(events_of)),),
    )
    for sid, event in events:
        events_of[sid].append(orjson.loads(event))
    return calls


def _with_events(conn: sqlite3.Connection, sid: str, doc: str) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(doc)
    rows = conn.execute("SELECT doc FROM call_events WHERE call_sid = ? ORDER BY id", (sid,))
    body["events"] = [orjson.loads(event) for (event,) in rows]
    return body
