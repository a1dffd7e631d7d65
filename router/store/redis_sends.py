"""Whether a Redis write that failed could have reached Redis: the difference between "nothing was changed"
and "a change may have been made".

A connection error says nothing of where it struck. When it struck while connecting, no byte of the write
left this process and the write was surely not made; once the command was being sent, Redis may have run
it and only the reply was lost. redis-py raises the same ``ConnectionError`` for both, so the store's
connections note, for the write being tried (a context variable set by :func:`noting_sends`), the moment
they start sending.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)


class WriteSends:
    """One write's attempts: ``may_have_reached_redis`` once any of them began sending bytes."""

    __slots__ = ("may_have_reached_redis",)

    def __init__(self) -> None:
        self.may_have_reached_redis = False


_CURRENT: ContextVar[WriteSends | None] = ContextVar("voice_router_redis_write_sends", default=None)


@contextmanager
def noting_sends() -> Iterator[WriteSends]:
    """Note the sends of every command run inside the block (in this task) on one :class:`WriteSends`."""
    sends = WriteSends()
    token = _CURRENT.set(sends)
    try:
        yield sends
    finally:
        _CURRENT.reset(token)


class _NotesSends(AbstractConnection):
    """Connects first (a failure there sent nothing), then notes that the command's bytes may leave."""

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        if not self.is_connected:
            await self.connect_check_health(check_health=False)
        sends = _CURRENT.get()
        if sends is not None:
            sends.may_have_reached_redis = True
        await super().send_packed_command(command, check_health)


class _NotingConnection(_NotesSends, Connection):
    pass


class _NotingSSLConnection(_NotesSends, SSLConnection):
    pass


class _NotingUnixConnection(_NotesSends, UnixDomainSocketConnection):
    pass


_NOTING: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: _NotingConnection,
    SSLConnection: _NotingSSLConnection,
    UnixDomainSocketConnection: _NotingUnixConnection,
}


def note_sends_on(pool: Any) -> bool:
    """Make ``pool`` (a redis-py asyncio ``ConnectionPool``, built from the URL's scheme) open connections
    that note their sends; False when its connection class is not one this module knows (the store must
    then take every failed write as one that may have been made)."""
    noting = _NOTING.get(pool.connection_class)
    if noting is None:
        return False
    pool.connection_class = noting
    return True
