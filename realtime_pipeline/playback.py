"""What Twilio still has queued, and what the caller has actually heard, from our marks and their echoes.

Every chunk of assistant audio sent to Twilio is followed by a mark with a name unique for the call
(``"{item_id}:{n}"``) that records how far into that item the chunk ends. Twilio echoes a mark when the audio
before it has played, so the newest echoed mark of an item is a lower bound of what the caller heard (it never
overstates: a truncate never cuts audio that was not played). After a ``clear`` Twilio also echoes every mark
it dropped; we forget those names at the clear, so their late echoes are recognised as stale and can never be
taken for marks of the next response. The items cut by a clear are remembered, so their late audio deltas
are dropped. Only the newest ``max_items`` items are kept: a long call's memory does not grow with its replies.

Voice Live sends a reply faster than it plays, so a long reply leaves hundreds of marks pending at Twilio. They
are kept as runs (one per item, in sending order) of 8-byte positions, not as one dict entry per name: about
8 bytes a pending mark instead of 183 (a name string, a tuple and an ordered-dict entry).
"""

from __future__ import annotations

from array import array
from collections import deque
from dataclasses import dataclass


@dataclass(slots=True)
class ItemPlayback:
    item_id: str
    generation: int  # which Voice Live session produced it (item ids are per session)
    sent_ms: float = 0.0  # audio sent to Twilio for this item, in the item's own timeline
    heard_ms: float = 0.0  # position of the newest echoed mark
    echoed: bool = False
    marks: int = 0  # marks sent after this item's audio
    cut: bool = False  # cleared at Twilio (barge-in): the rest of its audio must not play


class _MarkRun:
    """Consecutive pending marks of one item: mark ``first_seq + i`` ends at ``positions[i]``; the marks
    before ``start`` have been echoed. (A plain class: at real pace each mark is echoed before the next is
    sent, so a run is made per mark and its construction is on the hot path.)"""

    __slots__ = ("first_seq", "item", "positions", "start")

    def __init__(self, item: ItemPlayback, first_seq: int, position: float) -> None:
        self.item = item
        self.first_seq = first_seq
        self.positions = array("d", (position,))
        self.start = 0


@dataclass(slots=True)  # not frozen: one per mark echo, and frozen construction costs 0.8 µs more
class MarkEcho:
    item_id: str
    heard_ms: float
    first_for_item: bool


@dataclass(frozen=True, slots=True)
class Interrupted:
    """An item whose audio was still queued at Twilio when it was cleared."""

    item_id: str
    generation: int
    heard_ms: float  # clamped to sent_ms
    sent_ms: float


class PlaybackTracker:
    __slots__ = ("_items", "_max_items", "_pending", "_seq", "stale_echoes")

    def __init__(self, max_items: int = 16) -> None:
        self._seq = 0
        self._pending: deque[_MarkRun] = deque()  # oldest first; never holds an empty run
        # Newest last. One response plays at a time, so an item older than the newest ``max_items`` is over.
        self._items: dict[str, ItemPlayback] = {}
        self._max_items = max_items
        self.stale_echoes = 0

    @property
    def tracked_items(self) -> int:
        return len(self._items)

    def is_cut(self, item_id: str) -> bool:
        item = self._items.get(item_id)
        return item is not None and item.cut

    @property
    def audio_queued(self) -> bool:
        """True while some audio we sent has not been confirmed played by its mark echo."""
        return bool(self._pending)

    def add_audio(self, item_id: str, duration_ms: float, generation: int = 0) -> ItemPlayback:
        """Account for audio of ``item_id`` (even if nothing went to Twilio yet, e.g. a filling resampler)."""
        item = self._items.get(item_id)
        if item is None:
            item = self._items[item_id] = ItemPlayback(item_id, generation)
            if len(self._items) > self._max_items:
                del self._items[next(iter(self._items))]
        item.sent_ms += duration_ms
        return item

    def mark_after(self, item: ItemPlayback) -> str:
        """A unique mark name for 'everything of ``item`` sent so far'; send it right after the media."""
        self._seq += 1
        item.marks += 1
        pending = self._pending
        if pending and pending[-1].item is item:
            pending[-1].positions.append(item.sent_ms)
        else:
            pending.append(_MarkRun(item, self._seq, item.sent_ms))
        return f"{item.item_id}:{self._seq}"

    def _find(self, name: str) -> tuple[int, _MarkRun] | None:
        """The pending run holding mark ``name`` and the mark's index in it, or None if it is not pending."""
        item_id, _, seq_text = name.rpartition(":")
        # Only the spelling we sent: int() also reads "01", "+1", " 1", "0_1" and non-ASCII digits.
        if not (seq_text.isascii() and seq_text.isdigit()) or seq_text[0] == "0":
            return None
        try:
            seq = int(seq_text)
        except ValueError:
            return None
        for run in self._pending:  # one run per item still playing: a handful at most
            index = seq - run.first_seq
            if index < run.start:
                return None
            if index < len(run.positions):
                return (index, run) if run.item.item_id == item_id else None
        return None

    def echoed(self, name: str) -> MarkEcho | None:
        """Twilio echoed ``name``. Returns None for stale/unknown names (e.g. echoes of cleared marks)."""
        found = self._find(name)
        if found is None:
            self.stale_echoes += 1
            return None
        index, run = found
        # Marks are echoed in order: anything queued before this one has played too.
        pending = self._pending
        while pending[0] is not run:
            done = pending.popleft()
            done.item.heard_ms = max(done.item.heard_ms, done.positions[-1])
        item = run.item
        item.heard_ms = max(item.heard_ms, run.positions[index])
        run.start = index + 1
        if run.start == len(run.positions):
            pending.popleft()
        elif run.start >= 64 and run.start * 2 >= len(run.positions):  # keep a long reply's run short
            del run.positions[: run.start]
            run.first_seq += run.start
            run.start = 0
        first = not item.echoed
        item.echoed = True
        return MarkEcho(item.item_id, item.heard_ms, first)

    def cut(self, item_id: str) -> Interrupted | None:
        """Stop ``item_id`` from playing any more when none of it is queued at Twilio (the caller talks into a
        gap of a slow reply): its late audio deltas are dropped. None if it is not tracked or already cut."""
        item = self._items.get(item_id)
        if item is None or item.cut:
            return None
        item.cut = True
        return Interrupted(item.item_id, item.generation, min(item.heard_ms, item.sent_ms), item.sent_ms)

    def clear(self) -> list[Interrupted]:
        """Twilio's buffer is being cleared: forget pending marks, report the items that were cut short."""
        cut: dict[str, ItemPlayback] = {}
        for run in self._pending:
            cut.setdefault(run.item.item_id, run.item)
        self._pending.clear()
        for item in cut.values():
            item.cut = True
        return [
            Interrupted(item.item_id, item.generation, min(item.heard_ms, item.sent_ms), item.sent_ms)
            for item in cut.values()
        ]
