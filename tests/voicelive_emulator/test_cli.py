"""``python -m emulators.voicelive`` serves the protocol with the knobs given on the command line."""

from __future__ import annotations

import asyncio
import sys

import orjson
import websockets

from emulators.runner import free_port
from emulators.voicelive.__main__ import config_from_args, parse_args


def test_args_map_onto_config_and_faults() -> None:
    config = config_from_args(
        parse_args(
            ["--port", "9", "--api-key", "k1", "--first-audio-ms", "5", "--pace", "0", "--reply", "Hi."]
        )
    )
    assert (config.port, config.api_keys, config.replies) == (9, ("k1",), ("Hi.",))
    assert (config.faults.first_audio_ms, config.faults.pace) == (5, 0)
    assert not config.follow_say_exactly
    assert config_from_args(parse_args(["--follow-say-exactly"])).follow_say_exactly


async def test_cli_serves_a_session() -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "emulators.voicelive",
        "--port",
        str(port),
        "--api-key",
        "cli-key",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        assert f"127.0.0.1:{port}" in line
        url = f"ws://127.0.0.1:{port}/voice-live/realtime?api-version=2025-10-01&model=gpt-realtime"
        async with websockets.connect(url, additional_headers={"api-key": "cli-key"}) as ws:
            assert orjson.loads(await ws.recv())["type"] == "session.created"
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)
