"""A Twilio retry that reaches another worker gets the first attempt's answer through the shared store: two
workers (two WebhookReplay + SharedReplay, each with its own connection) on one SQLite file, and on one
Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from starlette.responses import Response

from router.observability import Metrics
from router.shared_replay import SharedReplay
from router.store.factory import open_store
from router.webhook_replay import WebhookReplay
from tests.router.conftest import SwitchableStore

CALL = "CA" + "3" * 32
ROUTE = "/legacy/turn"
TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response><Play>https://blob/reply.wav</Play></Response>'


class Turn:
    """The expensive handler (the LLM turn): counts its runs across every worker."""

    def __init__(self, delay_s: float = 0.0, fail: bool = False) -> None:
        self.runs = 0
        self.delay_s = delay_s
        self.fail = fail

    async def __call__(self) -> Response:
        self.runs += 1
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("the worker died mid-turn")
        return Response(
            TWIML.replace("reply", f"reply-{self.runs}"),
            media_type="text/xml",
            headers={"X-Voice-Router-Pipeline": "legacy"},
        )


@dataclass
class Worker:
    store: SwitchableStore
    metrics: Metrics
    replay: WebhookReplay

    async def answer(self, turn: Turn, token: str = "tok-1") -> Response:
        return await self.replay.answer(ROUTE, CALL, token, turn)

    def sample(self, metric: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(metric, labels) or 0.0


async def _open_workers(url: str, lease_s: float) -> list[Worker]:
    opened: list[Worker] = []
    for _ in range(2):
        store = SwitchableStore(open_store(url))
        await store.open()
        metrics = Metrics()
        shared = SharedReplay(store, claim_ttl_s=lease_s, wait_s=2.0, poll_s=0.02, metrics=metrics)
        opened.append(Worker(store, metrics, WebhookReplay(metrics=metrics, shared=shared)))
    return opened


@pytest.fixture
async def workers(shared_state_url: str) -> AsyncIterator[list[Worker]]:
    """Two workers on the same store (each its own connection), waiting at most 2 s for a first attempt."""
    opened = await _open_workers(shared_state_url, lease_s=3.0)
    try:
        yield opened
    finally:
        for worker in opened:
            await worker.store.close()


@pytest.fixture
async def short_lease_workers(shared_state_url: str) -> AsyncIterator[list[Worker]]:
    """The same with a 0.5 s claim lease, so a turn can outlast it."""
    opened = await _open_workers(shared_state_url, lease_s=0.5)
    try:
        yield opened
    finally:
        for worker in opened:
            await worker.store.close()


def same(response: Response, other: Response) -> bool:
    return (response.status_code, response.body, sorted(response.headers.items())) == (
        other.status_code,
        other.body,
        sorted(other.headers.items()),
    )


async def test_a_retry_on_another_worker_gets_the_first_answer_and_the_turn_runs_once(
    workers: list[Worker],
) -> None:
    a, b = workers
    turn = Turn()
    first = await a.answer(turn)
    retry = await b.answer(turn)
    assert turn.runs == 1
    assert same(retry, first) and retry.headers["content-type"] == "text/xml; charset=utf-8"
    assert retry.headers["x-voice-router-pipeline"] == "legacy"
    assert b.sample("voice_router_webhook_replays_total", route=ROUTE) == 1
    assert same(await b.answer(turn), first) and turn.runs == 1  # b's own cache from now on
    assert same(await a.answer(turn), first) and turn.runs == 1

    await b.answer(turn, token="tok-2")  # the caller's next turn: a new request
    assert turn.runs == 2


async def test_a_retry_that_arrives_during_the_first_attempt_waits_for_its_answer(
    workers: list[Worker],
) -> None:
    a, b = workers
    turn = Turn(delay_s=0.3)
    first_task = asyncio.ensure_future(a.answer(turn))
    await asyncio.sleep(0.1)  # the first attempt holds the claim
    started = time.monotonic()
    retry = await b.answer(turn)
    first = await first_task
    assert turn.runs == 1 and same(retry, first)
    assert time.monotonic() - started < 1.5, "it waited for the answer, not for the wait limit"


async def test_concurrent_attempts_on_two_workers_run_the_turn_once(workers: list[Worker]) -> None:
    a, b = workers
    turn = Turn(delay_s=0.1)
    answers = await asyncio.gather(a.answer(turn), b.answer(turn), a.answer(turn), b.answer(turn))
    assert turn.runs == 1
    assert all(same(answer, answers[0]) for answer in answers)


async def test_a_first_attempt_that_failed_lets_the_retry_do_the_work_at_once(workers: list[Worker]) -> None:
    a, b = workers
    dying = Turn(delay_s=0.2, fail=True)
    first_task = asyncio.ensure_future(a.answer(dying))
    await asyncio.sleep(0.1)
    working = Turn()
    started = time.monotonic()
    retry = await b.answer(working)  # waits for the first attempt, which then gives its claim back
    with pytest.raises(RuntimeError):
        await first_task
    assert working.runs == 1 and b"reply-1" in retry.body
    assert time.monotonic() - started < 1.0, "taken over when the claim was given back, not at its expiry"
    assert same(await a.answer(Turn()), retry), "the retry's answer is the one stored"


async def test_a_cancelled_first_attempt_gives_its_claim_back(workers: list[Worker]) -> None:
    a, b = workers
    first_task = asyncio.ensure_future(a.answer(Turn(delay_s=5.0)))
    await asyncio.sleep(0.1)
    first_task.cancel()  # the worker is shutting down mid-turn
    working = Turn()
    started = time.monotonic()
    await b.answer(working)
    assert working.runs == 1 and time.monotonic() - started < 1.0


async def test_a_crashed_first_attempt_lets_the_retry_do_the_work_when_its_claim_expires(
    workers: list[Worker],
) -> None:
    a, b = workers
    # A worker claimed the request and died (process gone: nothing gives the claim back).
    assert (await a.store.webhook_claim(f"{CALL}:tok-1", "dead-worker", 0.5)).claimed
    turn = Turn()
    started = time.monotonic()
    retry = await b.answer(turn)
    waited = time.monotonic() - started
    assert turn.runs == 1 and b"reply-1" in retry.body
    assert 0.3 < waited < 1.5, f"waited {waited:.2f}s: until the dead attempt's claim expired"
    assert same(await a.answer(Turn()), retry)


async def test_a_first_attempt_with_no_answer_within_the_wait_limit_is_redone(workers: list[Worker]) -> None:
    a, b = workers
    assert (await a.store.webhook_claim(f"{CALL}:tok-1", "hung-worker", 30.0)).claimed
    turn = Turn()
    started = time.monotonic()
    await b.answer(turn)
    assert turn.runs == 1 and 1.9 < time.monotonic() - started < 3.0  # wait_s = 2


async def test_a_store_error_falls_back_to_the_per_worker_behaviour(workers: list[Worker]) -> None:
    a, b = workers
    turn = Turn()
    a.store.down = True
    first = await a.answer(turn)
    assert turn.runs == 1 and first.status_code == 200
    assert a.sample("voice_router_store_errors_total", operation="webhook_claim") == 1
    assert same(await a.answer(turn), first) and turn.runs == 1, "the same worker still answers its retries"
    await b.answer(turn)  # the store never saw the first attempt: handled again, as before this change
    assert turn.runs == 2
    await a.answer(turn, token="tok-2")  # while the store is failing, it is not asked again for a while
    assert a.sample("voice_router_store_errors_total", operation="webhook_claim") == 1 and turn.runs == 3


async def test_a_failed_answer_write_still_answers(workers: list[Worker]) -> None:
    a, _ = workers
    turn = Turn()

    async def turn_then_store_down() -> Response:
        response = await turn()
        a.store.down = True  # between the claim and the answer write
        return response

    first = await a.replay.answer(ROUTE, CALL, "tok-1", turn_then_store_down)
    assert first.status_code == 200 and turn.runs == 1
    assert a.sample("voice_router_store_errors_total", operation="webhook_answer") == 1


async def test_a_slow_store_is_given_up_on_quickly() -> None:
    class Stuck:
        async def webhook_claim(self, key: str, owner: str, ttl: float) -> None:
            await asyncio.sleep(30)

    metrics = Metrics()
    shared = SharedReplay(Stuck(), claim_ttl_s=3.0, wait_s=2.0, op_timeout_s=0.2, metrics=metrics)  # type: ignore[arg-type]
    turn = Turn()
    started = time.monotonic()
    response = await WebhookReplay(metrics=metrics, shared=shared).answer(ROUTE, CALL, "tok-1", turn)
    assert response.status_code == 200 and turn.runs == 1
    assert time.monotonic() - started < 1.0
    assert (
        metrics.registry.get_sample_value("voice_router_store_errors_total", {"operation": "webhook_claim"})
        == 1
    )


async def test_requests_without_a_token_never_touch_the_store() -> None:
    class NoStore:
        def __getattr__(self, name: str) -> object:
            raise AssertionError(f"the store was used: {name}")

    shared = SharedReplay(NoStore(), claim_ttl_s=3.0, wait_s=2.0)  # type: ignore[arg-type]
    turn = Turn()
    await WebhookReplay(shared=shared).answer(ROUTE, CALL, None, turn)
    assert turn.runs == 1


async def test_a_first_attempt_that_outlasts_its_lease_renews_it_and_the_turn_runs_once(
    short_lease_workers: list[Worker],
) -> None:
    a, b = short_lease_workers
    turn = Turn(delay_s=1.6)  # three leases: alive, just slow (a long LLM reply); the retry waits up to 2 s
    first_task = asyncio.ensure_future(a.answer(turn))
    await asyncio.sleep(0.1)
    retry = await b.answer(turn)
    first = await first_task
    assert turn.runs == 1 and same(retry, first)


async def test_a_retry_behind_a_worker_that_died_mid_turn_waits_one_lease_not_the_deadline(
    short_lease_workers: list[Worker],
) -> None:
    a, b = short_lease_workers
    first_task = asyncio.ensure_future(a.answer(Turn(delay_s=30.0)))
    await asyncio.sleep(0.1)
    await a.store.close()  # the worker is gone: nothing renews its claim, nothing gives it back
    first_task.cancel()
    turn = Turn()
    started = time.monotonic()
    retry = await b.answer(turn)
    assert turn.runs == 1 and b"reply-1" in retry.body
    assert time.monotonic() - started < 1.5, "one 0.5 s lease, not the 2 s wait"
