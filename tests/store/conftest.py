"""Both state backends behind one fixture, so the contract suite runs against each of them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from router.store.base import StateStore
from router.store.factory import open_store


@pytest.fixture(params=["sqlite", "redis"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'var' / 'state.db'}"
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest.fixture
async def store(state_url: str) -> AsyncIterator[StateStore]:
    opened = open_store(state_url, key_prefix="test:")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
