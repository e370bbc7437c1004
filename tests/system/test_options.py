"""transcription_config options on real audio through the real server: language
identification, custom vocabulary, punctuation, filtering, output locale, translation,
volume filtering, and the options reported as unsupported."""

from __future__ import annotations

import re

import jiwer
import numpy as np
import pytest

from gateway.transcript import languages

import testdata
from chorus_server import text, words
from speech import FR_PROMPTS, normalise


def config(language: str = "en", model: str = "standard", **options) -> dict:
    top = {k: options.pop(k) for k in list(options) if k.endswith("_config") and not k.startswith("transcript")
           and not k.startswith("audio_filtering") and not k.startswith("speaker")}
    return {"type": "transcription", "transcription_config": {"language": language, "model": model, **options}, **top}


def marks(transcript: dict) -> list[str]:
    return [r["alternatives"][0]["content"] for r in transcript["results"] if r["type"] == "punctuation"]


@pytest.fixture(scope="module")
def french(audio_dir):
    """The French prompts joined into one recording, with their text."""
    parts, texts = [], []
    for name in FR_PROMPTS:
        samples, said = testdata.prompt(name, "fr")
        parts += [samples, testdata.silence(0.8)]
        texts.append(said)
    return testdata.write_wav(np.concatenate(parts), audio_dir / "french.wav"), " ".join(texts)


# ---- language identification -------------------------------------------------------------


def test_language_auto_fills_language_identification(idle_server, french):
    audio, reference = french
    transcript = idle_server.transcribe(audio, config("auto", "enhanced"))
    lid = transcript["metadata"]["language_identification"]
    best = lid["results"][0]["alternatives"][0]
    assert best["language"] == "fr" and best["confidence"] >= 0.5, lid
    assert 0 <= lid["results"][0]["start_time"] < lid["results"][0]["end_time"] <= transcript["job"]["duration"] + 1
    assert {r["alternatives"][0]["language"] for r in transcript["results"]} == {"fr"}
    assert transcript["metadata"]["language_pack_info"]["language_description"] == "French"
    assert jiwer.cer(normalise(reference), normalise(text(transcript))) <= 0.25


def test_expected_languages_restrict_the_choice(idle_server, french):
    """French audio, but only English or Spanish expected: the scores cover those two alone."""
    audio, _ = french
    lid_config = {"expected_languages": ["en", "es"]}
    transcript = idle_server.transcribe(audio, config("auto", "enhanced", language_identification_config=lid_config))
    alternatives = transcript["metadata"]["language_identification"]["results"][0]["alternatives"]
    assert {a["language"] for a in alternatives} <= {"en", "es"}
    assert sum(a["confidence"] for a in alternatives) == pytest.approx(1.0, abs=0.02)
    assert {r["alternatives"][0]["language"] for r in transcript["results"]} <= {"en", "es"}


def test_english_identified_then_served_by_the_requested_english_model(idle_server, prompt_wav):
    audio, reference = prompt_wav("agent-incorrect")
    transcript = idle_server.transcribe(audio, config("auto", "standard"))
    assert transcript["metadata"]["language_identification"]["results"][0]["alternatives"][0]["language"] == "en"
    log = idle_server.http.get(f"/v2/jobs/{transcript['job']['id']}/log").text
    assert re.search(r"transcribing with the standard model .* language en", log), log
    assert jiwer.wer(normalise(reference), normalise(text(transcript))) <= 0.2


def test_unexpected_language_reject_allow_or_default(idle_server, french):
    """French audio with only German, Spanish or Italian expected: reported as an unexpected
    language, and the job rejected, transcribed anyway, or transcribed in the default
    language, as low_confidence_action says."""
    audio, _ = french
    unlikely = {"expected_languages": ["de", "es", "it"]}
    response = idle_server.submit(audio, config("auto", "enhanced", language_identification_config={
        **unlikely, "low_confidence_action": "reject"}))
    job = idle_server.wait(response.json()["id"])
    assert job["status"] == "rejected"
    assert "sounds like fr" in job["errors"][0]["message"] and "not among the expected" in job["errors"][0]["message"]
    allowed = idle_server.transcribe(audio, config("auto", "enhanced", language_identification_config=unlikely))
    assert allowed["metadata"]["language_identification"]["error"] == "UNEXPECTED_LANGUAGE"
    assert {r["alternatives"][0]["language"] for r in allowed["results"]} <= {"de", "es", "it"}
    fallback = idle_server.transcribe(audio, config("auto", "enhanced", language_identification_config={
        **unlikely, "low_confidence_action": "use_default_language", "default_language": "fr"}))
    assert fallback["metadata"]["language_identification"]["error"] == "UNEXPECTED_LANGUAGE"
    assert {r["alternatives"][0]["language"] for r in fallback["results"]} == {"fr"}


