"""``python -m router`` as an operator runs it: a real process against a running instance."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import orjson

from tests.router.conftest import ADMIN_TOKEN, RunningRouter

REPO = Path(__file__).resolve().parents[2]


def cli(router_url: str, *args: str, token: str | None = ADMIN_TOKEN, env: dict[str, str] | None = None):
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "AZURE_", "OPENAI_"))}
    environment.pop("ADMIN_TOKEN", None)
    environment.update({"ROUTER_URL": router_url, "ROUTER_ACTOR": "cli-test", **(env or {})})
    if token is not None:
        environment["ADMIN_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "router", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=environment,
        timeout=60,
    )


def test_rollout_commands_change_and_show_state(router: RunningRouter) -> None:
    done = cli(router.url, "rollout", "set", "12.5", "--reason", "first ramp")
    assert done.returncode == 0, done.stderr
    assert "percent:    12.5%" in done.stdout
    status = cli(router.url, "rollout", "status", "--json")
    assert status.returncode == 0
    data = orjson.loads(status.stdout)
    assert data["percent"] == 12.5 and data["updated_by"] == "cli-test"
    assert cli(router.url, "rollout", "mode", "legacy_only", "--reason", "incident").returncode == 0
    assert cli(router.url, "rollout", "allow", "add", "+14155550111", "--reason", "tester").returncode == 0
    audit = cli(router.url, "audit", "--json")
    actions = [entry["action"] for entry in orjson.loads(audit.stdout)]
    assert actions == ["rollout.allow.add", "rollout.mode", "rollout.percent"]
    text_audit = cli(router.url, "audit")
    assert "cli-test" in text_audit.stdout and "incident" in text_audit.stdout


def test_invalid_input_exits_1_with_one_line(router: RunningRouter) -> None:
    for args in (
        ("rollout", "set", "101", "--reason", "x"),
        ("rollout", "set", "abc", "--reason", "x"),
        ("rollout", "set", "1.234", "--reason", "x"),
    ):
        done = cli(router.url, *args)
        assert done.returncode == 1
        assert done.stderr.strip().count("\n") == 0
        assert "percent" in done.stderr
    assert cli(router.url, "rollout", "status", "--json").stdout.count('"percent": 0.0') == 1


def test_rollout_set_takes_any_number_python_can_read(router: RunningRouter) -> None:
    """Only a value with a '.' was read as a number: '1e1' went to the server as a string and was refused."""
    done = cli(router.url, "rollout", "set", "1e1", "--reason", "ramp")
    assert done.returncode == 0, done.stderr
    assert orjson.loads(cli(router.url, "rollout", "status", "--json").stdout)["percent"] == 10.0
    for value in ("nan", "inf", "-inf"):
        refused = cli(router.url, "rollout", "set", value, "--reason", "x")
        assert refused.returncode == 1 and "percent" in refused.stderr, refused.stderr
        assert refused.stderr.strip().count("\n") == 0
    assert orjson.loads(cli(router.url, "rollout", "status", "--json").stdout)["percent"] == 10.0


def test_breaker_commands(router: RunningRouter) -> None:
    assert cli(router.url, "breaker", "open").returncode == 1  # a reason is required
    opened = cli(router.url, "breaker", "open", "--reason", "drill")
    assert opened.returncode == 0 and "forced_open" in opened.stdout
    status = cli(router.url, "breaker", "status", "--json")
    assert orjson.loads(status.stdout)["state"] == "forced_open"
    assert "closed" in cli(router.url, "breaker", "reset", "--reason", "done").stdout


def test_wrong_token_and_unreachable_server_exit_1(router: RunningRouter) -> None:
    wrong = cli(router.url, "rollout", "status", token="nope")
    assert wrong.returncode == 1 and "401" in wrong.stderr
    missing = cli(router.url, "rollout", "status", token=None)
    assert missing.returncode == 1 and "ADMIN_TOKEN" in missing.stderr
    unreachable = cli("http://127.0.0.1:9", "rollout", "status")
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr


def test_serve_without_required_settings_names_each_missing_variable(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "router", "serve", "--port", "9"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert "missing required setting: TWILIO_AUTH_TOKEN" in lines
    assert "missing required setting: ADMIN_TOKEN" in lines
    assert "missing required setting: AZURE_VOICELIVE_ENDPOINT" in lines
    assert all(line.startswith("missing required setting: ") for line in lines)


def test_usage_errors_exit_1_with_one_line_and_url_goes_after_the_command(router: RunningRouter) -> None:
    for args in (("rollout", "set", "25"), ("rollout", "flip"), ("breaker", "explode"), ()):
        done = cli("http://127.0.0.1:9", *args)
        assert done.returncode == 1, args
        assert done.stderr.startswith("error: ") and done.stderr.strip().count("\n") == 0, done.stderr
    # --url after the command as well as before it (ROUTER_URL points nowhere here)
    after = cli("http://127.0.0.1:9", "rollout", "status", "--json", "--url", router.url)
    before = cli("http://127.0.0.1:9", "--url", router.url, "rollout", "status", "--json")
    assert after.returncode == before.returncode == 0
    assert orjson.loads(after.stdout) == orjson.loads(before.stdout)


def test_serve_with_an_invalid_setting_names_the_variable_in_one_line(tmp_path: Path) -> None:
    # Price lists an operator's edit can break: a YAML syntax error, a section that is no mapping, a price that
    # is no number (each ended start-up in a traceback, or a multi-line one).
    broken_yaml, not_a_mapping, not_a_number = (tmp_path / f"prices{n}.yaml" for n in range(3))
    broken_yaml.write_text("voicelive:\n  text_input_per_mtok: [4.0\n")
    not_a_mapping.write_text("voicelive:\n  - 4.0\n")
    not_a_number.write_text("openai:\n  input_per_mtok: cheap\n")
    for name, value in (
        ("PRICES_FILE", str(broken_yaml)),
        ("PRICES_FILE", str(not_a_mapping)),
        ("PRICES_FILE", str(not_a_number)),
        ("ROLLOUT_PERCENT", "abc"),
        ("ROLLOUT_PERCENT", "150"),
        # below the 0.01 % step the admin API refuses: it was rounded away, to no rollout at all
        ("ROLLOUT_PERCENT", "0.005"),
        ("REALTIME_AUDIO_MODE", "bogus"),
        ("BREAKER_FAILURE_RATE_THRESHOLD", "150"),
        ("AGENT_PROFILE", str(tmp_path / "missing.yaml")),
        # 0 looks like "off" (LEGACY_BLOB_CLEANUP_INTERVAL_SECONDS=0 is), but pruned in a busy loop: a core and
        # the store's one writer thread taken for good
        ("RECORD_PRUNE_INTERVAL_SECONDS", "0"),
        # every stream token expired when issued: each realtime call refused at its stream, silently legacy
        ("STREAM_TOKEN_TTL_SECONDS", "0"),
        # a deployment template's https://${PUBLIC_HOST} with the variable unset: an IndexError traceback
        ("PUBLIC_BASE_URL", "https://"),
        # below the 50 frames a second Twilio sends (or no burst at all): the caller's audio of every realtime
        # call dropped by the flood guard
        ("REALTIME_MAX_FRAMES_PER_SECOND", "0"),
        ("REALTIME_FRAME_BURST", "0"),
        # an hour's cache: the kill switch (rollout mode legacy_only) would take an hour to reach a replica
        ("CONFIG_CACHE_SECONDS", "3600"),
        # a legacy turn and the writes after it outlasting Twilio's 15 s webhook timeout
        ("LEGACY_TURN_DEADLINE_SECONDS", "14"),
        ("LEGACY_TURN_DEADLINE_SECONDS", "0"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "router", "serve", "--local", "--port", "9"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), name: value},
            timeout=60,
        )
        assert done.returncode == 1, (name, done.stderr)
        (line,) = done.stderr.strip().splitlines()  # no traceback, no emulator started first
        assert line.startswith(f"invalid setting {name}: "), line


def test_serve_with_an_agent_profile_that_is_not_yaml_exits_1_with_one_line(tmp_path: Path) -> None:
    """A profile an edit left unparsable (an unclosed quote) ended start-up in a yaml.ScannerError traceback."""
    profile = tmp_path / "agent.yaml"
    profile.write_text('instructions: "You book tables.\ngreeting: Hello\n')
    done = subprocess.run(
        [sys.executable, "-m", "router", "serve", "--local", "--port", "9"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "AGENT_PROFILE": str(profile)},
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.strip().splitlines() if "LOCAL PROFILE" not in line]
    (line,) = lines
    assert line.startswith("error: ") and str(profile) in line, line


def test_report_command_and_admin_comparison(router: RunningRouter, tmp_path: Path) -> None:
    router.admin("PUT", "/admin/rollout", json={"percent": 50, "reason": "compare"})
    for index in range(12):
        router.incoming_call(f"CA{index:032d}", f"+1415555{index:04d}")
    data = router.admin("GET", "/admin/comparison", params={"since": "1h"}).json()
    arms = data["arms"]
    routed = router.admin("GET", "/admin/calls").json()
    for pipeline in ("legacy", "realtime"):
        expected = sum(1 for call in routed if call["pipeline"] == pipeline)
        assert arms.get(pipeline, {"calls": 0})["calls"] == expected
    assert router.admin("GET", "/admin/comparison", params={"since": "soon"}).status_code == 422

    html = tmp_path / "report.html"
    table = cli(router.url, "report", "--since", "1h", "--html", str(html))
    assert table.returncode == 0, table.stderr
    assert "legacy" in table.stdout and "realtime" in table.stdout
    assert (
        "legacy vs realtime" in html.read_text()
    )  # no turns here: the CDF plots are covered by the demo test
    as_json = cli(router.url, "report", "--json")
    assert orjson.loads(as_json.stdout)["arms"].keys() == arms.keys()


def test_report_html_to_an_unwritable_path_exits_1_with_one_line(
    router: RunningRouter, tmp_path: Path
) -> None:
    """A missing directory or a read-only path after ``--html`` ended in a Python traceback."""
    done = cli(router.url, "report", "--html", str(tmp_path / "no-such-dir" / "report.html"))
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and "report.html" in line, line
    assert "legacy" in done.stdout  # the table was printed before the file failed


def test_report_same_population_flag_reaches_the_admin_api(router: RunningRouter) -> None:
    """``--same-population`` asks for the filtered report; its header says which filter ran and what it
    dropped (here every call: one percent all window, so no bucket was served by both arms)."""
    router.admin("PUT", "/admin/rollout", json={"percent": 50, "reason": "compare"})
    for index in range(4):
        router.incoming_call(f"CA{index:032d}", f"+1415555{index:04d}")
    data = router.admin("GET", "/admin/comparison", params={"same_population": "true"}).json()
    assert data["population"] == {
        "filter": "same_buckets",
        "ranges": [],
        "dropped_calls": 4,
        "dropped_turns": 0,
        "dropped_caller_turns": 0,
    }
    plain = router.admin("GET", "/admin/comparison").json()
    assert plain["population"]["filter"] == "all"
    assert sum(arm["calls"] for arm in plain["arms"].values()) == 4
    refused = router.admin("GET", "/admin/comparison", params={"same_population": "maybe"})
    assert refused.status_code == 422 and "same_population" in refused.json()["error"]
    table = cli(router.url, "report", "--same-population")
    assert table.returncode == 0, table.stderr
    assert "population: same sticky buckets — none" in table.stdout and "dropped 4 of 4 calls" in table.stdout
    assert "population: all calls" in cli(router.url, "report").stdout


class _NotTheAdminApi(http.server.BaseHTTPRequestHandler):
    """What sits at a wrong ``--url``: a load balancer's HTML error page, another service's HTML 200, a JSON
    error that is not an object."""

    def do_GET(self) -> None:
        status, content_type, body = {
            "/lb/admin/rollout": (
                502,
                "text/html",
                b"<html>\n<body>\n<h1>502 Bad Gateway</h1>\n</body>\n</html>\n",
            ),
            "/web/admin/rollout": (200, "text/html", b"<!DOCTYPE html>\n<html>\n<p>welcome</p>\n</html>\n"),
            "/list/admin/rollout": (500, "application/json", b'["boom", "again"]'),
            "/other/admin/rollout": (200, "application/json", b'{"service": "something else"}'),
            "/array/admin/rollout": (200, "application/json", b"[1, 2]"),
        }.get(self.path, (404, "text/plain", b"Not Found"))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


def test_a_url_that_is_not_the_admin_api_exits_1_with_one_line(tmp_path: Path) -> None:
    """An HTML error page (a proxy's 502), an HTML 200 or a JSON error that is no object printed the whole body
    over many lines or ended in a traceback; so did a --url httpx cannot parse, and another JSON service's 200
    (a KeyError or TypeError while printing)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotTheAdminApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        for url in (
            f"{base}/lb",
            f"{base}/web",
            f"{base}/list",
            f"{base}/other",
            f"{base}/array",
            "http://[::1",
        ):
            done = cli(url, "rollout", "status")
            assert done.returncode == 1, (url, done.stderr)
            (line,) = done.stderr.strip().splitlines()
            assert line.startswith("error: ") and "Traceback" not in line, (url, done.stderr)
    finally:
        server.shutdown()
        server.server_close()


def test_serve_with_a_sqlite_state_url_whose_folder_cannot_be_made_exits_1_with_one_line(
    tmp_path: Path,
) -> None:
    """The folder was made in the app's lifespan, where the failure ended in uvicorn's traceback."""
    from emulators.runner import free_port

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    state_url = f"sqlite:///{blocker}/state.db"  # its folder would have to be inside a file
    done = subprocess.run(
        [sys.executable, "-m", "router", "serve", "--local", "--port", str(free_port())],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "STATE_URL": state_url},
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.strip().splitlines() if "LOCAL PROFILE" not in line]
    (line,) = lines
    assert line.startswith("error: STATE_URL") and "cannot create the folder" in line, line


def test_serve_local_without_azurite_exits_1_with_one_line(tmp_path: Path) -> None:
    """`make run` installs Azurite first; `python -m router serve --local` on a machine without it ended in a
    traceback (the emulators it had started were stopped, but nothing said what to do)."""
    from emulators.runner import free_port

    done = subprocess.run(
        [sys.executable, "-m", "router", "serve", "--local", "--port", str(free_port())],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={
            "PATH": os.environ["PATH"],
            "PYTHONPATH": str(REPO),
            "AZURITE_BLOB": str(tmp_path / "no-azurite"),
        },
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.strip().splitlines() if "LOCAL PROFILE" not in line]
    (line,) = lines
    assert line.startswith("error: ") and "no-azurite is missing" in line and "npm install azurite" in line, (
        line
    )
