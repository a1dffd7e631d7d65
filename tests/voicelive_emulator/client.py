"""A thin test client over the ``websockets`` library: JSON events in, JSON events out."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import orjson
import websockets
from websockets.asyncio.client import ClientConnection

from emulators.speechlike import silence_ulaw, speechlike_ulaw
from emulators.voicelive import VoiceLiveEmulator

FRAME = 160  # 20 ms of μ-law


class Client:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.received: list[dict[str, Any]] = []

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(orjson.dumps(event).decode())

    async def recv(self, wait_s: float = 5.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), wait_s)
        event: dict[str, Any] = orjson.loads(raw)
        self.received.append(event)
        return event

    async def until(self, kind: str, wait_s: float = 5.0) -> list[dict[str, Any]]:
        """All events up to and including the first of type ``kind``."""
        events = []
        while True:
            event = await self.recv(wait_s)
            events.append(event)
            if event["type"] == kind:
                return events

    async def append(self, audio: bytes, frame: int = FRAME) -> None:
        for start in range(0, len(audio), frame):
            chunk = base64.b64encode(audio[start : start + frame]).decode()
            await self.send({"type": "input_audio_buffer.append", "audio": chunk})

    async def update(self, **session: Any) -> dict[str, Any]:
        await self.send({"type": "session.update", "session": session})
        events = await self.until("session.updated")
        return events[-1]["session"]

    async def speak(
        self, speech_ms: int = 800, *, lead_ms: int = 0, tail_ms: int = 700, seed: int = 0
    ) -> None:
        await self.append(
            silence_ulaw(lead_ms) + speechlike_ulaw(speech_ms, seed=seed) + silence_ulaw(tail_ms)
        )


async def open_client(emulator: VoiceLiveEmulator, **query: str) -> Client:
    ws = await websockets.connect(
        emulator.realtime_url(**query), additional_headers={"api-key": emulator.api_key}
    )
    client = Client(ws)
    created = await client.recv()
    assert created["type"] == "session.created"
    return client


async def ulaw_session(emulator: VoiceLiveEmulator, **extra: Any) -> Client:
    client = await open_client(emulator)
    await client.update(input_audio_format="g711_ulaw", output_audio_format="g711_ulaw", **extra)
    return client


def types(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


def audio_bytes(events: list[dict[str, Any]]) -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == "response.audio.delta")
