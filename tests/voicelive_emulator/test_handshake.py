"""Upgrade checks happen before the WebSocket is accepted and answer with HTTP errors."""

from __future__ import annotations

import orjson
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from emulators.voicelive import VoiceLiveEmulator


async def refused(url: str, headers: dict[str, str] | None = None) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(url, additional_headers=headers or {}):
            pass
    return info.value


async def first_event(url: str, headers: dict[str, str] | None = None) -> dict[str, object]:
    async with websockets.connect(url, additional_headers=headers or {}) as ws:
        event: dict[str, object] = orjson.loads(await ws.recv())
        return event


async def test_api_key_header_is_accepted(emulator: VoiceLiveEmulator) -> None:
    event = await first_event(emulator.realtime_url(), {"api-key": "emulator-key"})
    assert event["type"] == "session.created"
    assert emulator.sessions[0].auth == "api-key"
    assert emulator.sessions[0].api_version == "2025-10-01"
    assert emulator.sessions[0].model == "gpt-realtime"


async def test_api_key_query_is_accepted(emulator: VoiceLiveEmulator) -> None:
    event = await first_event(emulator.realtime_url(**{"api-key": "emulator-key"}))
    assert event["type"] == "session.created"


async def test_bearer_token_is_accepted(emulator: VoiceLiveEmulator) -> None:
    event = await first_event(emulator.realtime_url(), {"Authorization": "Bearer emulator-token"})
    assert event["type"] == "session.created"
    assert emulator.sessions[0].auth == "bearer"


async def test_client_sdk_query_is_recorded(emulator: VoiceLiveEmulator) -> None:
    await first_event(
        emulator.realtime_url(**{"x-ms-client-sdk": "azsdk-python"}), {"api-key": "emulator-key"}
    )
    assert emulator.sessions[0].client_sdk == "azsdk-python"


@pytest.mark.parametrize(
    "headers",
    [{"api-key": "wrong"}, {}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic emulator-token"}],
)
async def test_bad_or_missing_credential_is_401_with_json(
    emulator: VoiceLiveEmulator, headers: dict[str, str]
) -> None:
    error = await refused(emulator.realtime_url(), headers)
    assert error.response.status_code == 401
    body = orjson.loads(error.response.body)
    assert body["error"]["code"] == "401"
    assert "Access denied" in body["error"]["message"]
    assert emulator.sessions == []
    assert emulator.state.connections_rejected == 1


async def test_missing_api_version_or_model_is_400(emulator: VoiceLiveEmulator) -> None:
    no_version = f"{emulator.ws_url}?model=gpt-realtime"
    error = await refused(no_version, {"api-key": "emulator-key"})
    assert error.response.status_code == 400
    assert orjson.loads(error.response.body)["error"]["code"] == "MissingApiVersionParameter"
    no_model = f"{emulator.ws_url}?api-version=2025-10-01"
    error = await refused(no_model, {"api-key": "emulator-key"})
    assert error.response.status_code == 400


async def test_wrong_path_is_not_upgraded(emulator: VoiceLiveEmulator) -> None:
    with pytest.raises(InvalidStatus):
        async with websockets.connect(
            f"ws://127.0.0.1:{emulator.port}/openai/realtime?api-version=x&model=y",
            additional_headers={"api-key": "emulator-key"},
        ):
            pass
