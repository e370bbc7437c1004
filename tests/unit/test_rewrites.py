"""gateway.transcript.rewrites on results as the engine's words make them: disfluencies,
replacements, vocabulary spellings and output locale, exactly (no model)."""

from __future__ import annotations

from gateway.transcript.config import TranscriptFilteringConfig, TranscriptionConfig, parse_config
from gateway.transcript.model import words_to_results
from gateway.transcript.rewrites import rewrite_results
from shared.messages import Word


def contents(results) -> list[str]:
    return [r.alternatives[0].content for r in results]


def test_disfluencies_are_tagged_or_removed():
    """Whisper rarely writes hesitations, and none of the offline corpora has one it writes."""
    heard = [Word(0.0, 0.3, " Um,", 0.9), Word(0.4, 0.6, " so", 0.9), Word(0.7, 0.9, " uh", 0.8),
             Word(1.0, 1.3, " yes.", 0.9)]
    tagged = rewrite_results(words_to_results(heard, "en"), TranscriptionConfig(language="en"), "en")
    assert [r.alternatives[0].tags for r in tagged if r.type == "word"] == [["disfluency"], None, ["disfluency"], None]
    removed = rewrite_results(words_to_results(heard, "en"), TranscriptionConfig(
        language="en", transcript_filtering_config=TranscriptFilteringConfig(remove_disfluencies=True)), "en")
    assert contents(removed) == ["So", "yes", "."]


def config(**transcription) -> TranscriptionConfig:
    import json

    return parse_config(json.dumps({"type": "transcription", "transcription_config": {
        "language": "en", **transcription}})).transcription


def test_replacements_plain_first_then_regex_once_per_word():
    heard = [Word(0.0, 0.4, " Please", 0.9), Word(0.5, 0.8, " check", 0.9), Word(0.9, 1.0, " the", 0.9),
             Word(1.1, 1.5, " number", 0.9), Word(1.6, 1.8, " and", 0.9), Word(1.9, 2.2, " dial", 0.9),
             Word(2.3, 2.8, " again.", 0.9)]
    tc = config(transcript_filtering_config={"replacements": [
        {"from": "/^dial$/i", "to": "call"}, {"from": "check the", "to": "verify that"},
        {"from": "/^verify$/", "to": "WRONG"}, {"from": "/(ag)ain/", "to": "$1ain!"}, {"from": "number", "to": ""}]})
    out = rewrite_results(words_to_results(heard, "en"), tc, "en")
    assert " ".join(contents(out)).replace(" .", ".") == "Please verify that and call again!."
    assert all(a.start_time <= b.start_time for a, b in zip(out, out[1:]))


def test_vocabulary_spellings_and_output_locale():
    heard = [Word(0.0, 0.4, " and", 0.9), Word(0.5, 0.9, " enter", 0.9), Word(1.0, 1.5, " asterisk", 0.9),
             Word(1.6, 2.0, " exchange", 0.9), Word(2.1, 2.5, " dialed.", 0.9)]
    tc = config(additional_vocab=[{"content": "Inter-Asterisk Exchange", "sounds_like": ["and enter asterisk exchange"]}],
                output_locale="en-GB")
    assert contents(rewrite_results(words_to_results(heard, "en"), tc, "en")) == [
        "Inter-Asterisk", "Exchange", "dialled", "."]
