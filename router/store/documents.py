"""How both backends take a call document apart: its key and its separately stored events."""

from __future__ import annotations

from typing import Any


def call_sid_of(record: dict[str, Any]) -> str:
    sid = record.get("call_sid")
    if not isinstance(sid, str) or not sid:
        raise ValueError(f"a call document needs a non-empty string call_sid, got {sid!r}")
    return sid


def split_events(doc: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """Events live apart from the document, so appending never rewrites (or races with) it."""
    body = dict(doc)
    events = body.pop("events", None)
    return body, None if events is None else list(events)
