"""Redis state store: several replicas share rollout, breaker state and window, audit log and calls.

Nothing is cached here, so a change made through one replica is seen by every other on its next read (the
router does its own short caching). Compare-and-set and every read-modify-write run as Lua scripts or MULTI
transactions, so they are atomic on the server. Timeouts are short and there is a single immediate retry
(for a pooled connection Redis dropped), so an unreachable Redis fails fast with :class:`StoreUnavailable`.
That retry re-sends a command whose reply was lost after Redis had run it, so every write that is not
idempotent by itself runs as a write-once script (:func:`_write_once`): a retry finds the first run's marker
and gets its result instead of counting, appending or swapping a second time.

Call documents are hashes of JSON-encoded fields (a shallow merge is one HSET, no Lua JSON whose number
encoding is lossy); events, turns, audit and history are lists / sorted sets next to them. The breaker
window is one small hash per epoch second, keyed by a generation number that ``breaker_clear_window``
bumps. Two scripts build bucket keys at run time, so the store needs a standalone (non-cluster) Redis.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from flags.breaker_state import BreakerDocument, BreakerTransition, WindowTotals
from router.store.base import (
    AuditEntry,
    StoreOutcomeUnknown,
    StoreUnavailable,
    WebhookClaim,
    breaker_audit_entry,
)
from router.store.documents import call_sid_of, split_events
from router.store.redis_sends import note_sends_on, noting_sends

_Arg = str | int | float | bytes

WINDOW_RETENTION_SECONDS = 7_200  # bucket expiry: longer than any breaker window we would configure
AUDIT_CAP = 10_000
HISTORY_TTL_SECONDS = 86_400.0  # a conversation's history outlives its call by about a day

ONCE_TTL_MS = 30_000  # a write's marker outlives the client's retry (immediate, within its timeouts) by far


def _write_once(body: str) -> str:
    """``body`` as a script that runs at most once per marker key.

    The caller passes a fresh marker key as KEYS[1] and :data:`ONCE_TTL_MS` as ARGV[1], then the body's own
    keys and arguments (the body sees them as KEYS / ARGV from 1, as if called alone). The first run stores the
    body's integer result under the marker, last (a body that fails writes no marker); a second run with the
    same marker, which is what the client's retry of a lost reply is, returns that result and writes nothing.
    """
    return (
        """
local done = redis.call('GET', KEYS[1])
if done then return tonumber(done) end
local result = (function(KEYS, ARGV)
"""
        + body
        + """
end)({unpack(KEYS, 2)}, {unpack(ARGV, 2)})
if type(result) == 'table' then return result end
redis.call('SET', KEYS[1], tostring(result or 0), 'PX', ARGV[1])
return result
"""
    )


# The compare of a compare-and-set on a versioned document. KEYS[1] document; ARGV[1] expected version ('' =
# none stored), ARGV[2] new version, ARGV[3] document. Returns 0 when stale, else falls through to the writes.
_IF_VERSION = """
local current = redis.call('HGET', KEYS[1], 'version')
if ARGV[1] == '' then
  if current then return 0 end
elseif current ~= ARGV[1] then
  return 0
end
"""

_SWAP_DOCUMENT = _IF_VERSION + "redis.call('HSET', KEYS[1], 'version', ARGV[2], 'doc', ARGV[3])\nreturn 1\n"

# The swap with its audit entry (_APPEND_SEQUENCED's append) and, for the breaker, a window clear, in one
# script: all of it or none. Redis does not undo a script's earlier writes when a later command fails, so
# nothing is written until every write is known to succeed (each key missing or of the kind its write needs;
# out of memory fails the first write), and the document is written last. KEYS: document, audit sequence,
# audit sorted set[, breaker window generation: bumped, which clears the window]; ARGV: as the swap's, then
# the audit entry and the audit cap. Returns 0 (stale) or the entry id.
_SWAP_AUDITED = (
    _IF_VERSION
    + """
local function wrong(key, kind)
  local found = redis.call('TYPE', key)['ok']
  if found == 'none' then return false end
  if found ~= kind then return true end
  return kind == 'string' and not string.match(redis.call('GET', key), '^%-?%d+$')
end
if wrong(KEYS[2], 'string') or wrong(KEYS[3], 'zset') or (KEYS[4] and wrong(KEYS[4], 'string')) then
  return redis.error_reply('WRONGTYPE an audit or breaker key holds the wrong kind of value; nothing was written')
