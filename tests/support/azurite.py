"""Fixture plugin: a real Azurite blob server on a free port for the whole test session.

Azurite is installed from npm by the Makefile into ``.tools/azurite``; a missing binary is a broken
set-up, so the fixture fails with the command that fixes it rather than skipping the tests.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulators.runner import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
AZURITE_BLOB = REPO_ROOT / ".tools" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT_NAME = "devstoreaccount1"
# Azurite's published well-known development key (not a secret).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
START_TIMEOUT_S = 30.0


def connection_string(port: int, host: str = "127.0.0.1") -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://{host}:{port}/{ACCOUNT_NAME};"
    )


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def azurite_connection_string() -> Iterator[str]:
    """Start ``azurite-blob`` (in memory) on a free port; yields its connection string."""
    binary = Path(os.environ.get("AZURITE_BLOB", AZURITE_BLOB))
    if not binary.exists():
        pytest.fail(
            f"Azurite is not installed ({binary} is missing): run `make {AZURITE_BLOB.relative_to(REPO_ROOT)}` "
            "or `make unit`, which install it from npm",
            pytrace=False,
        )
    host = "127.0.0.1"
    port = free_port(host)
    process = subprocess.Popen(
        [
            str(binary),
            "--blobHost",
            host,
            "--blobPort",
            str(port),
            "--inMemoryPersistence",
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--silent",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _port_open(host, port):
            if process.poll() is not None:
                err = process.stderr.read().decode(errors="replace") if process.stderr else ""
                pytest.fail(
                    f"Azurite exited during start-up (code {process.returncode}): {err}", pytrace=False
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"Azurite did not listen on {host}:{port} within {START_TIMEOUT_S}s", pytrace=False
                )
            time.sleep(0.05)
        yield connection_string(port, host)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stderr:
            process.stderr.close()
