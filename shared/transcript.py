"""The json-v2 transcript model (api-reference §7) and how engine words become results."""

from __future__ import annotations

from typing import Any

import msgspec

from shared.languages import LanguagePackInfo
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


class JobInfo(msgspec.Struct, omit_defaults=True):
    id: str
    created_at: str
    data_name: str
    duration: int
    tracking: dict[str, Any] | None = None


class Metadata(msgspec.Struct, omit_defaults=True):
    created_at: str
    type: str
    transcription_config: dict[str, Any]
    language_pack_info: LanguagePackInfo
    orchestrator_version: str
    output_config: dict[str, Any] | None = None


class SpeakerInfo(msgspec.Struct):
    label: str
    speaker_identifiers: list[str]


class Transcript(msgspec.Struct, omit_defaults=True):
    format: str
    job: JobInfo
    metadata: Metadata
    results: list[Result]
    speakers: list[SpeakerInfo] | None = None


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


def words_to_results(
    words: list[Word], language: str, speakers: list[str] | None = None, channel: str | None = None
) -> list[Result]:
    """Engine words (punctuation attached, as Whisper writes them) -> json-v2 results.

    Each word carries its speaker (`UU` when none) and channel; punctuation takes its word's.
    """
    results: list[Result] = []
    speaker = "UU"

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
        speaker = speakers[n] if speakers else "UU"
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

