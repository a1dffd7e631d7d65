"""Fixture plugin: a real Azurite blob server on a free port for the whole test session.

Azurite is installed from npm by the Makefile into ``.tools/azurite``; a missing binary is a broken
set-up, so the fixture fails with the command that fixes it rather than skipping the tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from emulators.azurite import AzuriteNotInstalled, AzuriteProcess


@pytest.fixture(scope="session")
def azurite_connection_string() -> Iterator[str]:
    """``azurite-blob`` in memory on a free loopback port; yields its connection string
    (``devstoreaccount1``, the well-known key, ``BlobEndpoint=http://127.0.0.1:P/devstoreaccount1;``)."""
    azurite = AzuriteProcess()
    try:
        azurite.start()
    except AzuriteNotInstalled as exc:
        pytest.fail(f"Azurite is not installed: {exc}", pytrace=False)
    except (RuntimeError, TimeoutError) as exc:
        pytest.fail(f"Azurite did not start: {exc}", pytrace=False)
    try:
        yield azurite.connection_string
    finally:
        azurite.stop()
