"""Pick the state backend from ``STATE_URL``: the one place that knows the URL schemes."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from redis.asyncio.connection import parse_url as parse_redis_url

from router.store.base import StateStore
from router.store.redis import RedisStore
from router.store.sqlite import SqliteStore

_SQLITE_PREFIX = "sqlite:///"


def open_store(state_url: str, *, key_prefix: str = "vr:") -> StateStore:
    """A store for ``state_url`` (not yet opened: ``await store.open()`` before use).

    ``sqlite:///var/state.db`` is relative to the working directory, ``sqlite:////srv/state.db`` absolute;
    ``redis://host:port/db`` and ``rediss://…`` (TLS) take the usual redis-py URL options. ``key_prefix``
    applies to Redis only (so several deployments can share one Redis).
    """
    scheme = urlsplit(state_url).scheme.lower()
    if scheme == "sqlite":
        if not state_url.startswith(_SQLITE_PREFIX) or state_url == _SQLITE_PREFIX:
            raise ValueError(
                f"STATE_URL {state_url!r}: expected sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
        return SqliteStore(Path(state_url[len(_SQLITE_PREFIX) :]))
    if scheme in ("redis", "rediss"):
        if not urlsplit(state_url).hostname:
            raise ValueError(f"STATE_URL {state_url!r}: expected redis://host:port/db")
        try:
            # What the store's open() parses (a bad port or option failed only then, in the app's lifespan)
            parse_redis_url(state_url)
        except ValueError as exc:
            raise ValueError(f"STATE_URL {state_url!r}: {exc}") from exc
        return RedisStore(state_url, key_prefix=key_prefix)
    raise ValueError(
        f"STATE_URL {state_url!r}: unsupported scheme {scheme!r}; "
        "use sqlite:///path.db (one replica) or redis://host:port/db (several replicas)"
    )


def prepare_sqlite_folder(state_url: str) -> None:
    """Create the SQLite file's folder now, at start-up before the event loop runs, so that one that cannot be
    made or written is one clear ``OSError`` rather than a traceback from the app's lifespan. Nothing for
    Redis."""
    if urlsplit(state_url).scheme.lower() != "sqlite" or not state_url.startswith(_SQLITE_PREFIX):
        return
    folder = Path(state_url[len(_SQLITE_PREFIX) :]).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(
            f"STATE_URL {state_url!r}: cannot create the folder {str(folder)!r}: {exc.strerror}"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OSError(f"STATE_URL {state_url!r}: the folder {str(folder)!r} is not writable")
