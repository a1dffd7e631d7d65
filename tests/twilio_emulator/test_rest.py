"""The Twilio REST emulator, driven by the real twilio client library (sync and async)."""

from __future__ import annotations

import time

import httpx
import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from emulators.twilio.rest import TwilioRestEmulator

ACCOUNT = "AC" + "1" * 32
TOKEN = "secret-token"
CALL = "CA" + "a" * 32


@pytest.fixture
def emulator():
    emu = TwilioRestEmulator(ACCOUNT, TOKEN).start()
    try:
        yield emu
    finally:
        emu.stop()


def client_for(emu: TwilioRestEmulator, token: str = TOKEN, **kwargs) -> Client:
    client = Client(ACCOUNT, token, **kwargs)
    client.api.base_url = emu.url
    return client


def test_sync_redirect_is_recorded_and_answers_a_call_resource(emulator):
    call = client_for(emulator).calls(CALL).update(url="https://router.example/legacy/start", method="POST")
    assert call.sid == CALL
    assert call.account_sid == ACCOUNT
    assert call.status == "in-progress"
    assert call.uri == f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL}.json"
    assert call.date_updated is not None  # parsed from RFC 2822 by the library
    assert emulator.updates == [(CALL, {"Url": "https://router.example/legacy/start", "Method": "POST"})]


async def test_async_client_redirect_and_hook(emulator):
    seen: list[tuple[str, dict[str, str]]] = []

    async def hook(call_sid: str, fields: dict[str, str]) -> None:
        seen.append((call_sid, fields))

    emulator.on_update = hook
    http = AsyncTwilioHttpClient()
    try:
        client = client_for(emulator, http_client=http)
        call = await client.calls(CALL).update_async(url="https://r.example/next", method="POST")
        assert call.status == "in-progress"
        hung_up = await client.calls(CALL).update_async(status="completed")
        assert hung_up.status == "completed"
    finally:
        await http.close()
    assert seen == [
        (CALL, {"Url": "https://r.example/next", "Method": "POST"}),
        (CALL, {"Status": "completed"}),
    ]


def test_update_after_hangup_is_refused_like_twilio(emulator):
    client = client_for(emulator)
    client.calls(CALL).update(status="completed")
    with pytest.raises(TwilioRestException) as caught:
        client.calls(CALL).update(url="https://r.example/next")
    assert caught.value.status == 400
    assert caught.value.code == 21220


def test_url_and_twiml_are_mutually_exclusive(emulator):
    with pytest.raises(TwilioRestException) as caught:
        client_for(emulator).calls(CALL).update(url="https://r.example/x", twiml="<Response/>")
    assert caught.value.status == 400
    assert emulator.updates == []


def test_wrong_token_gets_twilio_401(emulator):
    with pytest.raises(TwilioRestException) as caught:
        client_for(emulator, token="wrong").calls(CALL).update(url="https://r.example/x")
    assert caught.value.status == 401
    assert caught.value.code == 20003
    response = httpx.post(
        f"{emulator.url}/2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL}.json", data={"Url": "x"}
    )
    body = response.json()
    assert response.status_code == 401
    assert set(body) == {"code", "message", "more_info", "status"}
    assert body["status"] == 401


def test_unknown_call_is_20404_once_calls_are_tracked(emulator):
    emulator.known_calls_only = True
    emulator.open_call(CALL, from_="+15550001111", to="+15550002222")
    client = client_for(emulator)
    assert client.calls(CALL).update(url="https://r.example/x").to == "+15550002222"
    with pytest.raises(TwilioRestException) as caught:
        client.calls("CA" + "b" * 32).update(url="https://r.example/x")
    assert caught.value.status == 404
    assert caught.value.code == 20404


def test_malformed_sid_is_404_even_by_default(emulator):
    with pytest.raises(TwilioRestException) as caught:
        client_for(emulator).calls("not-a-call").update(url="https://r.example/x")
    assert caught.value.code == 20404


def test_faults_over_the_control_endpoint(emulator):
    response = httpx.post(f"{emulator.url}/_emulator/faults", json={"fail_next": 1, "fail_status": 503})
    assert response.json()["fail_next"] == 1
    client = client_for(emulator)
    with pytest.raises(TwilioRestException) as caught:
        client.calls(CALL).update(url="https://r.example/x")
    assert caught.value.status == 503
    httpx.post(f"{emulator.url}/_emulator/faults", json={"fail_status": None})
    assert client.calls(CALL).update(url="https://r.example/x").status == "in-progress"
    bad = httpx.post(f"{emulator.url}/_emulator/faults", json={"nonsense": 1})
    assert bad.status_code == 400


def test_an_idle_pooled_connection_stays_open_past_uvicorns_five_seconds(emulator):
    """Like the real service, and unlike uvicorn's 5 s default: a pooled client must not race the emulator
    closing its idle connection (on a busy box such requests died with read errors: a legacy turn's LLM request,
    the demo's outage control call)."""
    # httpx itself drops idle connections after 5 s; requests (twilio's sync client) and aiohttp keep them.
    limits = httpx.Limits(keepalive_expiry=60.0)
    with httpx.Client(base_url=emulator.url, timeout=5.0, limits=limits) as client:
        first = client.get("/2010-04-01/Accounts.json")
        time.sleep(6.0)
        second = client.get("/2010-04-01/Accounts.json")
        assert first.status_code == second.status_code
        # One connection served both requests: the pool still held it, and the emulator had not closed it.
        assert client._transport._pool.connections[0]._connection._request_count == 2  # type: ignore[attr-defined]


def test_fail_next_with_a_status_recovers_after_n_updates(emulator):
    """``fail_next`` answers the next N updates with ``fail_status`` (or 500), *then recovers*."""
    httpx.post(f"{emulator.url}/_emulator/faults", json={"fail_next": 2, "fail_status": 503})
    client = client_for(emulator)
    for _ in range(2):
        with pytest.raises(TwilioRestException) as caught:
            client.calls(CALL).update(url="https://r.example/x")
        assert caught.value.status == 503
    assert client.calls(CALL).update(url="https://r.example/x").status == "in-progress"
    assert emulator.faults.fail_next == 0 and emulator.faults.fail_status is None


def test_fail_status_alone_fails_every_update_until_cleared(emulator):
    emulator.faults.fail_status = 500
    client = client_for(emulator)
    for _ in range(3):
        with pytest.raises(TwilioRestException):
            client.calls(CALL).update(url="https://r.example/x")
    emulator.faults.fail_status = None
    assert client.calls(CALL).update(url="https://r.example/x").status == "in-progress"


def test_a_fault_of_the_wrong_type_is_refused_and_changes_nothing(emulator):
    """A bad control request is a 400, not a knob that breaks every later update with a bare 500."""
    for bad in ({"fail_next": "2"}, {"latency_ms": None}, {"fail_status": "503"}, {"fail_next": True}):
        response = httpx.post(f"{emulator.url}/_emulator/faults", json={"latency_ms": 5, **bad})
        assert response.status_code == 400, bad
    assert emulator.faults.to_dict() == {"latency_ms": 0.0, "fail_status": None, "fail_next": 0}
    assert client_for(emulator).calls(CALL).update(url="https://r.example/x").status == "in-progress"
