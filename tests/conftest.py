"""Shared fixtures: real servers (redis-server, Azurite) started on free ports for the test session."""

pytest_plugins = [
    "tests.support.redis_server",
    "tests.support.azurite",
]
