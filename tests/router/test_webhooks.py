"""POST /twilio/voice and /twilio/status over a real socket: routing, TwiML, records, bad input."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from xml.etree import ElementTree

import pytest
from twilio.request_validator import RequestValidator

from flags.breaker_state import BreakerState
from flags.decision import decide
from flags.rollout import RolloutConfig
from router.app import NoRealtime
from router.store.factory import open_store
from router.twilio_signature import sign
from tests.router.conftest import ADMIN_TOKEN, AUTH_TOKEN, PUBLIC_BASE_URL, RunningRouter


def set_rollout(router: RunningRouter, **body: object) -> dict:
    response = router.admin("PUT", "/admin/rollout", json={"reason": "test", "actor": "pytest", **body})
    assert response.status_code == 200, response.text
    return response.json()


def calls(router: RunningRouter) -> list[dict]:
    response = router.admin("GET", "/admin/calls", params={"limit": 100})
    assert response.status_code == 200
    return response.json()


def test_legacy_call_gets_first_gather_turn_and_is_recorded(router: RunningRouter) -> None:
    response = router.incoming_call("CA" + "1" * 32)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/xml")
    assert response.headers["X-Voice-Router-Pipeline"] == "legacy"
    assert response.headers["X-Voice-Router-Reason"] == "rollout_out"
    assert "<Gather" in response.text
    assert router.legacy.first_turns == ["CA" + "1" * 32]
    [record] = calls(router)
    assert record["call_sid"] == "CA" + "1" * 32
    assert record["pipeline"] == "legacy"
    assert record["reason"] == "rollout_out"
    assert record["percent"] == 0.0
    assert isinstance(record["bucket"], int)
    # The caller's number is stored only as a keyed hash.
    assert "+14155550100" not in str(record)
    assert re.fullmatch(r"[0-9a-f]{32}", record["caller_hash"])


def test_realtime_call_gets_connect_stream_with_a_call_bound_token(router: RunningRouter) -> None:
    set_rollout(router, percent=100)
    call_sid = "CA" + "2" * 32
    response = router.incoming_call(call_sid)
    assert response.status_code == 200
    assert response.headers["X-Voice-Router-Pipeline"] == "realtime"
    assert response.headers["X-Voice-Router-Reason"] == "rollout_in"
    root = ElementTree.fromstring(response.text)
    connect = root.find("Connect")
    assert connect is not None
    assert connect.get("action") == f"{PUBLIC_BASE_URL}/legacy/start"
    stream = connect.find("Stream")
    assert stream is not None
    assert stream.get("url") == "wss://router.example.com/twilio/media"
    token = stream.find("Parameter[@name='token']")
    assert token is not None
    tokens = router.components.tokens
    assert tokens.verify(token.get("value"), call_sid)
    assert not tokens.verify(token.get("value"), "CA" + "3" * 32)
    assert router.legacy.first_turns == []


def test_decision_matches_the_flag_function(router: RunningRouter) -> None:
    config = set_rollout(router, percent=37.5)
    stored = RolloutConfig.from_dict(config)
    for index in range(20):
        caller = f"+1415555{index:04d}"
        call_sid = f"CA{index:032d}"
        expected = decide(stored, caller=caller, call_sid=call_sid, breaker_state=BreakerState.CLOSED)
        response = router.incoming_call(call_sid, caller)
        assert response.headers["X-Voice-Router-Pipeline"] == expected.pipeline.value


def test_forged_missing_and_proxied_signatures_are_refused_and_not_recorded(router: RunningRouter) -> None:
    params = {"CallSid": "CA" + "4" * 32, "From": "+14155550100"}
    forged = router.twilio_post("/twilio/voice", params, signature="AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    assert forged.status_code == 403
    missing = router.twilio_post("/twilio/voice", params, signature="")
    assert missing.status_code == 403
    # Signed for an attacker's host, presented with proxy headers claiming that host: still refused,
    # because the URL is rebuilt from PUBLIC_BASE_URL, not from the request's headers.
    evil = sign(AUTH_TOKEN, "https://evil.example.net/twilio/voice", params)
    proxied = router.twilio_post(
        "/twilio/voice",
        params,
        signature=evil,
        headers={
            "X-Forwarded-Host": "evil.example.net",
            "X-Forwarded-Proto": "https",
            "Host": "evil.example.net",
        },
    )
    assert proxied.status_code == 403
    # A signature over other parameters does not carry over.
    other = sign(AUTH_TOKEN, PUBLIC_BASE_URL + "/twilio/voice", {**params, "From": "+19995550000"})
    assert router.twilio_post("/twilio/voice", params, signature=other).status_code == 403
    assert calls(router) == []
    assert router.legacy.first_turns == []


def test_missing_callsid_is_400_and_not_recorded(router: RunningRouter) -> None:
    response = router.twilio_post("/twilio/voice", {"From": "+14155550100"})
    assert response.status_code == 400
    assert "CallSid" in response.json()["error"]
    assert calls(router) == []


def test_oversized_body_is_413_and_changes_nothing(router: RunningRouter) -> None:
    params = {"CallSid": "CA" + "5" * 32, "From": "+14155550100", "Padding": "x" * (65 * 1024)}
    assert router.twilio_post("/twilio/voice", params).status_code == 413
    big_admin = router.admin(
        "PUT", "/admin/rollout", content=b'{"percent": 50, "reason": "' + b"y" * 70_000 + b'"}'
    )
    assert big_admin.status_code == 413
    assert calls(router) == []
    assert router.admin("GET", "/admin/rollout").json()["percent"] == 0.0


def test_chunked_body_without_content_length_is_counted_and_refused_over_the_limit(
    router: RunningRouter,
) -> None:
    def chunks(total: int) -> Iterator[bytes]:
        sent = 0
        while sent < total:
            piece = min(8192, total - sent)
            sent += piece
            yield b"x" * piece

    admin = {"Authorization": "Bearer " + ADMIN_TOKEN, "Content-Type": "application/json"}
    response = router.client.put("/admin/rollout", content=chunks(70_000), headers=admin)
    assert response.status_code == 413
    assert router.admin("GET", "/admin/rollout").json()["percent"] == 0.0
    # A small chunked body goes through the same counting and reaches the handler.
    small = iter([b'{"percent": 5, ', b'"reason": "chunked"}'])
    assert router.client.put("/admin/rollout", content=small, headers=admin).status_code == 200
    assert router.admin("GET", "/admin/rollout").json()["percent"] == 5.0


def test_store_outage_answers_from_last_known_config(router_factory) -> None:
    router = router_factory()
    set_rollout(router, percent=100)
    assert router.incoming_call("CA" + "6" * 32).headers["X-Voice-Router-Pipeline"] == "realtime"
    assert [c["call_sid"] for c in calls(router)] == ["CA" + "6" * 32]  # written (the admin API flushes)
    router.store.down = True
    time.sleep(0.3)  # past the 0.2 s cache: the next webhook really asks the (dead) store
    response = router.incoming_call("CA" + "7" * 32)
    # Rollout config and breaker state come from memory; the record write fails and is counted.
    assert response.status_code == 200
    assert response.headers["X-Voice-Router-Pipeline"] == "realtime"
    assert response.headers["X-Voice-Router-Reason"] == "rollout_in"
    assert "<Stream" in response.text
    # The record is written behind the answer; its failure shows up in the metrics shortly after.
    deadline = time.monotonic() + 2
    metrics = router.client.get("/metrics").text
    while 'operation="put_call"} 1.0' not in metrics and time.monotonic() < deadline:
        time.sleep(0.02)
        metrics = router.client.get("/metrics").text
    assert 'voice_router_store_errors_total{operation="put_call"} 1.0' in metrics
    assert 'voice_router_store_errors_total{operation="get_rollout"}' in metrics
    router.store.down = False
    assert router.incoming_call("CA" + "8" * 32).headers["X-Voice-Router-Pipeline"] == "realtime"
    assert {c["call_sid"] for c in calls(router)} == {"CA" + "6" * 32, "CA" + "8" * 32}


def test_a_stored_rollout_this_release_cannot_read_routes_from_the_last_one_it_could(router_factory) -> None:
    """A rollout document with a value this release does not know (a newer release's mode, written during a
    rolling deploy) raised ValueError in every /twilio/voice: each call got a 500 and Twilio's error message."""
    router = router_factory(config_cache_seconds=0.0)
    set_rollout(router, percent=100)
    assert router.incoming_call("CA" + "c" * 32).headers["X-Voice-Router-Pipeline"] == "realtime"
    settings = router.components.settings

    async def newer_release_writes() -> None:
        store = open_store(settings.state_url)
        await store.open()
        try:
            stored = await store.get_rollout()
            assert stored is not None
            assert await store.swap_rollout(stored["version"], {**stored, "mode": "canary", "version": 99})
        finally:
            await store.close()

    asyncio.run(newer_release_writes())
    response = router.incoming_call("CA" + "d" * 32)
    assert response.status_code == 200
    assert response.headers["X-Voice-Router-Pipeline"] == "realtime"  # the last config it could read
    metrics = router.client.get("/metrics").text
    assert 'voice_router_store_errors_total{operation="get_rollout"} 1.0' in metrics