def test_language_pack_info_for_every_language():
    for code in [*languages.WHISPER_LANGUAGES, "cmn"]:
        info = languages.pack_info(languages.from_whisper(code))
        assert info.language_description and info.writing_direction in ("left-to-right", "right-to-left")
    assert languages.pack_info("ja").word_delimiter == languages.pack_info("cmn").word_delimiter == ""
    assert languages.pack_info("ar").writing_direction == "right-to-left"
    assert languages.pack_info("fr").word_delimiter == " "


# ---- custom vocabulary ---------------------------------------------------------------------


def test_additional_vocab_fixes_a_rare_term(idle_server, prompt_wav):
    """tiny.en hears "Inter-Asterisk Exchange" as "and enter asterisk exchange"."""
    audio, _ = prompt_wav("demo-abouttotry")
    plain = text(idle_server.transcribe(audio, config()))
    assert "Inter-Asterisk Exchange" not in plain
    helped = text(idle_server.transcribe(audio, config(additional_vocab=[{"content": "Inter-Asterisk Exchange"}])))
    assert "Inter-Asterisk Exchange" in helped, helped


def test_additional_vocab_bare_strings_and_sounds_like(idle_server, prompt_wav):
    """A bare string biases decoding too; a sounds_like spelling that is heard is written as
    the entry's content."""
    audio, _ = prompt_wav("queue-thereare")
    assert "color" in text(idle_server.transcribe(audio, config())).lower()
    assert "caller" in text(idle_server.transcribe(audio, config(additional_vocab=["caller"]))).lower()
    audio, _ = prompt_wav("demo-abouttotry")
    mapped = idle_server.transcribe(audio, config(additional_vocab=[
        {"content": "IAX", "sounds_like": ["Inter-Asterisk Exchange"]}]))
    assert "IAX" in words(mapped) and "attempt an iax connection" in text(mapped).lower(), text(mapped)


# ---- punctuation ---------------------------------------------------------------------------


def test_punctuation_overrides(idle_server, long_speech):
    audio, _ = long_speech
    default = idle_server.transcribe(audio, config())
    # Whisper ends the reading's sentences with full stops; whether it also writes commas
    # depends on the CPU's kernels (none on one clean Debian root), so only "." is required.
    assert "." in marks(default)
    none = idle_server.transcribe(audio, config(punctuation_overrides={"permitted_marks": []}))
    assert marks(none) == [] and words(none) == words(default)
    for permitted in (["."], [","], [".", "?"]):
        kept = idle_server.transcribe(audio, config(punctuation_overrides={"permitted_marks": permitted}))
        assert marks(kept) == [m for m in marks(default) if m in permitted], permitted
        assert words(kept) == words(default)
    # Low sensitivity keeps a subset of the marks, in order (which ones: tests/unit).
    sparse = idle_server.transcribe(audio, config(punctuation_overrides={"sensitivity": 0.0}))
    assert words(sparse) == words(default)
    rest = iter(marks(default))
    assert all(mark in rest for mark in marks(sparse))
    assert marks(idle_server.transcribe(audio, config(punctuation_overrides={"sensitivity": 0.5}))) == marks(default)


# ---- filtering -----------------------------------------------------------------------------


def test_replacements_plain_then_regex_once_per_word(idle_server, prompt_wav):
    audio, _ = prompt_wav("check-number-dial-again")  # "Please check the number and dial again."
    filtering = {"replacements": [
        {"from": "/^dial$/i", "to": "call"},
        {"from": "check the", "to": "verify that"},  # plain, two words: applied first
        {"from": "/^verify$/", "to": "WRONG"},  # the word came from a replacement: left alone
        {"from": "/(ag)ain/", "to": "$1ain!"},
        {"from": "number", "to": ""},  # removed
    ]}
    transcript = idle_server.transcribe(audio, config(transcript_filtering_config=filtering))
    assert text(transcript) == "Please verify that and call again!", text(transcript)
    results = transcript["results"]
    assert all(a["start_time"] <= b["start_time"] for a, b in zip(results, results[1:]))


