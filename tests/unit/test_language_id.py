"""gateway.transcript.language_id.decide: Whisper's scores against the config's rules."""

from __future__ import annotations

from gateway.transcript.config import LanguageIdentificationConfig
from gateway.transcript.language_id import decide
from shared.messages import Identified, LanguageScore


def found(scores: list[tuple[str, float]], heard: tuple[str, float] | None = None, share: float = 1.0) -> Identified:
    ranked = [LanguageScore(code, p) for code, p in scores]
    return Identified(job_id="j", scores=ranked, heard=LanguageScore(*heard) if heard else (ranked or [None])[0],
                      expected_share=share, start=0.5, end=30.5, seconds=0.1)


def test_a_clear_winner_is_used():
    verdict = decide(found([("fr", 0.9), ("en", 0.1)]), LanguageIdentificationConfig())
    assert (verdict.language, verdict.reject, verdict.metadata.error) == ("fr", False, None)
    result = verdict.metadata.results[0]
    assert [a.language for a in result.alternatives] == ["fr", "en"] and (result.start_time, result.end_time) == (0.5, 30.5)


def test_low_confidence_follows_the_action():
    scores = found([("fr", 0.4), ("en", 0.35), ("de", 0.25)])
    allow = decide(scores, LanguageIdentificationConfig())
    assert (allow.language, allow.reject, allow.metadata.error) == ("fr", False, "LOW_CONFIDENCE")
    assert decide(scores, LanguageIdentificationConfig(low_confidence_action="reject")).reject
    default = decide(scores, LanguageIdentificationConfig(low_confidence_action="use_default_language",
                                                          default_language="de"))
    assert (default.language, default.reject) == ("de", False)


def test_an_unexpected_language_and_no_speech():
    unexpected = decide(found([("en", 0.9)], heard=("ja", 0.95), share=0.05),
                        LanguageIdentificationConfig(expected_languages=["en"]))
    assert unexpected.metadata.error == "UNEXPECTED_LANGUAGE" and "ja" in unexpected.metadata.message
    silent = decide(found([]), LanguageIdentificationConfig(default_language="fr"))
    assert (silent.language, silent.metadata.error, silent.metadata.results) == ("fr", "NO_SPEECH", [])
