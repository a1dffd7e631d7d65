"""The Dockerfile, run as far as a machine without a container engine can run it.

The image is built from exactly what the Dockerfile copies, installed with ``pip install .``, started with its
``CMD`` and probed with its ``HEALTHCHECK``. Here the same steps run in a temporary directory: the files the
``COPY`` lines name, a ``pip install`` of them (dependencies taken from this environment, which ``make install``
built from the same ``pyproject.toml``), the ``CMD`` with a production environment, and the ``HEALTHCHECK``
command. A package missing from the ``COPY`` lines or from the wheel, or a start-up that needs the source tree,
fails here. What only an engine can check (the base image, apt packages, the non-root user at run time) is not
covered; the user and the health check are at least required to be declared.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path

from emulators.runner import free_port

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = (REPO / "Dockerfile").read_text()

PRODUCTION_ENV = {
    "PUBLIC_BASE_URL": "https://router.example.com",
    "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
    "TWILIO_AUTH_TOKEN": "docker-test-token",
    "ADMIN_TOKEN": "docker-test-admin",
    "AZURE_VOICELIVE_ENDPOINT": "https://example.services.ai.azure.com",
    "AZURE_VOICELIVE_API_KEY": "unused",
    "OPENAI_API_KEY": "unused",
    "AZURE_SPEECH_KEY": "unused",
    "AZURE_SPEECH_REGION": "eastus",
    "AZURE_STORAGE_CONNECTION_STRING": (
        "DefaultEndpointsProtocol=https;AccountName=example;AccountKey=a2V5;EndpointSuffix=core.windows.net"
    ),
}


def copied_sources() -> list[str]:
    sources: list[str] = []
    for line in re.findall(r"^COPY\s+(.+)$", DOCKERFILE, re.MULTILINE):
        *names, _destination = line.split()
        sources += names
    return sources


def test_dockerfile_declares_a_non_root_user_and_a_health_check() -> None:
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE, re.MULTILINE)
    assert users and users[-1] not in {"root", "0"}
    assert DOCKERFILE.index("USER") < DOCKERFILE.index("\nCMD")
    assert re.search(r"^HEALTHCHECK .*\n\s+CMD .*/healthz", DOCKERFILE, re.MULTILINE)


def test_what_the_dockerfile_copies_installs_and_serves_healthz(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    for name in copied_sources():
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, app / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, app / name)
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(app)],
        check=True,
        timeout=300,
        capture_output=True,
    )

    port = free_port()
    cmd = json.loads(re.findall(r"^CMD (\[.*\])$", DOCKERFILE, re.MULTILINE)[-1])
    assert cmd[:3] == ["python", "-m", "router"]
    argv = [sys.executable, "-S", *cmd[1:]]  # -S: no site hooks, so no editable install of the source tree
    argv[argv.index("--port") + 1] = str(port)
    run_dir = tmp_path / "var"
    run_dir.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(run_dir),
        "PYTHONPATH": os.pathsep.join([str(site), sysconfig.get_paths()["purelib"]]),
        "STATE_URL": f"sqlite:///{run_dir / 'state.db'}",
        **PRODUCTION_ENV,
    }
    where = subprocess.run(
        [sys.executable, "-S", "-c", "import router, emulators; print(router.__file__, emulators.__file__)"],
        env=env,
        cwd=run_dir,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert all(path.startswith(str(site)) for path in where), where

    server = subprocess.Popen(argv, env=env, cwd=run_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    assert response.status == 200
                    break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None, server.stdout.read().decode() if server.stdout else ""
                assert time.monotonic() < deadline, "the image's CMD did not serve /healthz within 60 s"
                time.sleep(0.2)

        # An idle keep-alive connection outlives uvicorn's default 5 s (router/server_options.py): a
        # client or load balancer that pools connections never has one closed under its next request.
        pooled = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            pooled.request("GET", "/healthz")
            first = pooled.getresponse()
            first.read()
            local_port = pooled.sock.getsockname()[1]
            time.sleep(5.5)
            pooled.request("GET", "/healthz")
            again = pooled.getresponse()
            again.read()
            assert again.status == 200 and pooled.sock.getsockname()[1] == local_port
        finally:
            pooled.close()

        healthcheck = re.search(r"^\s+CMD (python -c .*)$", DOCKERFILE, re.MULTILINE)
        assert healthcheck is not None
        probe = shlex.split(healthcheck.group(1).replace("127.0.0.1:8000", f"127.0.0.1:{port}"))
        assert subprocess.run([sys.executable, *probe[1:]], env=env, timeout=10).returncode == 0

        unsigned = urllib.request.Request(
            f"http://127.0.0.1:{port}/twilio/voice", data=b"CallSid=CA1", method="POST"
        )
        try:
            urllib.request.urlopen(unsigned, timeout=5)
            raise AssertionError("an unsigned webhook was answered")
        except urllib.error.HTTPError as refused:
            assert refused.code == 403
    finally:
        server.terminate()
        server.wait(timeout=15)