end
if KEYS[4] then redis.call('INCR', KEYS[4]) end
local id = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[3], id, string.format('%016d', id) .. '|' .. ARGV[4])
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[5]) + 1))
redis.call('HSET', KEYS[1], 'version', ARGV[2], 'doc', ARGV[3])
return id
"""
)

# Deletes one call with its events and turns, taking its turns out of the global turns set too (one
# script, so a turn appended meanwhile cannot stay behind in either set). KEYS: call document, events,
# the call's turns, all turns, calls; ARGV: call sid.
_PRUNE_CALL = """
local turns = redis.call('ZRANGE', KEYS[3], 0, -1)
for i = 1, #turns, 1000 do
  redis.call('ZREM', KEYS[4], unpack(turns, i, math.min(i + 999, #turns)))
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[5], ARGV[1])
return #turns
"""

# KEYS[1] generation; ARGV: bucket key prefix, second, failed (0/1), slow (0/1), ttl seconds
_ADD_OUTCOME = """
local bucket = ARGV[1] .. (redis.call('GET', KEYS[1]) or '0') .. ':' .. ARGV[2]
redis.call('HINCRBY', bucket, 'calls', 1)
redis.call('HINCRBY', bucket, 'failures', ARGV[3])
redis.call('HINCRBY', bucket, 'slow', ARGV[4])
redis.call('EXPIRE', bucket, ARGV[5])
return 1
"""

# KEYS[1] generation; ARGV: bucket key prefix, first second, last second
_WINDOW = """
local prefix = ARGV[1] .. (redis.call('GET', KEYS[1]) or '0') .. ':'
local calls, failures, slow = 0, 0, 0
for second = tonumber(ARGV[2]), tonumber(ARGV[3]) do
  local bucket = redis.call('HMGET', prefix .. string.format('%d', second), 'calls', 'failures', 'slow')
  calls = calls + (tonumber(bucket[1]) or 0)
  failures = failures + (tonumber(bucket[2]) or 0)
  slow = slow + (tonumber(bucket[3]) or 0)
end
return {calls, failures, slow}
"""

# KEYS: sequence, sorted set[, sorted set …]; ARGV: score, body, keep (0 = all).
# The member is "<zero-padded id>|<body>": unique, and equal scores keep insertion order.
_APPEND_SEQUENCED = """
local id = redis.call('INCR', KEYS[1])
local member = string.format('%016d', id) .. '|' .. ARGV[2]
local score = ARGV[1]
if score == '' then score = id end
for i = 2, #KEYS do
  redis.call('ZADD', KEYS[i], score, member)
end
local keep = tonumber(ARGV[3])
if keep > 0 then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(keep + 1)) end
return id
"""

# One call event. KEYS: call document, its events, calls; ARGV: the sid as stored (JSON), event, sid.
_APPEND_EVENT = """
redis.call('HSETNX', KEYS[1], 'call_sid', ARGV[1])
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], 'NX', 0, ARGV[3])
return 1
"""

# A conversation's new messages, keeping the newest ``cap``. KEYS[1] history; ARGV: cap, ttl ms, messages.
_APPEND_HISTORY = """
local cap = tonumber(ARGV[1])
if cap <= 0 then
  redis.call('DEL', KEYS[1])
  return 1
