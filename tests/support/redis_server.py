"""Fixture plugin: a real redis-server on a free port (filled in by the state-store work)."""