def test_a_replica_routes_by_what_it_read_at_start_up_when_the_store_goes_down_before_its_first_call(
    router_factory,
) -> None:
    """Start-up read the breaker only for the metrics gauge: a replica whose store went down before its first
    call had no breaker state to route by, and sent every caller to legacy (store_unavailable)."""
    router = router_factory(rollout_percent=100)
    router.store.down = True
    response = router.incoming_call("CA" + "e" * 32)
    assert response.status_code == 200
    assert response.headers["X-Voice-Router-Reason"] == "rollout_in"
    assert response.headers["X-Voice-Router-Pipeline"] == "realtime"


def test_store_down_from_the_start_routes_legacy_never_5xx(router_factory) -> None:
    router = router_factory(config_cache_seconds=0.0, rollout_percent=100, store_down=True)
    response = router.incoming_call("CA" + "9" * 32)
    assert response.status_code == 200
    assert response.headers["X-Voice-Router-Pipeline"] == "legacy"
    assert response.headers["X-Voice-Router-Reason"] == "store_unavailable"
    assert router.client.get("/readyz").status_code == 503
    assert router.client.get("/healthz").status_code == 200
    router.store.down = False
    assert router.client.get("/readyz").status_code == 200


def test_failing_legacy_first_turn_still_answers_twiml(router: RunningRouter) -> None:
    router.legacy.fail = True
    response = router.incoming_call("CA" + "a" * 32)
    assert response.status_code == 200
    root = ElementTree.fromstring(response.text)
    gather = root.find("Gather")
    assert gather is not None and gather.get("input") == "speech"
    assert gather.get("action") == f"{PUBLIC_BASE_URL}/legacy/turn"
    # A caller who says nothing is reprompted by /legacy/turn instead of being hung up on.
    assert gather.get("actionOnEmptyResult") == "true"
    redirect = root.find("Redirect")
    assert redirect is not None and redirect.text == f"{PUBLIC_BASE_URL}/legacy/turn"


