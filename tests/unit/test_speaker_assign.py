"""Word -> speaker assignment from diarization turns (gateway/speakers.py)."""

from __future__ import annotations

from gateway.transcript.speakers import assign, labels_by_first_appearance
from shared.messages import Turn, Word


def w(start: float, end: float) -> Word:
    return Word(start=start, end=end, text=" x", probability=1.0)


def test_overlap_then_nearest_then_none():
    turns = [Turn(0.0, 2.0, 1), Turn(2.0, 4.0, 0), Turn(6.0, 8.0, 1)]
    words = [w(0.5, 1.0), w(1.9, 2.5), w(4.5, 4.8), w(5.6, 5.9)]
    # mostly in turn 0's speaker; straddling goes to the larger overlap; gaps take the nearest turn
    assert assign(words, turns) == [1, 0, 0, 1]
    assert assign(words, []) == [None] * 4
    assert labels_by_first_appearance([1, 0, None, 1]) == {1: "S1", 0: "S2"}


def test_prefer_current_speaker_keeps_the_speaker_on_near_ties():
    turns = [Turn(0.0, 1.02, 0), Turn(1.02, 3.0, 1)]
    words = [w(0.2, 0.8), w(0.6, 1.5)]  # the second word: 0.42 s with speaker 0, 0.48 s with 1
    assert assign(words, turns) == [0, 1]
    assert assign(words, turns, prefer_current=True) == [0, 0]
    clear = [w(0.2, 0.8), w(1.0, 2.0)]  # 0.02 s vs 0.98 s: no near tie, the speaker changes
    assert assign(clear, turns, prefer_current=True) == [0, 1]
