"""Gaps in the agent's voice as the caller hears them: Twilio's playback queue ran dry in the middle of a reply.

Twilio plays the media we send back to back, at real time, from the moment it arrives. So the moment its
queue empties is known here: when the last chunk was sent, plus the audio queued at Twilio then. A chunk of
the same item sent after that moment means the caller heard silence in mid-sentence for the difference: the
choppy audio peer bridges are known for (pain point P3). One of at least :data:`GAP_MS` is counted, the
audio-quality flag of the comparison methodology (D.4: "gap > 100 ms between consecutive output frames").
Silence between replies is not a gap, and neither is the first audio after a ``clear``.

The model leaves out the network between us and Twilio: a chunk delayed on its way counts from when it left.
"""

from __future__ import annotations

GAP_MS = 100.0


class PlaybackGaps:
    """Twilio's playback queue for one call, as a single number: when it drains."""

    __slots__ = ("_drains_at", "_item", "count", "longest_ms", "total_ms")

    def __init__(self) -> None:
        self._drains_at = 0.0  # monotonic seconds
        self._item: str | None = None  # the item whose audio was sent last (None after a clear)
        self.count = 0
        self.total_ms = 0.0
        self.longest_ms = 0.0

    def sent(self, item_id: str, now: float, audio_ms: float) -> float:
        """A chunk of ``audio_ms`` of ``item_id`` went to Twilio at ``now``: returns the gap it ended (ms; 0.0
        when none of at least :data:`GAP_MS`)."""
        drains_at = self._drains_at
        gap_ms = 0.0
        if now > drains_at:
            if item_id == self._item:
                gap_ms = (now - drains_at) * 1000.0
            drains_at = now
        self._drains_at = drains_at + audio_ms / 1000.0
        self._item = item_id
        if gap_ms < GAP_MS:
            return 0.0
        self.count += 1
        self.total_ms += gap_ms
        if gap_ms > self.longest_ms:
            self.longest_ms = gap_ms
        return gap_ms

    def cleared(self, now: float) -> None:
        """Twilio dropped its queue (``clear``): the next audio starts a new stretch."""
        self._drains_at = now
        self._item = None
