"""Twilio's webhook fetch, emulated: connection overrides from the URL fragment, retries per policy, one
idempotency token for every attempt. Against a raw asyncio HTTP server that fails attempts on cue."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import httpx
import pytest

from emulators.twilio.webhook_fetch import ConnectionOverrides, Retry, TwilioWebhookFetcher
from router.twilio_signature import TwilioSignatureValidator

TOKEN = "fetch-test-token"
PUBLIC = "https://router.example"


@dataclass
class Attempt:
    path: str
    headers: dict[str, str]
    form: dict[str, str]


@dataclass
class ScriptedServer:
    """Answers attempt n with ``plan[n]``: ``"reset"`` (close without answering), ``"slow"`` (answer after
    ``slow_s``) or an HTTP status; past the plan, 200 with a TwiML body."""

    plan: list[str | int] = field(default_factory=list)
    slow_s: float = 1.0
    attempts: list[Attempt] = field(default_factory=list)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers = {
                    k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.attempts.append(Attempt(path, headers, dict(parse_qsl(body.decode()))))
                step = self.plan[len(self.attempts) - 1] if len(self.attempts) <= len(self.plan) else 200
                if step == "reset":
                    writer.transport.abort()
                    return
                if step == "slow":
                    await asyncio.sleep(self.slow_s)
                    step = 200
                text = b"<Response/>" if step == 200 else b"busy"
                writer.write(
                    b"HTTP/1.1 %d X\r\ncontent-type: text/xml\r\ncontent-length: %d\r\n\r\n%s"
                    % (int(step), len(text), text)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def serving(server: ScriptedServer) -> AsyncIterator[ScriptedServer]:
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()


@contextlib.asynccontextmanager
async def fetcher(port: int, **options: object) -> AsyncIterator[tuple[TwilioWebhookFetcher, list[Retry]]]:
    retries: list[Retry] = []
    async with httpx.AsyncClient() as http:
        yield (
            TwilioWebhookFetcher(
                http,
                auth_token=TOKEN,
                to_router=lambda url: url.replace(PUBLIC, f"http://127.0.0.1:{port}"),
                on_retry=retries.append,
                **options,  # type: ignore[arg-type]
            ),
            retries,
        )


PARAMS = {"CallSid": "CA" + "1" * 32, "SpeechResult": "hello there"}


def test_overrides_come_from_the_fragment_and_bad_values_are_ignored():
    base, overrides = ConnectionOverrides.split(
        f"{PUBLIC}/legacy/turn?x=1#ct=800&rt=2000&tt=9000&rc=3&rp=ct,5xx"
    )
    assert base == f"{PUBLIC}/legacy/turn?x=1"
    assert overrides == ConnectionOverrides(
        connect_ms=800, read_ms=2000, total_ms=9000, retries=3, retry_on=frozenset({"ct", "5xx"})
    )
    _, everything = ConnectionOverrides.split(f"{PUBLIC}/a#rp=all")
    assert everything.retry_on == {"ct", "rt", "4xx", "5xx"}
    # Out of Twilio's ranges, or not a policy: Twilio's defaults stay.
    _, ignored = ConnectionOverrides.split(f"{PUBLIC}/a#ct=50&rt=99999&rc=9&rp=sometimes&zz=1")
    assert ignored == ConnectionOverrides()
    assert ConnectionOverrides() == ConnectionOverrides(5_000, 15_000, 15_000, 1, frozenset({"ct"}))


async def test_a_reset_connection_is_retried_once_by_default_with_the_same_token():
    async with serving(ScriptedServer(plan=["reset"])) as server, fetcher(server.port) as (fetch, retries):
        response = await fetch.fetch(f"{PUBLIC}/legacy/turn#rt=5000", "POST", PARAMS)
    assert response.status_code == 200
    assert len(server.attempts) == 2
    first, second = server.attempts
    token = first.headers["i-twilio-idempotency-token"]
    assert token and second.headers["i-twilio-idempotency-token"] == token
    assert [(r.failure, r.idempotency_token) for r in retries] == [("ct", token)]
    # The fragment never reaches the server, and the signature is over the URL without it.
    validator = TwilioSignatureValidator(TOKEN, PUBLIC)
    for attempt in server.attempts:
        assert attempt.path == "/legacy/turn"
        assert validator.validate_http(
            "/legacy/turn", "", attempt.form, attempt.headers["x-twilio-signature"]
        )


async def test_rc_zero_turns_the_retry_off_and_two_resets_exhaust_the_default():
    async with serving(ScriptedServer(plan=["reset"])) as server, fetcher(server.port) as (fetch, retries):
        with pytest.raises(httpx.HTTPError):
            await fetch.fetch(f"{PUBLIC}/legacy/turn#rc=0", "POST", PARAMS)
    assert len(server.attempts) == 1 and retries == []

    async with serving(ScriptedServer(plan=["reset", "reset"])) as server, fetcher(server.port) as (fetch, _):
        with pytest.raises(httpx.HTTPError):
            await fetch.fetch(f"{PUBLIC}/legacy/turn", "POST", PARAMS)
    assert len(server.attempts) == 2


async def test_a_refused_connection_is_retried_then_fails():
    with contextlib.closing(__import__("socket").socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused
        async with fetcher(port) as (fetch, retries):
            with pytest.raises(httpx.ConnectError):
                await fetch.fetch(f"{PUBLIC}/twilio/voice", "POST", PARAMS)
    assert [r.failure for r in retries] == ["ct"]


async def test_error_answers_are_retried_only_when_the_policy_names_them():
    async with serving(ScriptedServer(plan=[503])) as server, fetcher(server.port) as (fetch, _):
        response = await fetch.fetch(f"{PUBLIC}/legacy/turn", "POST", PARAMS)
    assert response.status_code == 503 and len(server.attempts) == 1

    async with serving(ScriptedServer(plan=[503, 404])) as server, fetcher(server.port) as (fetch, retries):
        response = await fetch.fetch(f"{PUBLIC}/legacy/turn#rc=2&rp=5xx,4xx", "POST", PARAMS)
    assert response.status_code == 200 and len(server.attempts) == 3
    assert [r.failure for r in retries] == ["5xx", "4xx"]


async def test_a_read_timeout_is_not_retried_by_default_but_is_under_rp_rt():
    async with (
        serving(ScriptedServer(plan=["slow"], slow_s=1.0)) as server,
        fetcher(server.port) as (fetch, _),
    ):
        with pytest.raises(httpx.ReadTimeout):
            await fetch.fetch(f"{PUBLIC}/legacy/turn#rt=200", "POST", PARAMS)
    assert len(server.attempts) == 1  # the request reached the server: by default Twilio does not resend it

    async with (
        serving(ScriptedServer(plan=["slow"], slow_s=1.0)) as server,
        fetcher(server.port) as (fetch, retries),
    ):
        response = await fetch.fetch(f"{PUBLIC}/legacy/turn#rt=200&rp=rt", "POST", PARAMS)
    assert response.status_code == 200 and [r.failure for r in retries] == ["rt"]


async def test_total_time_bounds_every_attempt_together():
    plan: list[str | int] = ["slow"] * 6
    async with serving(ScriptedServer(plan=plan, slow_s=5.0)) as server, fetcher(server.port) as (fetch, _):
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            await fetch.fetch(f"{PUBLIC}/legacy/turn#rt=300&rp=rt&rc=5&tt=700", "POST", PARAMS)
        spent = time.monotonic() - started
    assert len(server.attempts) == 3  # 300 + 300 + the last 100 ms of the 700 ms budget
    assert spent < 2.0  # far below 6 × 300 ms of read timeouts, or 6 × 5 s of answers


async def test_the_simulators_defaults_apply_where_the_url_sets_nothing():
    defaults = ConnectionOverrides(retries=0)
    async with (
        serving(ScriptedServer(plan=["reset"])) as server,
        fetcher(server.port, defaults=defaults) as (fetch, retries),
    ):
        with pytest.raises(httpx.HTTPError):
            await fetch.fetch(f"{PUBLIC}/legacy/turn", "POST", PARAMS)
        response = await fetch.fetch(f"{PUBLIC}/legacy/turn#rc=1", "POST", PARAMS)
    assert response.status_code == 200 and len(retries) == 0 and len(server.attempts) == 2
