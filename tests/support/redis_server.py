"""Fixture plugin: a real redis-server on a free loopback port for the whole test session.

``redis_server`` yields the server's URL; ``redis_url`` is the same URL with the database flushed first, so
each test starts empty. A missing binary is a failure (``make redis-server`` installs it), never a skip.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from emulators.runner import free_port

START_TIMEOUT_SECONDS = 10.0


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _start(binary: str, directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start redis-server; tries again on another port if the chosen one was taken meanwhile."""
    log_path = directory / "redis.log"
    for _ in range(3):
        port = free_port()
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(directory)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline and process.poll() is None:
            if _answers_ping(port):
                return process, port
            time.sleep(0.02)
        _stop(process)
    pytest.fail(
        f"redis-server did not start; its log:\n{log_path.read_text(errors='replace')}", pytrace=False
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server is not installed (the tests need a real one): run `make redis-server` "
            "or `apt-get install redis-server`",
            pytrace=False,
        )
    process, port = _start(binary, tmp_path_factory.mktemp("redis"))
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(process)


@pytest.fixture
def redis_url(redis_server: str) -> str:
    client = redis.Redis.from_url(redis_server)
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_server


@pytest.fixture(params=["sqlite", "redis"])
def shared_state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One state store that several replicas open: a SQLite file, or one (flushed) Redis."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared-state.db'}"
    url: str = request.getfixturevalue("redis_url")
    return url