def test_the_fallback_answer_listens_as_the_profile_says(
    router_factory: Callable[..., RunningRouter], tmp_path: Path
) -> None:
    """The plain <Gather> built when legacy's first turn fails had no language, hints or speechTimeout: a
    Spanish agent's caller was recognised as en-US, and the greeting was read in an English voice."""
    profile = tmp_path / "agent.yaml"
    profile.write_text(
        "instructions: Eres un asistente.\ngreeting: Hola, ¿en qué puedo ayudarle?\nlanguage: es-ES\n"
        "legacy:\n  speech_timeout: '2'\n  hints: [cita, martes]\n",
        encoding="utf-8",
    )
    router = router_factory(agent_profile=str(profile))
    router.legacy.fail = True
    root = ElementTree.fromstring(router.incoming_call("CA" + "e" * 32).text)
    gather = root.find("Gather")
    assert gather is not None
    assert (gather.get("language"), gather.get("speechTimeout"), gather.get("hints")) == (
        "es-ES",
        "2",
        "cita, martes",
    )
    say = gather.find("Say")
    assert say is not None and say.text == "Hola, ¿en qué puedo ayudarle?" and say.get("language") == "es-ES"


def test_status_callback_finalises_the_call_record(router: RunningRouter) -> None:
    call_sid = "CA" + "b" * 32
    router.incoming_call(call_sid)
    forged = router.twilio_post(
        "/twilio/status", {"CallSid": call_sid, "CallStatus": "completed"}, signature="bm9wZQ=="
    )
    assert forged.status_code == 403
    assert calls(router)[0]["status"] == "in-progress"
    response = router.twilio_post(
        "/twilio/status", {"CallSid": call_sid, "CallStatus": "completed", "CallDuration": "42"}
    )
    assert response.status_code == 204
    [record] = calls(router)
    assert record["status"] == "completed"
    assert record["duration_s"] == 42.0
    assert record["ended_at"] >= record["started_at"]
    assert router.twilio_post("/twilio/status", {"CallStatus": "completed"}).status_code == 400


