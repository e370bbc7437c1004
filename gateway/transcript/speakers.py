"""Giving every word a speaker from the diarization turns."""

from __future__ import annotations

import bisect

from shared.messages import Turn, Word

UNKNOWN = "UU"
NEAR_TIE = 0.8  # with prefer_current_speaker, keep the previous speaker at >= 80 % of the best overlap


def _overlap(word: Word, turn: Turn) -> float:
    return min(word.end, turn.end) - max(word.start, turn.start)


def assign(words: list[Word], turns: list[Turn], prefer_current: bool = False) -> list[int | None]:
    """The speaker index of each word: the turn it overlaps most, else the nearest turn;
    None only when there are no turns at all. Words and turns are sorted by start."""
    if not turns:
        return [None] * len(words)
    starts = [t.start for t in turns]
    longest = max(t.end - t.start for t in turns)
    out: list[int | None] = []
    previous: int | None = None
    for word in words:
        # Turns that can overlap the word start within `longest` before its end.
        lo = bisect.bisect_left(starts, word.start - longest)
        hi = bisect.bisect_right(starts, word.end)
        overlaps: dict[int, float] = {}
        for turn in turns[lo:hi]:
            amount = _overlap(word, turn)
            if amount > 0:
                overlaps[turn.speaker] = overlaps.get(turn.speaker, 0.0) + amount
        if overlaps:
            speaker = max(overlaps, key=overlaps.__getitem__)
            if prefer_current and previous in overlaps and overlaps[previous] >= NEAR_TIE * overlaps[speaker]:
                speaker = previous
        else:
            near = turns[max(0, hi - 1): hi + 1]
            speaker = min(near, key=lambda t: max(t.start - word.end, word.start - t.end)).speaker
        out.append(speaker)
        previous = speaker
    return out


def labels_by_first_appearance(speakers: list[int | None]) -> dict[int, str]:
    """Speaker index -> S1, S2, … in the order the speakers are first heard."""
    labels: dict[int, str] = {}
    for speaker in speakers:
        if speaker is not None and speaker not in labels:
            labels[speaker] = f"S{len(labels) + 1}"
    return labels
