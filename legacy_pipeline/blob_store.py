"""Reply audio in Azure Blob Storage: upload, a short read-only SAS URL for ``<Play>``, and clean-up.

The container stays private; Twilio reads each file through a SAS that allows ``read`` on that one blob
for a few minutes. Per-turn audio lives under ``turns/{yyyy-mm-dd}/{uuid4hex}.wav`` and is deleted by
:meth:`AzureBlobAudioStore.delete_older_than`; fixed phrases live under ``phrases/`` (reused across
calls, overwritten in place) and the clean-up never touches them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobSasPermissions, ContentSettings, generate_blob_sas
from azure.storage.blob.aio import BlobServiceClient, LinearRetry

log = logging.getLogger("legacy_pipeline.blob_store")

TURN_PREFIX = "turns/"
PHRASE_PREFIX = "phrases/"
AUDIO_CONTENT_TYPE = "audio/wav"


@dataclass(frozen=True)
class StoredAudio:
    name: str
    url: str  # blob URL with a read-only SAS
    expires_at: dt.datetime


class BlobStore(Protocol):
    async def upload_turn_audio(self, data: bytes) -> StoredAudio:
        """Store one reply under a new unguessable name."""
        ...

    async def upload_phrase_audio(self, name: str, data: bytes) -> StoredAudio:
        """Store (or overwrite) a reusable phrase under ``phrases/{name}.wav``."""
        ...

    def read_url(self, name: str) -> StoredAudio:
        """A fresh read-only SAS URL for an existing blob (local computation, no request)."""
        ...

    async def delete_older_than(self, cutoff: dt.datetime) -> int:
        """Delete per-turn audio last modified before ``cutoff``; returns how many were deleted."""
        ...

    async def aclose(self) -> None: ...


def turn_blob_name(now: dt.datetime) -> str:
    return f"{TURN_PREFIX}{now:%Y-%m-%d}/{uuid.uuid4().hex}.wav"


class AzureBlobAudioStore:
    def __init__(
        self,
        connection_string: str,
        container: str,
        *,
        sas_ttl: dt.timedelta = dt.timedelta(minutes=15),
        api_version: str | None = None,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 10.0,
    ) -> None:
        options: dict[str, Any] = {"api_version": api_version} if api_version else {}
        # The SDK's default retry waits 15 s (± 3 s jitter) between attempts: far past a phone turn's
        # deadline. One immediate retry covers a dropped keep-alive connection; the turn handles the rest.
        self._service = BlobServiceClient.from_connection_string(
            connection_string,
            retry_policy=LinearRetry(backoff=0, random_jitter_range=0, retry_total=1),
            connection_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            **options,
        )
        self._container_name = container
        self._container = self._service.get_container_client(container)
        self._container_url = self._container.url.rstrip("/")
        self._account_name: str = self._service.account_name or ""
        credential = self._service.credential
        self._account_key: str = getattr(credential, "account_key", "") or ""
        if not self._account_key:
            raise ValueError("the storage connection string must carry an AccountKey to sign SAS URLs")
        self._sas_ttl = sas_ttl
        self._create_lock: asyncio.Lock | None = None

    def read_url(self, name: str) -> StoredAudio:
        now = dt.datetime.now(dt.UTC)
        expires = now + self._sas_ttl
        sas = generate_blob_sas(
            account_name=self._account_name,
            container_name=self._container_name,
            blob_name=name,
            account_key=self._account_key,
            permission=BlobSasPermissions(read=True),
            start=now - dt.timedelta(minutes=5),  # tolerate clock skew between us and the service
            expiry=expires,
        )
        return StoredAudio(name=name, url=f"{self._container_url}/{name}?{sas}", expires_at=expires)

    async def upload_turn_audio(self, data: bytes) -> StoredAudio:
        name = turn_blob_name(dt.datetime.now(dt.UTC))
        try:
            await self._upload(name, data, overwrite=False)
        except ResourceExistsError:
            # The name is new (a uuid4): the blob under it is this upload's own, stored by an attempt whose
            # answer was lost on a dropped connection, which the SDK's retry then found (a Put Blob is whole).
            log.info("reply audio %s was stored by the attempt the SDK retried", name)
        return self.read_url(name)

    async def upload_phrase_audio(self, name: str, data: bytes) -> StoredAudio:
        blob_name = f"{PHRASE_PREFIX}{name}.wav"
        await self._upload(blob_name, data, overwrite=True)
        return self.read_url(blob_name)

    async def _upload(self, name: str, data: bytes, *, overwrite: bool) -> None:
        settings = ContentSettings(content_type=AUDIO_CONTENT_TYPE)
        try:
            await self._container.upload_blob(name, data, overwrite=overwrite, content_settings=settings)
        except ResourceNotFoundError:
            # The container is missing (first run, or deleted): create it once and try again.
            await self._ensure_container()
            await self._container.upload_blob(name, data, overwrite=overwrite, content_settings=settings)

    async def _ensure_container(self) -> None:
        if self._create_lock is None:
            self._create_lock = asyncio.Lock()
        async with self._create_lock:
            try:
                await self._container.create_container()
                log.info("created blob container %s", self._container_name)
            except ResourceExistsError:
                pass

    async def delete_older_than(self, cutoff: dt.datetime) -> int:
        deleted = 0
        try:
            async for blob in self._container.list_blobs(name_starts_with=TURN_PREFIX):
                modified = blob.last_modified
                if modified is not None and modified < cutoff:
                    try:
                        await self._container.delete_blob(blob.name)
                        deleted += 1
                    except ResourceNotFoundError:
                        pass  # another replica's clean-up got there first
        except ResourceNotFoundError:
            return deleted  # no container yet, nothing to clean
        return deleted

    async def aclose(self) -> None:
        await self._container.close()
        await self._service.close()


async def run_cleanup(
    store: BlobStore,
    *,
    retention: dt.timedelta,
    interval_s: float,
) -> None:
    """Delete per-turn audio older than ``retention`` every ``interval_s`` until cancelled."""
    while True:
        try:
            deleted = await store.delete_older_than(dt.datetime.now(dt.UTC) - retention)
            if deleted:
                log.info("deleted %d expired audio blobs", deleted)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("blob clean-up failed; will retry", exc_info=True)
        await asyncio.sleep(interval_s)
