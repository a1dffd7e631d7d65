"""Fixture plugin: a real Azurite blob server on a free port (filled in by the legacy-pipeline work)."""
