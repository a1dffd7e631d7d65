"""Shared fixtures: real servers (redis-server, Azurite, the tool backend) started on free ports for the test
session."""

pytest_plugins = [
    "tests.support.redis_server",
    "tests.support.azurite",
    "tests.support.tool_backend",
]
