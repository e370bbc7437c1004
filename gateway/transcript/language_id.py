"""Deciding a job's language from Whisper's scores (language "auto"), as the config's
language_identification_config asks, and the `metadata.language_identification` it reports."""

from __future__ import annotations

import msgspec

from gateway.transcript import languages
from gateway.transcript.config import LanguageIdentificationConfig
from gateway.transcript.model import LanguageAlternative, LanguageIdentification, LanguageIdentificationResult
from shared import messages as m

# Below this probability (renormalised over the expected languages) the winner is a guess; and
# when the expected languages hold less than this share of Whisper's belief, the audio is
# probably in another language.
LOW_CONFIDENCE = 0.5
FALLBACK = "en"  # no speech and no default_language: the transcript is empty in any language


class Verdict(msgspec.Struct):
    language: str  # Whisper code to transcribe in
    metadata: LanguageIdentification
    reject: bool
    log: str


def decide(found: m.Identified, lid: LanguageIdentificationConfig) -> Verdict:
    default = languages.to_whisper(lid.default_language) if lid.default_language else None
    results = [LanguageIdentificationResult(
        alternatives=[LanguageAlternative(language=languages.from_whisper(s.language),
                                          confidence=round(s.probability, 2)) for s in found.scores],
        start_time=round(found.start, 2), end_time=round(found.end, 2))] if found.scores else []
    if not found.scores:
        language = default or FALLBACK
        return Verdict(language=language, reject=False, log=f"no speech found; transcribing as {language}",
                       metadata=LanguageIdentification(results=[], error="NO_SPEECH",
                                                       message="no speech was found to identify a language in"))
    best = found.scores[0]
    if found.expected_share < LOW_CONFIDENCE and found.heard is not None:
        error = "UNEXPECTED_LANGUAGE"
        message = (f"the audio sounds like {languages.from_whisper(found.heard.language)} "
                   f"({found.heard.probability:.2f}), which is not among the expected languages")
    elif best.probability < LOW_CONFIDENCE:
        error = "LOW_CONFIDENCE"
        message = (f"the most likely language, {languages.from_whisper(best.language)}, has confidence "
                   f"{best.probability:.2f}, under {LOW_CONFIDENCE}")
    else:
        error = message = None
    chosen = f"detected language {languages.from_whisper(best.language)}"
    if error is None or lid.low_confidence_action == "allow":
        return Verdict(language=best.language, reject=False, log=chosen if error is None else f"{message}; {chosen}",
                       metadata=LanguageIdentification(results=results, error=error, message=message))
    if lid.low_confidence_action == "reject":
        return Verdict(language=best.language, reject=True, log=f"language identification: {message}",
                       metadata=LanguageIdentification(results=results, error=error, message=message))
    assert default is not None  # checked when the job was submitted
    return Verdict(language=default, reject=False, log=f"{message}; using the default language {default}",
                   metadata=LanguageIdentification(results=results, error=error,
                                                   message=f"{message}; the default language was used"))
