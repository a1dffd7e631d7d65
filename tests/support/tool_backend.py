"""The tool-backend emulator (the business's own API behind the agent's tools), one for the test session."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from emulators.tool_backend import ToolBackendEmulator, ToolBackendKnobs


@pytest.fixture(scope="session")
def _tool_backend_server() -> Iterator[ToolBackendEmulator]:
    with ToolBackendEmulator() as server:
        yield server


@pytest.fixture
def tool_backend(_tool_backend_server: ToolBackendEmulator) -> ToolBackendEmulator:
    """The tool backend, its faults back to none for each test (each test finds its calls by call SID)."""
    _tool_backend_server.set_faults(**dataclasses.asdict(ToolBackendKnobs()))
    return _tool_backend_server
