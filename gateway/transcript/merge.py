"""Merging the segments of a split job back onto one timeline."""

from __future__ import annotations

import math

from shared.messages import SAMPLE_RATE, SegmentPlan, Transcribed, Word


def owned_words(plan: SegmentPlan, reply: Transcribed) -> list[Word]:
    """The words this segment owns: those whose midpoint lies in its keep window.

    Segments that overlap around a cut inside speech both hear the words near it; the
    midpoint rule gives each such word to exactly one of them.
    """
    lo = -math.inf if plan.cut_before == "start" else plan.keep_start / SAMPLE_RATE
    hi = math.inf if plan.cut_after == "end" else plan.keep_end / SAMPLE_RATE
    return [w for w in reply.words if lo <= (w.start + w.end) / 2 < hi]


def merge(plans: list[SegmentPlan], replies: list[Transcribed]) -> list[Word]:
    words = [w for plan, reply in zip(plans, replies) for w in owned_words(plan, reply)]
    return sorted(words, key=lambda w: (w.start, w.end))