end
for i = 3, #ARGV, 1000 do
  redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('LTRIM', KEYS[1], -cap, -1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS[1] breaker window generation: a new one starts an empty window.
_CLEAR_WINDOW = "return redis.call('INCR', KEYS[1])"

# Twilio retries shared between workers. One string key per request: b"c" + owner while an attempt holds the
# claim, b"a" + JSON once its answer is stored; PX is the expiry (Redis prunes them).
# KEYS[1] request; ARGV: the claim value, ttl ms. Returns nil when it claimed (or renewed its own claim), else
# the value found.
_WEBHOOK_CLAIM = """
local found = redis.call('GET', KEYS[1])
if found == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return false
end
if found then return found end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""

# KEYS[1] request; ARGV: b"a" + answer, ttl ms. The first answer stays.
_WEBHOOK_ANSWER = """
local found = redis.call('GET', KEYS[1])
if found and string.sub(found, 1, 1) == 'a' then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS[1] request; ARGV[1] the claim value: deleted only while it is still that claim.
_WEBHOOK_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def _byte_list(reply: Any) -> list[bytes]:
    """A ZRANGE reply without scores (the client's return type covers every reply shape)."""
    return list(reply)


def _body(member: bytes) -> Any:
    """The JSON after the ``<id>|`` prefix of a sequenced member."""
    return orjson.loads(member[member.index(b"|") + 1 :])


def _audit_doc(entry: AuditEntry) -> dict[str, Any]:
    """An audit entry as stored: its fields without the id the sequence assigns."""
    doc = entry.to_dict()
    doc.pop("id")
    return doc


class RedisStore:
    """:class:`~router.store.base.StateStore` on Redis; every key starts with ``key_prefix``."""

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "vr:",
        connect_timeout: float = 0.5,
        socket_timeout: float = 1.0,
    ) -> None:
        self.url = url
        self.key_prefix = key_prefix
        self._connect_timeout = connect_timeout
        self._socket_timeout = socket_timeout
        self._client: aioredis.Redis | None = None
        self._where = "Redis"
        self._sends_noted = False

    # Plumbing -------------------------------------------------------------------------------------------

    async def open(self) -> None:
        """Build the client. Does not contact Redis (the service may start before it); see :meth:`ping`."""
        if self._client is not None:
            return
        client = aioredis.Redis.from_url(
            self.url,
            socket_connect_timeout=self._connect_timeout,
            socket_timeout=self._socket_timeout,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        self._sends_noted = note_sends_on(client.connection_pool)
        kwargs = client.connection_pool.connection_kwargs
        self._where = f"Redis at {kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"
        self._swap_script = client.register_script(_write_once(_SWAP_DOCUMENT))
        self._swap_audited_script = client.register_script(_write_once(_SWAP_AUDITED))
        self._add_outcome_script = client.register_script(_write_once(_ADD_OUTCOME))
        self._clear_window_script = client.register_script(_write_once(_CLEAR_WINDOW))
        self._window_script = client.register_script(_WINDOW)
        self._append_script = client.register_script(_write_once(_APPEND_SEQUENCED))
        self._append_event_script = client.register_script(_write_once(_APPEND_EVENT))
        self._append_history_script = client.register_script(_write_once(_APPEND_HISTORY))
        self._prune_call_script = client.register_script(_PRUNE_CALL)
        self._webhook_claim_script = client.register_script(_WEBHOOK_CLAIM)
        self._webhook_answer_script = client.register_script(_WEBHOOK_ANSWER)
        self._webhook_release_script = client.register_script(_WEBHOOK_RELEASE)
        self._client = client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    @property
    def _redis(self) -> aioredis.Redis:
        if self._client is None:
            raise StoreUnavailable(f"Redis state store ({self.key_prefix}) is not open")
        return self._client

    @contextmanager
    def _unavailable_on_error(self) -> Iterator[None]:
        try:
            yield
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"{self._where}: {type(exc).__name__}: {exc}") from exc

    def _key(self, *parts: str) -> str:
        return self.key_prefix + ":".join(parts)

    async def _once(
        self, script: AsyncScript, keys: list[str], args: list[_Arg], pipe: Pipeline | None = None
    ) -> Any:
        """Run a :func:`_write_once` script under a fresh marker (or queue it on ``pipe``).

        A reply that times out or whose connection drops leaves the write's fate unknown (Redis may have run
        it, or may yet). The marker settles it: the same script under the same marker, sent again, returns
        the first run's result if it ran and runs it if it did not, and a first run that comes later finds
        the marker and writes nothing. When that second try fails too, :class:`StoreOutcomeUnknown` says so.
        A failure before any byte of the write was sent (Redis refused the connection) is the plain
        :class:`StoreUnavailable`: then "nothing was changed" is true.
        """
        marker = self._key("once", uuid.uuid4().hex)
        keys, args = [marker, *keys], [ONCE_TTL_MS, *args]
        if pipe is not None:
            return await script(keys=keys, args=args, client=pipe)
        with noting_sends() as sends:
            try:
                return await script(keys=keys, args=args)
            except (RedisTimeoutError, RedisConnectionError):
                if self._sends_noted and not sends.may_have_reached_redis:
                    raise  # nothing was sent
            try:
                return await script(keys=keys, args=args)
            except (RedisTimeoutError, RedisConnectionError) as exc:
                raise StoreOutcomeUnknown(
                    f"{self._where}: a write was not confirmed and may have been made ({exc})"
                ) from exc

    async def ping(self) -> None:
        with self._unavailable_on_error():
            await self._redis.ping()

    # Versioned documents (rollout, breaker) ---------------------------------------------------------------

    async def _load_document(self, name: str) -> dict[str, Any] | None:
        with self._unavailable_on_error():
            doc = await self._redis.hget(self._key(name), "doc")
        return None if doc is None else dict(orjson.loads(doc))

    async def _swap_document(self, name: str, expected_version: int | None, new: dict[str, Any]) -> bool:
        expected = "" if expected_version is None else str(expected_version)
        args: list[_Arg] = [expected, str(int(new.get("version", 0))), _dumps(new)]
        with self._unavailable_on_error():
            swapped = await self._once(self._swap_script, [self._key(name)], args)
        return bool(swapped)

    async def get_rollout(self) -> dict[str, Any] | None:
        return await self._load_document("rollout")

    async def _swap_audited(
        self,
        name: str,
        expected_version: int | None,
        new: dict[str, Any],
        audit: AuditEntry,
        *extra_keys: str,
    ) -> bool:
        expected = "" if expected_version is None else str(expected_version)
        version = str(int(new.get("version", 0)))
        args: list[_Arg] = [expected, version, _dumps(new), _dumps(_audit_doc(audit)), AUDIT_CAP]
        keys = [self._key(name), self._key("audit", "seq"), self._key("audit"), *extra_keys]
        with self._unavailable_on_error():
            swapped = await self._once(self._swap_audited_script, keys, args)
        return bool(swapped)

    async def swap_rollout(
        self, expected_version: int | None, new: dict[str, Any], audit: AuditEntry | None = None
    ) -> bool:
        if audit is None:
            return await self._swap_document("rollout", expected_version, new)
        return await self._swap_audited("rollout", expected_version, new, audit)

    async def breaker_load(self) -> BreakerDocument | None:
        doc = await self._load_document("breaker")
        return None if doc is None else BreakerDocument.from_dict(doc)

    async def breaker_swap(
        self, expected_version: int | None, new: BreakerDocument, transition: BreakerTransition | None = None
    ) -> bool:
        if transition is None:
            return await self._swap_document("breaker", expected_version, new.to_dict())
        audit = breaker_audit_entry(transition, new)
        generation = [self._key("breaker", "generation")] if transition.clear_window else []
        return await self._swap_audited("breaker", expected_version, new.to_dict(), audit, *generation)

    # Breaker window ---------------------------------------------------------------------------------------

    async def breaker_add_outcome(self, second: int, *, failed: bool, slow: bool) -> None:
        args: list[_Arg] = [
            self._key("breaker", "w", ""),
            second,
            int(failed),
            int(slow),
            WINDOW_RETENTION_SECONDS,
        ]
        with self._unavailable_on_error():
            await self._once(self._add_outcome_script, [self._key("breaker", "generation")], args)

    async def breaker_window(self, first_second: int, last_second: int) -> WindowTotals:
        first_second = max(first_second, last_second - WINDOW_RETENTION_SECONDS)  # older buckets expired
        if first_second > last_second:
            return WindowTotals()
        args: list[_Arg] = [self._key("breaker", "w", ""), first_second, last_second]
        with self._unavailable_on_error():
            calls, failures, slow = await self._window_script(
                keys=[self._key("breaker", "generation")], args=args
            )
        return WindowTotals(calls=int(calls), failures=int(failures), slow=int(slow))

    async def breaker_clear_window(self) -> None:
        with self._unavailable_on_error():
            await self._once(self._clear_window_script, [self._key("breaker", "generation")], [])

    # Audit ------------------------------------------------------------------------------------------------

    async def append_audit(self, entry: AuditEntry) -> AuditEntry:
        doc = _audit_doc(entry)
        keys = [self._key("audit", "seq"), self._key("audit")]
        with self._unavailable_on_error():
            id_ = await self._once(self._append_script, keys, ["", _dumps(doc), AUDIT_CAP])
        return AuditEntry(**doc, id=int(id_))

    async def list_audit(self, limit: int = 50) -> list[AuditEntry]:
        if limit <= 0:
            return []
        with self._unavailable_on_error():
            members = _byte_list(await self._redis.zrange(self._key("audit"), 0, limit - 1, desc=True))
        return [AuditEntry(**_body(member), id=int(member[: member.index(b"|")])) for member in members]

    # Calls ------------------------------------------------------------------------------------------------

    def _call_keys(self, sid: str) -> tuple[str, str]:
        return self._key("call", sid), self._key("call", sid, "events")

    async def put_call(self, record: dict[str, Any]) -> None:
        await self.put_calls([record])

    async def put_calls(self, records: list[dict[str, Any]]) -> None:
        prepared = [(call_sid_of(record), *split_events(record)) for record in records]
        with self._unavailable_on_error():
            async with self._redis.pipeline(transaction=True) as pipe:
                for sid, body, events in prepared:
                    doc_key, events_key = self._call_keys(sid)
                    if events is None:
                        pipe.delete(doc_key)
                    else:
                        pipe.delete(doc_key, events_key)
                    pipe.hset(doc_key, mapping={field: _dumps(value) for field, value in body.items()})
                    if events:
                        pipe.rpush(events_key, *[_dumps(event) for event in events])
                    pipe.zadd(self._key("calls"), {sid: float(body.get("started_at") or 0.0)})
                await pipe.execute()

    async def merge_call(self, call_sid: str, fields: dict[str, Any]) -> None:
        changes, events = split_events(fields)
        changes["call_sid"] = call_sid
        doc_key, events_key = self._call_keys(call_sid)
        with self._unavailable_on_error():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(doc_key, mapping={field: _dumps(value) for field, value in changes.items()})
                if events is not None:
                    pipe.delete(events_key)
                    if events:
                        pipe.rpush(events_key, *[_dumps(event) for event in events])
                if "started_at" in changes:
                    pipe.zadd(self._key("calls"), {call_sid: float(changes["started_at"] or 0.0)})
                else:
                    pipe.zadd(self._key("calls"), {call_sid: 0.0}, nx=True)
                await pipe.execute()

    async def append_call_event(self, call_sid: str, event: dict[str, Any]) -> None:
        doc_key, events_key = self._call_keys(call_sid)
        with self._unavailable_on_error():
            keys = [doc_key, events_key, self._key("calls")]
            await self._once(self._append_event_script, keys, [_dumps(call_sid), _dumps(event), call_sid])

    async def get_call(self, call_sid: str) -> dict[str, Any] | None:
        calls = await self._read_calls([call_sid])
        return calls[0] if calls else None

    async def list_calls(self, limit: int = 50, since: float | None = None) -> list[dict[str, Any]]:
        if limit <= 0:
            return []
        low = "-inf" if since is None else repr(float(since))
        with self._unavailable_on_error():
            sids = _byte_list(
                await self._redis.zrange(
                    self._key("calls"), "+inf", low, desc=True, byscore=True, offset=0, num=limit
                )
            )
        return await self._read_calls([sid.decode() for sid in sids])

    async def _read_calls(self, sids: list[str]) -> list[dict[str, Any]]:
        if not sids:
            return []
        with self._unavailable_on_error():
            async with self._redis.pipeline(transaction=True) as pipe:
                for sid in sids:
                    doc_key, events_key = self._call_keys(sid)
                    pipe.hgetall(doc_key)
                    pipe.lrange(events_key, 0, -1)
                replies = await pipe.execute()
        calls = []
        for fields, events in zip(replies[::2], replies[1::2], strict=True):
            if not fields:
                continue
            doc = {field.decode(): orjson.loads(value) for field, value in fields.items()}
            doc["events"] = [orjson.loads(event) for event in events]
            calls.append(doc)
        return calls

    async def prune_records(self, before: float) -> int:
        cutoff = repr(float(before))
        calls_key, turns_key = self._key("calls"), self._key("turns")
        deleted = 0
        with self._unavailable_on_error():
            while True:
                # Score 0 marks a call known only from events (its record was never written): kept.
                batch = _byte_list(
                    await self._redis.zrange(calls_key, "(0", f"({cutoff}", byscore=True, offset=0, num=500)
                )
                if not batch:
                    break
                async with self._redis.pipeline(transaction=False) as pipe:
                    for sid in (raw.decode() for raw in batch):
                        keys = [*self._call_keys(sid), self._key("turns", "call", sid), turns_key, calls_key]
                        await self._prune_call_script(keys=keys, args=[sid], client=pipe)
                    await pipe.execute()
                deleted += len(batch)
            await self._prune_old_turns(turns_key, cutoff)
        return deleted

    async def _prune_old_turns(self, turns_key: str, cutoff: str) -> None:
        """Turns older than the cut-off leave the global set and their call's set (as SQLite deletes the
        row), found through the global set: each member names its call."""
        while True:
            batch = _byte_list(
                await self._redis.zrange(turns_key, "-inf", f"({cutoff}", byscore=True, offset=0, num=1000)
            )
            if not batch:
                return
            by_call: dict[str, list[bytes]] = {}
            for member in batch:
                by_call.setdefault(str(_body(member)["call_sid"]), []).append(member)
            async with self._redis.pipeline(transaction=True) as pipe:
                for sid, members in by_call.items():
                    pipe.zrem(self._key("turns", "call", sid), *members)
                pipe.zrem(turns_key, *batch)
                await pipe.execute()

    # Turns ------------------------------------------------------------------------------------------------

    async def append_turn(self, turn: dict[str, Any]) -> None:
        sid, at = call_sid_of(turn), float(turn["at"])
        with self._unavailable_on_error():
            await self._once(self._append_script, self._turn_keys(sid), [repr(at), _dumps(turn), 0])

    async def append_turns(self, turns: list[dict[str, Any]]) -> None:
        if not turns:
            return
        prepared = [(call_sid_of(turn), repr(float(turn["at"])), _dumps(turn)) for turn in turns]
        with self._unavailable_on_error():
            async with self._redis.pipeline(transaction=False) as pipe:
                for sid, at, doc in prepared:
                    await self._once(self._append_script, self._turn_keys(sid), [at, doc, 0], pipe)
                await pipe.execute()

    def _turn_keys(self, call_sid: str) -> list[str]:
        return [self._key("turns", "seq"), self._key("turns"), self._key("turns", "call", call_sid)]

    async def list_turns(
        self, since: float | None = None, call_sid: str | None = None, limit: int = 100_000
    ) -> list[dict[str, Any]]:
        if limit <= 0:
            return []
        key = self._key("turns") if call_sid is None else self._key("turns", "call", call_sid)
        low = "-inf" if since is None else repr(float(since))
        with self._unavailable_on_error():
            members = _byte_list(
                await self._redis.zrange(key, low, "+inf", byscore=True, offset=0, num=limit)
            )
        return [_body(member) for member in members]

    # Conversation history and small values (both expire) ------------------------------------------------------

    async def get_history(self, call_sid: str) -> list[dict[str, Any]]:
        with self._unavailable_on_error():
            messages = await self._redis.lrange(self._key("history", call_sid), 0, -1)
        return [orjson.loads(message) for message in messages]

    async def append_history(self, call_sid: str, messages: list[dict[str, Any]], cap: int) -> None:
        args: list[_Arg] = [
            cap,
            round(HISTORY_TTL_SECONDS * 1000),
            *[_dumps(message) for message in messages],
        ]
        with self._unavailable_on_error():
            await self._once(self._append_history_script, [self._key("history", call_sid)], args)

    async def get_value(self, key: str) -> dict[str, Any] | None:
        with self._unavailable_on_error():
            doc = await self._redis.get(self._key("kv", key))
        return None if doc is None else dict(orjson.loads(doc))

    async def set_value(self, key: str, value: dict[str, Any], ttl: float = 86_400) -> None:
        with self._unavailable_on_error():
            if ttl <= 0:
                await self._redis.delete(self._key("kv", key))
            else:
                await self._redis.set(self._key("kv", key), _dumps(value), px=max(1, round(ttl * 1000)))

    # Twilio webhook retries across workers ---------------------------------------------------------------------

    async def webhook_claim(self, key: str, owner: str, ttl: float) -> WebhookClaim:
        claim = b"c" + owner.encode()
        args: list[_Arg] = [claim, max(1, round(ttl * 1000))]
        with self._unavailable_on_error():
            found = await self._webhook_claim_script(keys=[self._key("webhook", key)], args=args)
        if found is None or found == claim:
            return WebhookClaim(claimed=True)
        if found.startswith(b"a"):
            return WebhookClaim(answer=dict(orjson.loads(found[1:])))
        return WebhookClaim()

    async def webhook_answer(self, key: str, answer: dict[str, Any], ttl: float) -> None:
        args: list[_Arg] = [b"a" + _dumps(answer), max(1, round(ttl * 1000))]
        with self._unavailable_on_error():
            await self._webhook_answer_script(keys=[self._key("webhook", key)], args=args)

    async def webhook_release(self, key: str, owner: str) -> None:
        with self._unavailable_on_error():
            await self._webhook_release_script(keys=[self._key("webhook", key)], args=[b"c" + owner.encode()])