def test_a_bad_regex_rejects_the_job_with_the_reason(idle_server, speech):
    audio, _ = speech
    response = idle_server.submit(audio, config(transcript_filtering_config={
        "replacements": [{"from": "/(unclosed/", "to": "x"}]}))
    assert response.status_code == 400
    assert "regular expression '/(unclosed/' is invalid" in response.json()["detail"]


# ---- output locale -------------------------------------------------------------------------


def test_output_locale_spelling(idle_server, prompt_wav):
    audio, _ = prompt_wav("cannot-complete-as-dialed")
    us = text(idle_server.transcribe(audio, config(output_locale="en-US")))
    gb = idle_server.transcribe(audio, config(output_locale="en-GB"))
    assert "dialed" in us and "dialled" in text(gb), (us, text(gb))
    assert "transcription_errors" not in gb["metadata"]
    other = idle_server.transcribe(audio, config(output_locale="cmn-Hans"))
    assert other["metadata"]["transcription_errors"][0]["type"] == "unsupported_locale"


# ---- translation ---------------------------------------------------------------------------


def test_translation_into_english(idle_server, french):
    audio, _ = french
    transcript = idle_server.transcribe(audio, config("fr", "enhanced", translation_config={
        "target_languages": ["en", "de"]}))
    english = transcript["translations"]["en"]
    said = " ".join(s["content"] for s in english).lower()
    assert {"password", "agent", "goodbye"} & set(re.findall(r"[a-z]+", said)), said
    assert all(s["start_time"] <= s["end_time"] for s in english)
    assert all(a["start_time"] <= b["start_time"] for a, b in zip(english, english[1:]))
    errors = transcript["metadata"]["translation_errors"]
    assert [e["type"] for e in errors] == ["unsupported_target_language"] and "'de'" in errors[0]["message"]
    assert {r["alternatives"][0]["language"] for r in transcript["results"]} == {"fr"}  # the transcript stays French


def test_translation_of_english_is_the_transcript(idle_server, speech):
    audio, _ = speech
    transcript = idle_server.transcribe(audio, config(translation_config={"target_languages": ["en"]}))
    assert " ".join(s["content"] for s in transcript["translations"]["en"]).lower().startswith("please enter")


# ---- volume --------------------------------------------------------------------------------


def test_volume_threshold_drops_quiet_speech(idle_server, audio_dir):
    loud, loud_text = testdata.prompt("agent-pass")
    quiet, quiet_text = testdata.prompt("conf-getpin")
    loud = loud / max(np.abs(loud).max(), 1e-9) * 0.8
    quiet = quiet / max(np.abs(quiet).max(), 1e-9) * 0.08  # background speech, 20 dB down
    audio = testdata.write_wav(np.concatenate([loud, testdata.silence(1.0), quiet, testdata.silence(0.5)]),
                               audio_dir / "loud-and-quiet.wav")
    labelled = idle_server.transcribe(audio, config(audio_filtering_config={"volume_threshold": 0}))
    assert "conference" in text(labelled).lower() and "password" in text(labelled).lower()
    volumes = [r["volume"] for r in labelled["results"] if r["type"] == "word"]
    assert all(0 <= v <= 100 for v in volumes) and max(volumes) > 5
    loud_level = max(v for r, v in zip(words(labelled), volumes) if r.lower() == "password")
    quiet_level = max(v for r, v in zip(words(labelled), volumes) if r.lower() == "conference")
    assert quiet_level < loud_level / 5, (quiet_level, loud_level)
    filtered = idle_server.transcribe(audio, config(audio_filtering_config={"volume_threshold": 3}))
    assert "password" in text(filtered).lower() and "conference" not in text(filtered).lower(), text(filtered)


# ---- accepted, not implemented -------------------------------------------------------------


def test_unsupported_features_are_reported_and_the_transcript_is_normal(idle_server, speech):
    audio, reference = speech
    transcript = idle_server.transcribe(audio, config(
        enable_entities=True, domain="finance",
        summarization_config={"summary_length": "brief"}, sentiment_analysis_config={},
        topic_detection_config={"topics": ["news"]}, auto_chapters_config={}, audio_events_config={}))
    metadata = transcript["metadata"]
    for key in ("summarization_errors", "sentiment_analysis_errors", "topic_detection_errors",
                "auto_chapters_errors", "audio_events_errors"):
        assert metadata[key][0]["type"] == "unsupported_feature", key
    assert len(metadata["transcription_errors"]) == 2
    assert jiwer.wer(normalise(reference), normalise(text(transcript))) <= 0.2
