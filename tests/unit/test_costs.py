"""The task cost model and the split of a k-engine job that also diarizes (gateway/jobs/costs.py)."""

from __future__ import annotations

import pytest

from engine.plan import _ideal_positions
from gateway.jobs.costs import DEFAULT_RTF, TaskCosts, shares_with_diarization


def test_costs_start_from_the_defaults_and_follow_what_engines_report():
    costs = TaskCosts()
    assert costs.diarization_ratio("standard") == pytest.approx(DEFAULT_RTF["diarization"] / DEFAULT_RTF["asr"])
    costs.observe("asr:standard", audio_seconds=100.0, seconds=10.0)
    costs.observe("diarization", audio_seconds=100.0, seconds=2.0)
    assert costs.diarization_ratio("standard") == pytest.approx(0.2)
    costs.observe("diarization", audio_seconds=100.0, seconds=4.0)  # a moving average, not the last value
    assert 0.2 < costs.diarization_ratio("standard") < 0.4
    costs.observe("diarization", audio_seconds=0.5, seconds=9.0)  # too short to count
    assert costs.diarization_ratio("standard") < 0.4
    assert costs.diarization_ratio("enhanced") == pytest.approx(costs.rtf["diarization"] / DEFAULT_RTF["asr"])


@pytest.mark.parametrize("engines, ratio", [(2, 0.2), (2, 0.5), (3, 0.3), (4, 0.2)])
def test_every_engine_ends_together(engines, ratio):
    shares = shares_with_diarization(engines, ratio)
    assert len(shares) == engines and sum(shares) == pytest.approx(1.0)
    # The diarizing engine does the diarization and then the last segment; each other one segment.
    ends = [*shares[:-1], ratio + shares[-1]]
    assert max(ends) == pytest.approx(min(ends))


def test_a_costly_diarization_takes_a_whole_engine():
    assert shares_with_diarization(2, 1.5) == [1.0]
    assert shares_with_diarization(3, 2.0) == [0.5, 0.5]
    assert shares_with_diarization(1, 0.5) == [1.0]


def test_the_planner_puts_ideal_cuts_at_the_shares():
    regions = [(0, 1000), (2000, 3000)]  # 2000 samples of speech
    assert _ideal_positions(regions, 2) == [1000]  # equal: the middle of the speech
    assert _ideal_positions(regions, 2, [0.75, 0.25]) == [2500]
    assert _ideal_positions(regions, 3, [0.25, 0.25, 0.5]) == [500, 1000]
