"""The cut chooser on speech regions given directly (the VAD part runs in the split tests)."""

from __future__ import annotations

import numpy as np

from engine.plan import choose_cuts, segments_from_cuts
from gateway.transcript.merge import owned_words
from shared.messages import SAMPLE_RATE as R
from shared.messages import Transcribed, Word


def _energy(samples: int, regions: list[tuple[int, int]]) -> np.ndarray:
    energy = np.full(samples // 160, 1e-4)
    for s, e in regions:
        energy[s // 160:e // 160] = 0.3
    return energy


def test_cut_goes_into_the_longest_pause_near_the_ideal_point():
    # 10 s of speech each side of the middle, with a short pause at 9.5 s and a long one at 11 s.
    regions = [(0, int(9.4 * R)), (int(9.6 * R), int(10.8 * R)), (int(11.8 * R), 21 * R)]
    samples = 22 * R
    cuts = choose_cuts(regions, samples, 2, _energy(samples, regions), window=5 * R, overlap=R)
    assert len(cuts) == 1 and cuts[0][1] == "silence"
    assert int(10.8 * R) <= cuts[0][0] <= int(11.8 * R) and cuts[0][2] == 1.0


def test_no_pause_in_the_window_means_an_overlap_cut():
    regions = [(0, 20 * R), (int(40.5 * R), 60 * R)]  # the ideal point is at 20 s, inside speech
    samples = 60 * R
    cuts = choose_cuts(regions, samples, 3, _energy(samples, regions), window=2 * R, overlap=R)
    kinds = [k for _, k, _ in cuts]
    assert kinds[0] == "overlap"
    plans = segments_from_cuts(cuts, samples, overlap=R)
    assert plans[0].end == plans[0].keep_end + R and plans[1].start == plans[1].keep_start - R
    # A word straddling the cut is heard by both segments and kept by exactly one.
    cut = cuts[0][0] / R
    word = Word(start=cut - 0.2, end=cut + 0.1, text=" straddle", probability=1.0)
    replies = [Transcribed(job_id="j", words=[word], audio_seconds=1.0, seconds=1.0) for _ in range(2)]
    assert [len(owned_words(p, r)) for p, r in zip(plans[:2], replies)] == [1, 0]


def test_two_ideal_points_in_one_pause_give_fewer_segments():
    regions = [(0, 2 * R), (10 * R, 12 * R)]  # two short bursts: 3 engines can't all be used
    samples = 12 * R
    cuts = choose_cuts(regions, samples, 3, _energy(samples, regions), window=10 * R, overlap=R)
    assert len(cuts) == 1
    assert len(segments_from_cuts(cuts, samples, overlap=R)) == 2