def test_status_callback_with_a_non_ascii_digit_duration_finalises_without_it(router: RunningRouter) -> None:
    """ "²" passes str.isdigit() but not float(): the status is still recorded, the duration is left out."""
    call_sid = "CA" + "7" * 32
    router.incoming_call(call_sid)
    params = {"CallSid": call_sid, "CallStatus": "completed", "CallDuration": "\u00b2"}
    assert router.twilio_post("/twilio/status", params).status_code == 204
    [record] = calls(router)
    assert record["status"] == "completed" and record.get("duration_s") is None


def test_metrics_expose_decisions_breaker_state_percent_and_latency(router: RunningRouter) -> None:
    set_rollout(router, percent=12.5)
    router.incoming_call("CA" + "c" * 32)
    text = router.client.get("/metrics").text
    assert 'voice_router_decisions_total{pipeline="' in text
    assert 'voice_router_breaker_state{state="closed"} 1.0' in text
    assert "voice_router_rollout_percent 12.5" in text
    assert 'voice_router_webhook_seconds_count{route="voice"} 1.0' in text
    assert ADMIN_TOKEN not in text


def test_signature_over_the_url_with_its_default_port_is_accepted(router: RunningRouter) -> None:
    # Twilio's signing is inconsistent about ":443"; RequestValidator accepts both forms, and so do we.
    params = {"CallSid": "CA" + "d" * 32, "From": "+14155550100"}
    with_port = sign(AUTH_TOKEN, "https://router.example.com:443/twilio/voice", params)
    assert router.twilio_post("/twilio/voice", params, signature=with_port).status_code == 200


def test_a_half_open_trial_call_is_recorded_before_the_answer(router_factory, tmp_path) -> None:
    import asyncio

    from flags.breaker import Outcome
    from router.store.factory import open_store

    router = router_factory(
        # 1 s open: long enough to see it open even when a busy box stalls the test for a moment
        config_cache_seconds=0.0,
        breaker_wait_open_seconds=1.0,
        breaker_consecutive_connect_failures=1,
    )
    set_rollout(router, percent=100)
    asyncio.run(router.components.breaker.record(Outcome.CONNECT_FAILURE))
    assert router.admin("GET", "/admin/breaker").json()["state"] == "open"
    assert router.incoming_call("CA" + "e" * 32).headers["X-Voice-Router-Reason"] == "breaker_open"
    time.sleep(1.1)  # past the open wait: the next call is a half-open trial

    call_sid = "CA" + "f" * 32
    router.store.batch_delay = 2.0  # write-behind batches are slow now; the trial must not wait for one
    response = router.incoming_call(call_sid)
    assert response.headers["X-Voice-Router-Pipeline"] == "realtime"

    async def read() -> dict | None:
        reader = open_store(router.components.settings.state_url)
        await reader.open()
        try:
            return await reader.get_call(call_sid)
        finally:
            await reader.close()

    # Read through another connection, without the admin API's flush: the record is already there.
    record = asyncio.run(read())
    assert record is not None and record["breaker_trial"] is True
    # The permit's round goes with the record, so the realtime pipeline reports the outcome for that round.
    breaker_doc = asyncio.run(router.components.breaker.current())
    assert record["breaker_trial_round"] == breaker_doc.trial_round == 1


