"""punctuation_overrides on results as the engine's words make them: exact, no model."""

from __future__ import annotations

from gateway.transcript.model import words_to_results
from gateway.transcript.rewrites import punctuation_kept
from shared.messages import Word

# "One, two. Three, four." with a 0.1 s pause after "One," 0.8 s after "two." and 1.2 s
# after "Three,"; the last mark ends the transcript.
WORDS = [Word(0.0, 0.4, " One,", 0.9), Word(0.5, 0.9, " two.", 0.9), Word(1.7, 2.1, " Three,", 0.9),
         Word(3.3, 3.7, " four.", 0.9)]


def kept_marks(permitted: list[str] | None, sensitivity: float) -> list[str]:
    results = words_to_results(WORDS, "en")
    keep = punctuation_kept(results, permitted, sensitivity)
    return [r.alternatives[0].content for r, k in zip(results, keep) if k and r.type == "punctuation"]


def test_permitted_marks_keep_only_those():
    assert kept_marks(None, 0.5) == [",", ".", ",", "."]
    assert kept_marks(["all"], 0.5) == [",", ".", ",", "."]
    assert kept_marks(["."], 0.5) == [".", "."]
    assert kept_marks([","], 0.5) == [",", ","]
    assert kept_marks([], 0.5) == []


def test_sensitivity_below_a_half_keeps_marks_before_long_enough_pauses():
    # 0.0: a comma needs a 1.0 s pause, a sentence end 0.5 s.
    assert kept_marks(None, 0.0) == [".", ",", "."]
    # 0.3: a comma needs 0.4 s, a sentence end 0.2 s.
    assert kept_marks(None, 0.3) == [".", ",", "."]
    # 0.48: a comma needs 0.04 s, so the first one (0.1 s) stays too.
    assert kept_marks(None, 0.48) == [",", ".", ",", "."]
    # 0.5 and above: Whisper's marks as they are.
    assert kept_marks(None, 0.5) == kept_marks(None, 1.0) == [",", ".", ",", "."]
    # Both options at once.
    assert kept_marks([","], 0.0) == [","]
