"""Outgoing events a stalled session holds back, in order, bounded.

A stalled service (a network hiccup, a GC pause) still produces events and delivers what it had queued once
it recovers; the emulator does the same. Held events are kept serialized, as they were when produced (later
changes to a conversation item must not rewrite an event already "sent"). Memory stays bounded: beyond
``cap`` events the oldest ``response.audio.delta`` is dropped (the bulk of the bytes, and losing one is a gap
in the audio, not a missing protocol step), or the oldest event when no audio is held. Every drop, and every
event still held when the session ends, is counted in the session record, so nothing is lost silently.
"""

from __future__ import annotations

from collections import deque

from emulators.voicelive.records import SessionRecord

AUDIO_DELTA = "response.audio.delta"


class HeldEvents:
    """A FIFO of ``(type, frame text)`` with a cap; its counts are mirrored into ``record``."""

    def __init__(self, cap: int, record: SessionRecord) -> None:
        self._cap = cap
        self._record = record
        self._events: deque[tuple[str, str]] = deque()

    def __len__(self) -> int:
        return len(self._events)

    def hold(self, kind: str, text: str) -> None:
        self._events.append((kind, text))
        if len(self._events) > self._cap:
            self._drop_one()
        self._record.held_events = len(self._events)

    def pop(self) -> tuple[str, str]:
        """The oldest held event, now to be sent."""
        event = self._events.popleft()
        self._record.held_events = len(self._events)
        return event

    def discard(self) -> None:
        """The session ended with these never sent: count them as such."""
        self._record.held_unsent += len(self._events)
        self._events.clear()
        self._record.held_events = 0

    def _drop_one(self) -> None:
        for index, (kind, _) in enumerate(self._events):
            if kind == AUDIO_DELTA:
                del self._events[index]
                break
        else:
            self._events.popleft()
        self._record.held_dropped += 1
