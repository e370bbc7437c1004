"""Planning a k-engine job: where to cut the timeline so k engines share the speech evenly.

Each cut goes at the quietest point of a pause near its ideal position (the point where the
cumulative speech reaches i/k of the total). Pauses are found with Silero VAD at a fine
grain (short silences between words count), and longer pauses score higher, since sentence
ends tend to have them. Only when no pause lies within the search window does a cut fall
inside speech: then the neighbouring segments overlap by a margin around the cut, and each
word belongs to the segment that owns its midpoint.
"""

from __future__ import annotations

import time

import numpy as np

from engine.control import Control
from shared.messages import SAMPLE_RATE, Plan, Planned, SegmentPlan

FRAME = SAMPLE_RATE // 100  # 10 ms energy frames
# Fine-grained VAD: a pause of 150 ms between words is a place to cut.
MIN_SILENCE_MS = 150
SPEECH_PAD_MS = 30
LONG_PAUSE_S = 1.0  # pauses this long score as sentence boundaries


def speech_regions(audio: np.ndarray) -> list[tuple[int, int]]:
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(min_silence_duration_ms=MIN_SILENCE_MS, speech_pad_ms=SPEECH_PAD_MS)
    return [(t["start"], t["end"]) for t in get_speech_timestamps(audio, options)]


def frame_energy(audio: np.ndarray) -> np.ndarray:
    frames = audio[: audio.size // FRAME * FRAME].reshape(-1, FRAME)
    return np.sqrt(np.mean(frames * frames, axis=1)) if frames.size else np.zeros(0)


def _quietest(energy: np.ndarray, start: int, end: int) -> int:
    """The sample at the middle of the quietest 10 ms frame in [start, end)."""
    first, last = start // FRAME, max(start // FRAME + 1, end // FRAME)
    window = energy[first:last]
    if window.size == 0:
        return (start + end) // 2
    return (first + int(np.argmin(window))) * FRAME + FRAME // 2


def _ideal_positions(regions: list[tuple[int, int]], count: int, shares: list[float] | None = None) -> list[int]:
    """Where the cumulative speech reaches the end of each segment's share (i/count of the total
    with equal shares), for the first count-1 segments."""
    lengths = np.array([e - s for s, e in regions], dtype=np.float64)
    cumulative = np.cumsum(lengths)
    bounds = np.cumsum(shares if shares else [1.0] * count)
    positions = []
    for i in range(1, count):
        target = cumulative[-1] * bounds[i - 1] / bounds[-1]
        j = int(np.searchsorted(cumulative, target))
        before = cumulative[j - 1] if j else 0.0
        positions.append(int(regions[j][0] + (target - before)))
    return positions


def choose_cuts(
    regions: list[tuple[int, int]], samples: int, count: int, energy: np.ndarray,
    window: int, overlap: int, shares: list[float] | None = None,
) -> list[tuple[int, str, float]]:
    """Cuts as (sample, kind, pause seconds); kind is "silence" or "overlap"."""
    gaps = [(a_end, b_start) for (_, a_end), (b_start, _) in zip(regions, regions[1:]) if b_start > a_end]
    cuts: list[tuple[int, str, float]] = []
    for ideal in _ideal_positions(regions, count, shares):
        best, best_score = None, -np.inf
        for start, end in gaps:
            if end < ideal - window or start > ideal + window:
                continue
            length = (end - start) / SAMPLE_RATE
            distance = abs((start + end) / 2 - ideal) / max(window, 1)
            score = min(length, LONG_PAUSE_S) / LONG_PAUSE_S - distance
            if score > best_score:
                best, best_score = (start, end), score
        if best is not None:
            cut = (_quietest(energy, *best), "silence", (best[1] - best[0]) / SAMPLE_RATE)
        else:  # continuous speech: cut at the quietest point near the ideal, and overlap
            near = SAMPLE_RATE // 4
            cut = (_quietest(energy, max(0, ideal - near), min(samples, ideal + near)), "overlap", 0.0)
        if cut[0] <= (cuts[-1][0] if cuts else 0) or cut[0] >= samples:
            continue  # two ideals found the same pause: one segment fewer
        cuts.append(cut)
    return cuts


def segments_from_cuts(cuts: list[tuple[int, str, float]], samples: int, overlap: int) -> list[SegmentPlan]:
    bounds = [(0, "start", 0.0), *cuts, (samples, "end", 0.0)]
    plans = []
    for (left, left_kind, _), (right, right_kind, _) in zip(bounds, bounds[1:]):
        plans.append(
            SegmentPlan(
                start=max(0, left - overlap) if left_kind == "overlap" else left,
                end=min(samples, right + overlap) if right_kind == "overlap" else right,
                keep_start=left,
                keep_end=right,
                cut_before=left_kind,
                cut_after=right_kind,
            )
        )
    return plans


def plan(request: Plan, control: Control) -> Planned:
    started = time.perf_counter()
    audio = np.fromfile(request.audio_path, dtype=np.float32)
    control.tick("planning", 0.0, audio.size / SAMPLE_RATE)
    regions = speech_regions(audio)  # VAD checks the control between its batches (engine/vad.py)
    count = min(request.segments, max(1, len(regions)))
    shares = request.shares if request.shares and len(request.shares) == count else None
    # A cut may move at most a fifth of a segment's length: balance before pause length.
    window = int(min(request.window_seconds * SAMPLE_RATE, 0.2 * audio.size / max(count, 1)))
    overlap = int(request.overlap_seconds * SAMPLE_RATE)
    cuts = choose_cuts(regions, audio.size, count, frame_energy(audio), window, overlap, shares) if count > 1 else []
    return Planned(
        job_id=request.job_id,
        segments=segments_from_cuts(cuts, audio.size, overlap),
        speech_regions=len(regions),
        speech_seconds=sum(e - s for s, e in regions) / SAMPLE_RATE,
        pauses=[pause for _, _, pause in cuts],
        seconds=time.perf_counter() - started,
    )
