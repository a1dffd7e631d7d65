"""STATE_URL → backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.store.factory import open_store
from router.store.redis import RedisStore
from router.store.sqlite import SqliteStore


def test_relative_sqlite_path() -> None:
    store = open_store("sqlite:///var/state.db")
    assert isinstance(store, SqliteStore) and store.path == Path("var/state.db")


def test_absolute_sqlite_path() -> None:
    store = open_store("sqlite:////srv/voice-router/state.db")
    assert isinstance(store, SqliteStore) and store.path == Path("/srv/voice-router/state.db")


@pytest.mark.parametrize("url", ["redis://10.0.0.5:6380/2", "rediss://cache.example.com:6380/0"])
def test_redis_urls(url: str) -> None:
    store = open_store(url, key_prefix="blue:")
    assert isinstance(store, RedisStore) and store.url == url and store.key_prefix == "blue:"


@pytest.mark.parametrize(
    "url",
    [
        "",
        "var/state.db",
        "postgres://db/state",
        "sqlite://",
        "sqlite:///",
        "sqlite://host/state.db",
        "redis://",
    ],
)
def test_anything_else_is_a_clear_value_error(url: str) -> None:
    with pytest.raises(ValueError, match="STATE_URL"):
        open_store(url)


async def test_opened_sqlite_store_from_url_works(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    await store.open()
    try:
        assert await store.swap_rollout(None, {"version": 1})
        assert await store.get_rollout() == {"version": 1}
    finally:
        await store.close()


@pytest.mark.parametrize(
    "url",
    ["redis://localhost:abc/0", "redis://localhost:99999/0", "redis://cache:6379/0?socket_timeout=soon"],
)
def test_a_redis_url_redis_py_cannot_parse_is_a_clear_value_error(url: str) -> None:
    """Accepted here, such a URL failed only when the app's start-up opened the store: a traceback from the
    lifespan, not the one ``error: STATE_URL …`` line of every other bad STATE_URL."""
    with pytest.raises(ValueError, match="STATE_URL"):
        open_store(url)
