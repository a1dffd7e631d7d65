"""The blob store against real Azurite: container creation, read-only SAS, clean-up."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import httpx

from emulators.azurite import connection_string as azurite_connection
from emulators.twilio.audio import read_wav
from legacy_pipeline.blob_store import PHRASE_PREFIX, TURN_PREFIX, AzureBlobAudioStore
from tests.legacy.conftest import HarnessFactory
from tests.support.lossy_proxy import ReplyLosingProxy

WAV = b"RIFF" + b"\0" * 60


def new_store(connection_string: str, **options: object) -> AzureBlobAudioStore:
    return AzureBlobAudioStore(connection_string, f"test-{uuid.uuid4().hex[:12]}", **options)  # type: ignore[arg-type]


async def test_upload_creates_container_and_sas_is_read_only(azurite_connection_string: str) -> None:
    store = new_store(azurite_connection_string)
    try:
        stored = await store.upload_turn_audio(WAV)
        today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
        assert stored.name.startswith(f"{TURN_PREFIX}{today}/") and len(stored.name.split("/")[-1]) == 36
        assert stored.expires_at - dt.datetime.now(dt.UTC) <= dt.timedelta(minutes=15)
        async with httpx.AsyncClient() as client:
            got = await client.get(stored.url)
            assert got.status_code == 200 and got.content == WAV
            assert got.headers["content-type"] == "audio/wav"
            bare = stored.url.split("?")[0]
            assert (await client.get(bare)).status_code in (403, 404)  # private container
            put = await client.put(stored.url, content=b"x", headers={"x-ms-blob-type": "BlockBlob"})
            assert put.status_code == 403  # the SAS only reads
        # Two uploads never share a name.
        assert (await store.upload_turn_audio(WAV)).name != stored.name
    finally:
        await store.aclose()


async def test_cleanup_deletes_old_turn_audio_and_keeps_phrases(azurite_connection_string: str) -> None:
    store = new_store(azurite_connection_string)
    try:
        turn = await store.upload_turn_audio(WAV)
        phrase = await store.upload_phrase_audio("greeting", WAV)
        assert phrase.name == f"{PHRASE_PREFIX}greeting.wav"
        now = dt.datetime.now(dt.UTC)
        assert await store.delete_older_than(now - dt.timedelta(hours=1)) == 0  # nothing is that old yet
        assert await store.delete_older_than(now + dt.timedelta(minutes=1)) == 1
        async with httpx.AsyncClient() as client:
            assert (await client.get(turn.url)).status_code == 404
            assert (await client.get(phrase.url)).status_code == 200
    finally:
        await store.aclose()


async def test_cleanup_of_a_missing_container_is_a_no_op(azurite_connection_string: str) -> None:
    store = new_store(azurite_connection_string)
    try:
        assert await store.delete_older_than(dt.datetime.now(dt.UTC)) == 0
    finally:
        await store.aclose()


async def test_pipeline_runs_the_cleanup_periodically(legacy: HarnessFactory) -> None:
    h = await legacy(legacy_blob_cleanup_interval_seconds=0.1, legacy_blob_retention_hours=0.0)
    call = "CA" + "d" * 32
    twiml = await h.twilio.incoming_call(call)
    reply = await h.twilio.say(twiml, call, "hello")
    async with httpx.AsyncClient() as client:
        for _ in range(200):  # the clean-up runs every 0.1 s; wait for it to get to the reply's blob
            if (await client.get(reply.plays[0])).status_code == 404:
                break
            await asyncio.sleep(0.05)
        assert (await client.get(reply.plays[0])).status_code == 404
        # The greeting is a cached phrase: never cleaned up.
        read_wav((await client.get(twiml.plays[0])).content)


async def test_a_reply_upload_whose_answer_was_lost_is_not_refused_by_its_own_retry(
    azurite_connection_string: str,
) -> None:
    """The SDK retries an upload once when the connection drops. When it dropped after the service stored the
    blob (the answer lost on the way back), the retry's create-only PUT finds that blob: the reply is there
    and must be played, not turned into the apology."""
    port = int(azurite_connection_string.split("BlobEndpoint=http://127.0.0.1:")[1].split("/")[0])
    proxy = ReplyLosingProxy(port)
    await proxy.start()
    store = new_store(azurite_connection(proxy.port))
    try:
        await store.upload_turn_audio(WAV)  # the container exists, the connection is open
        proxy.lose_next_reply()
        stored = await store.upload_turn_audio(WAV)
        assert proxy.replies_lost == 1
        async with httpx.AsyncClient() as client:
            got = await client.get(stored.url)
            assert got.status_code == 200 and got.content == WAV
    finally:
        await store.aclose()
        await proxy.aclose()
