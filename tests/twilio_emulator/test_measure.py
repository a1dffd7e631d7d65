"""The caller's ears: what counts as dead air."""

from __future__ import annotations

from emulators.twilio.measure import CallerEars


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_bot_speaking_up_during_a_callers_pause_is_not_dead_air() -> None:
    """An agent checking on a quiet caller ("Are you still there?") breaks the caller's own silence."""
    clock = Clock()
    ears = CallerEars("CA" + "1" * 32, monotonic=clock, wall=clock)
    ears.answered(clock.now)
    ears.audio_started(clock.now + 0.3, fresh=True, mode="realtime")
    clock.now += 2.0
    ears.audio_stopped(clock.now)
    ears.pause_began()
    clock.now += 6.0
    ears.audio_started(clock.now, fresh=False, mode="realtime")  # the re-prompt, mid-pause
    assert round(ears.max_silence_ms) == 300
    clock.now += 1.0
    ears.caller_paused(clock.now)
    ears.audio_stopped(clock.now)
    # Without a pause, the same wait for the bot is dead air.
    clock.now += 5.0
    ears.audio_started(clock.now, fresh=False, mode="realtime")
    assert round(ears.max_silence_ms) == 5000
