"""The json-v2 transcript model (api-reference §7) and how engine words become results."""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.transcript.languages import LanguagePackInfo
from gateway.transcript.speakers import UNKNOWN
from shared.messages import Word

FORMAT_VERSION = "2.9"

# Marks split off words into `punctuation` results.
PUNCTUATION = set('.,?!;:"()[]{}…¿¡。？！，、；：「」『』《》“”«»—–-।')
SENTENCE_END = {".", "?", "!", "…", "。", "？", "！", "।", "..."}
_OPENING = set('"([{¿¡「『《“«')


class Alternative(msgspec.Struct, omit_defaults=True):
    content: str
    confidence: float
    language: str
    speaker: str
    tags: list[str] | None = None


class Result(msgspec.Struct, omit_defaults=True):
    type: str  # "word" | "punctuation"
    start_time: float
    end_time: float
    alternatives: list[Alternative]
    attaches_to: str | None = None
    is_eos: bool | None = None
    channel: str | None = None
    volume: float | None = None


class JobInfo(msgspec.Struct, omit_defaults=True):
    id: str
    created_at: str
    data_name: str
    duration: int
    tracking: dict[str, Any] | None = None


class LanguageAlternative(msgspec.Struct):
    language: str
    confidence: float


class LanguageIdentificationResult(msgspec.Struct):
    alternatives: list[LanguageAlternative]
    start_time: float
    end_time: float


class LanguageIdentification(msgspec.Struct, omit_defaults=True):
    results: list[LanguageIdentificationResult]
    error: str | None = None  # LOW_CONFIDENCE | UNEXPECTED_LANGUAGE | NO_SPEECH | ...
    message: str | None = None


class FeatureError(msgspec.Struct):
    type: str  # "unsupported_feature", "unsupported_target_language", ...
    message: str


class Metadata(msgspec.Struct, omit_defaults=True):
    created_at: str
    type: str
    transcription_config: dict[str, Any]
    language_pack_info: LanguagePackInfo
    orchestrator_version: str
    output_config: dict[str, Any] | None = None
    language_identification: LanguageIdentification | None = None
    translation_errors: list[FeatureError] | None = None
    summarization_errors: list[FeatureError] | None = None
    sentiment_analysis_errors: list[FeatureError] | None = None
    topic_detection_errors: list[FeatureError] | None = None
    auto_chapters_errors: list[FeatureError] | None = None
    audio_events_errors: list[FeatureError] | None = None
    # transcription_config options this worker accepts but does not implement
    transcription_errors: list[FeatureError] | None = None


class TranslatedSentence(msgspec.Struct, omit_defaults=True):
    start_time: float
    end_time: float
    content: str
    speaker: str | None = None
    channel: str | None = None


class SpeakerInfo(msgspec.Struct):
    label: str
    speaker_identifiers: list[str]


class Transcript(msgspec.Struct, omit_defaults=True):
    format: str
    job: JobInfo
    metadata: Metadata
    results: list[Result]
    speakers: list[SpeakerInfo] | None = None
    translations: dict[str, list[TranslatedSentence]] | None = None


def _split_marks(text: str) -> tuple[list[str], str, list[str]]:
    """Split leading and trailing punctuation marks off a word: (leading, core, trailing)."""
    start, end = 0, len(text)
    while start < end and text[start] in PUNCTUATION:
        start += 1
    while end > start and text[end - 1] in PUNCTUATION:
        end -= 1
    return _marks(text[:start]), text[start:end], _marks(text[end:])


def _marks(run: str) -> list[str]:
    """One result per mark, except that an ellipsis written as dots stays whole."""
    out: list[str] = []
    for ch in run:
        if ch == "." and out and set(out[-1]) == {"."}:
            out[-1] += ch
        else:
            out.append(ch)
    return out


def _join_hyphenated(words: list[Word], speakers: list[str] | None) -> tuple[list[Word], list[str] | None]:
    """Whisper's word timing splits "non-administrator" into " non" and "-administrator"
    (a hyphen token opens a word): join such pieces back into one word."""
    if not any(w.text.startswith("-") for w in words):
        return words, speakers
    out: list[Word] = []
    who: list[str] = []
    for n, w in enumerate(words):
        if out and w.text.startswith("-") and len(w.text) > 1 and out[-1].text[-1:].isalnum():
            prev = out[-1]
            out[-1] = Word(start=prev.start, end=max(prev.end, w.end), text=prev.text + w.text,
                           probability=min(prev.probability, w.probability), volume=prev.volume)
            continue
        out.append(w)
        who.append(speakers[n] if speakers else UNKNOWN)
    return out, (who if speakers else None)


def words_to_results(
    words: list[Word], language: str, speakers: list[str] | None = None, channel: str | None = None
) -> list[Result]:
    """Engine words (punctuation attached, as Whisper writes them) -> json-v2 results.

    Each word carries its speaker (`UU` when none) and channel; punctuation takes its word's.
    """
    results: list[Result] = []
    speaker = UNKNOWN
    words, speakers = _join_hyphenated(words, speakers)

    def _punct(mark: str, at: float, attaches_to: str) -> Result:
        return Result(
            type="punctuation",
            start_time=at,
            end_time=at,
            attaches_to=attaches_to,
            is_eos=mark in SENTENCE_END,
            alternatives=[Alternative(content=mark, confidence=1.0, language=language, speaker=speaker)],
            channel=channel,
        )

    for n, word in enumerate(words):
        speaker = speakers[n] if speakers else UNKNOWN
        start, end = round(word.start, 2), round(max(word.end, word.start), 2)
        leading, core, trailing = _split_marks(word.text.strip())
        if not core:  # a token that is punctuation only
            for mark in leading + trailing:
                side = "next" if mark in _OPENING or not results else "previous"
                results.append(_punct(mark, start if side == "next" else end, side))
            continue
        for mark in leading:
            results.append(_punct(mark, start, "next"))
        results.append(
            Result(
                type="word",
                start_time=start,
                end_time=end,
                volume=word.volume,
                alternatives=[
                    Alternative(
                        content=core,
                        confidence=round(word.probability, 2),
                        language=language,
                        speaker=speaker,
                    )
                ],
                channel=channel,
            )
        )
        for mark in trailing:
            results.append(_punct(mark, end, "previous"))
    return results


_encoder = msgspec.json.Encoder()


def encode(transcript: Transcript) -> bytes:
    return _encoder.encode(transcript)