class SwitchableCapacity(NoRealtime):
    """A realtime part whose worker is full until told otherwise."""

    def __init__(self) -> None:
        self.full = True

    def has_capacity(self) -> bool:
        return not self.full


def test_a_full_worker_routes_realtime_calls_to_legacy_even_forced(router_factory) -> None:
    realtime = SwitchableCapacity()
    router = router_factory(realtime=realtime)
    set_rollout(router, percent=100)
    response = router.incoming_call("CA" + "a1" * 16)
    assert response.headers["X-Voice-Router-Pipeline"] == "legacy"
    assert response.headers["X-Voice-Router-Reason"] == "realtime_full"
    assert "<Gather" in response.text  # the caller is answered by legacy at once, no stream is opened
    set_rollout(router, mode="realtime_only")
    assert router.incoming_call("CA" + "a2" * 16).headers["X-Voice-Router-Reason"] == "realtime_full"
    realtime.full = False
    response = router.incoming_call("CA" + "a3" * 16)
    assert response.headers["X-Voice-Router-Pipeline"] == "realtime"
    assert response.headers["X-Voice-Router-Reason"] == "forced_realtime"
    reasons = {record["call_sid"]: record["reason"] for record in calls(router)}
    assert reasons == {
        "CA" + "a1" * 16: "realtime_full",
        "CA" + "a2" * 16: "realtime_full",
        "CA" + "a3" * 16: "forced_realtime",
    }


def test_a_full_worker_does_not_spend_a_half_open_trial(router_factory) -> None:
    import asyncio

    from flags.breaker import Outcome

    realtime = SwitchableCapacity()
    router = router_factory(
        realtime=realtime,
        config_cache_seconds=0.0,
        breaker_wait_open_seconds=0.2,
        breaker_consecutive_connect_failures=1,
        breaker_half_open_calls=1,
    )
    set_rollout(router, percent=100)
    asyncio.run(router.components.breaker.record(Outcome.CONNECT_FAILURE))
    time.sleep(0.3)  # past the open wait: the next realtime call would be the one half-open trial
    assert router.incoming_call("CA" + "b1" * 16).headers["X-Voice-Router-Reason"] == "realtime_full"
    breaker = router.admin("GET", "/admin/breaker").json()
    assert breaker["state"] == "half_open" and breaker["trial_permits"] == 0
    realtime.full = False
    response = router.incoming_call("CA" + "b2" * 16)
    assert response.headers["X-Voice-Router-Pipeline"] == "realtime"  # the trial was still there to take


class _Signed(dict[str, list[str]]):
    def getall(self, name: str) -> list[str]:
        return self[name]


