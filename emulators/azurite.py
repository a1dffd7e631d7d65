"""Azurite, Microsoft's official Blob storage emulator (a Node program from npm), as a child process.

Used by the local profile, the demo and the tests. ``--skipApiVersionCheck`` because azure-storage-blob
sends a newer ``x-ms-version`` than Azurite 3.35 knows (see legacy-services.md §2).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

from emulators.runner import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
AZURITE_BLOB = REPO_ROOT / ".tools" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT_NAME = "devstoreaccount1"
# Azurite's published well-known development key (not a secret).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM it when its parent dies, so a killed service or
    test run never leaves an Azurite behind (its own session keeps it out of Ctrl-C's process group)."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class AzuriteNotInstalled(RuntimeError):
    pass


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


class AzuriteProcess:
    """``azurite-blob`` on ``host:port`` (0: a free port), in memory or persisted under ``location``."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        location: Path | None = None,
        binary: Path | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._location = location
        self._binary = binary or Path(os.environ.get("AZURITE_BLOB", AZURITE_BLOB))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        return connection_string(self.port, self.host)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/{ACCOUNT_NAME}"

    def start(self, timeout: float = 30.0) -> Self:
        if not self._binary.exists():
            raise AzuriteNotInstalled(
                f"{self._binary} is missing: run `make .tools/azurite/node_modules/.bin/azurite-blob` "
                "(npm install azurite)"
            )
        storage = (
            ["--location", str(self._location)] if self._location is not None else ["--inMemoryPersistence"]
        )
        if self._location is not None:
            self._location.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [
                str(self._binary),
                "--blobHost",
                self.host,
                "--blobPort",
                str(self.port),
                *storage,
                "--disableTelemetry",
                "--skipApiVersionCheck",
                "--silent",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while not _port_open(self.host, self.port):
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                raise RuntimeError(f"Azurite exited during start-up (code {self._process.returncode}): {err}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"Azurite did not listen on {self.host}:{self.port} within {timeout}s")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
