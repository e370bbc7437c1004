"""The json-v2 builder and the txt/srt renderers, on words as the engine reports them."""

from __future__ import annotations

from gateway.transcript import languages
from gateway.transcript.model import JobInfo, Metadata, Transcript, words_to_results
from gateway.transcript.render import to_srt, to_txt
from shared.messages import Word


def _transcript(words: list[Word], language: str = "en") -> Transcript:
    return Transcript(
        format="2.9",
        job=JobInfo(id="j", created_at="2026-01-01T00:00:00.000Z", data_name="a.wav", duration=10),
        metadata=Metadata(created_at="2026-01-01T00:00:00.000000Z", type="transcription",
                          transcription_config={"language": language},
                          language_pack_info=languages.pack_info(language), orchestrator_version="t"),
        results=words_to_results(words, language),
    )


def test_punctuation_is_split_off_words():
    results = words_to_results(
        [Word(0.0, 0.5, ' "Hello,', 0.9), Word(0.6, 1.0, " world...", 0.8), Word(1.2, 1.5, " Why?\"", 0.7),
         Word(1.6, 1.9, " don't", 0.9), Word(2.0, 2.4, " well-known.", 0.9)],
        "en",
    )
    shape = [(r.type, r.alternatives[0].content, r.attaches_to, r.is_eos, r.start_time) for r in results]
    assert shape == [
        ("punctuation", '"', "next", False, 0.0),
        ("word", "Hello", None, None, 0.0),
        ("punctuation", ",", "previous", False, 0.5),
        ("word", "world", None, None, 0.6),
        ("punctuation", "...", "previous", True, 1.0),
        ("word", "Why", None, None, 1.2),
        ("punctuation", "?", "previous", True, 1.5),
        ("punctuation", '"', "previous", False, 1.5),
        ("word", "don't", None, None, 1.6),
        ("word", "well-known", None, None, 2.0),
        ("punctuation", ".", "previous", True, 2.4),
    ]


def test_txt_joins_with_the_languages_delimiter():
    en = _transcript([Word(0, 1, ' "Hello,', 1), Word(1, 2, " world.", 1)])
    assert to_txt(en) == '"Hello, world.\n'
    ja = _transcript([Word(0, 1, "こんにちは", 1), Word(1, 2, "世界。", 1)], "ja")
    assert ja.metadata.language_pack_info.word_delimiter == ""
    assert to_txt(ja) == "こんにちは世界。\n"


def test_srt_wraps_and_breaks_at_sentences_and_pauses():
    words = [Word(i * 0.5, i * 0.5 + 0.4, w, 1) for i, w in enumerate(
        " The quick brown fox jumps over the lazy dog near the riverbank today.".split(" ")[1:])]
    words.append(Word(20.0, 20.5, " Later.", 1))
    srt = to_srt(_transcript(words), max_line_length=20, max_lines=2)
    cues = [c.splitlines() for c in srt.strip().split("\n\n")]
    assert [c[0] for c in cues] == [str(i) for i in range(1, len(cues) + 1)]
    for cue in cues:
        assert 2 <= len(cue) - 1 <= 3 and all(len(line) <= 20 for line in cue[2:])
    assert cues[-1][1] == "00:00:20,000 --> 00:00:20,500" and cues[-1][2] == "Later."
    assert cues[-2][-1].endswith("today.")