def test_a_form_with_a_repeated_field_signed_as_twilio_signs_it_is_accepted(router: RunningRouter) -> None:
    """Twilio signs every value of a repeated field (sorted); checking only the last one refused it (403)."""
    call_sid = "CA" + "8" * 32
    signed = _Signed({"CallSid": [call_sid], "From": ["+14155550100"], "Tag": ["a", "b"]})
    signature = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC_BASE_URL + "/twilio/voice", signed)
    response = router.client.post(
        "/twilio/voice",
        content=f"CallSid={call_sid}&From=%2B14155550100&Tag=a&Tag=b".encode(),
        headers={"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200


def test_breaker_races_lost_again_and_again_answer_legacy_not_a_500(router_factory) -> None:
    """When the breaker's compare-and-set keeps losing (other replicas writing the document each time),
    ``BreakerConflictError`` escaped the webhook: Twilio got a 500 and the caller an application error,
    where every other breaker trouble routes the call to legacy."""
    import asyncio

    from flags.breaker import Outcome

    router = router_factory(
        config_cache_seconds=0.0, breaker_wait_open_seconds=1.0, breaker_consecutive_connect_failures=1
    )
    set_rollout(router, percent=100)
    asyncio.run(router.components.breaker.record(Outcome.CONNECT_FAILURE))
    time.sleep(1.1)  # past the open wait: the next read moves the breaker to half-open (a compare-and-set)

    store = router.store
    winning_swap = store.breaker_swap

    async def always_lost(*args: object, **kwargs: object) -> bool:
        return False  # another replica's write landed first, every time

    store.breaker_swap = always_lost  # the state read's OPEN -> HALF_OPEN cannot be written
    response = router.incoming_call("CA" + "c1" * 16)
    assert response.status_code == 200, response.text
    assert (response.headers["X-Voice-Router-Pipeline"], response.headers["X-Voice-Router-Reason"]) == (
        "legacy",
        "breaker_conflict",
    )

    store.breaker_swap = winning_swap
    first = router.incoming_call("CA" + "c2" * 16)
    assert (first.headers["X-Voice-Router-Pipeline"], first.headers["X-Voice-Router-Reason"]) == (
        "realtime",
        "rollout_in",
    )  # the half-open transition, and this call took a trial permit
    store.breaker_swap = always_lost  # the next trial permit cannot be taken
    response = router.incoming_call("CA" + "c3" * 16)
    assert response.status_code == 200, response.text
    assert (response.headers["X-Voice-Router-Pipeline"], response.headers["X-Voice-Router-Reason"]) == (
        "legacy",
        "breaker_half_open",
    )


def test_the_call_record_keeps_the_breaker_state_the_call_was_routed_with(router_factory) -> None:
    """The report slices calls by the breaker state at routing time: the record must say which it was."""
    import asyncio

    from flags.breaker import Outcome

    router = router_factory(
        config_cache_seconds=0.0, breaker_wait_open_seconds=1.0, breaker_consecutive_connect_failures=1
    )
    set_rollout(router, percent=100)
    assert router.incoming_call("CA" + "d1" * 16).headers["X-Voice-Router-Reason"] == "rollout_in"
    asyncio.run(router.components.breaker.record(Outcome.CONNECT_FAILURE))
    assert router.incoming_call("CA" + "d2" * 16).headers["X-Voice-Router-Reason"] == "breaker_open"
    time.sleep(1.1)  # past the open wait: the next call is a half-open trial
    assert router.incoming_call("CA" + "d3" * 16).headers["X-Voice-Router-Pipeline"] == "realtime"
    states = {record["call_sid"]: record.get("breaker_state") for record in calls(router)}
    assert states == {"CA" + "d1" * 16: "closed", "CA" + "d2" * 16: "open", "CA" + "d3" * 16: "half_open"}


def test_a_progress_status_delivered_after_the_final_one_does_not_undo_it(router: RunningRouter) -> None:
    """Status callbacks are separate requests, retried and reordered: a "ringing" or "in-progress" event (a
    number configured to send them) arriving after "completed" left the call no longer completed in the
    report."""
    call_sid = "CA" + "e" * 32
    router.incoming_call(call_sid)
    assert (
        router.twilio_post("/twilio/status", {"CallSid": call_sid, "CallStatus": "completed"}).status_code
        == 204
    )
    for late in ("in-progress", "ringing"):
        params = {"CallSid": call_sid, "CallStatus": late}
        assert router.twilio_post("/twilio/status", params).status_code == 204
    [record] = calls(router)
    assert record["status"] == "completed" and record["ended_at"] is not None


def test_metrics_answer_while_the_breaker_state_keeps_changing(
    router: RunningRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replicas racing on the breaker document can make a read give up (BreakerConflictError): the scrape
    still answers, with the gauge's last value, instead of a 500."""
    from flags.breaker import BreakerConflictError, CircuitBreaker

    async def conflicted(self: CircuitBreaker) -> None:
        raise BreakerConflictError("too many lost compare-and-set attempts")

    monkeypatch.setattr(CircuitBreaker, "current", conflicted)
    response = router.client.get("/metrics")
    assert response.status_code == 200
    assert "voice_router_breaker_state" in response.text
