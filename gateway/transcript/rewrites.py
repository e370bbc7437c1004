"""Rewrites of recognised results that a job's transcription_config asks for (api-reference §6.2):
custom vocabulary spellings, output locale, punctuation overrides, disfluencies, replacements.

Each works on one stream of json-v2 results (one channel), in this order; a word that a
replacement has changed is not changed again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec

from gateway.transcript.model import Result

if TYPE_CHECKING:  # config.py checks replacements with this module when a job is submitted
    from gateway.transcript.config import TranscriptionConfig

# The English hesitation sounds Speechmatics tags as disfluencies.
DISFLUENCIES = frozenset({"um", "umm", "uh", "uhh", "uhm", "hmm", "hm", "mm", "mmm", "erm", "er", "ah", "eh"})
DISFLUENCY = "disfluency"


# ---- word sequences ----------------------------------------------------------------------


def _key(text: str) -> tuple[str, ...]:
    return tuple(text.casefold().split())


def _with_content(result: Result, content: str, start: float, end: float, confidence: float | None = None) -> Result:
    alt = result.alternatives[0]
    confidence = alt.confidence if confidence is None else confidence
    return msgspec.structs.replace(result, start_time=round(start, 2), end_time=round(end, 2), alternatives=[
        msgspec.structs.replace(alt, content=content, confidence=confidence), *result.alternatives[1:]])


def _spread(first: Result, last: Result, text: str) -> list[Result]:
    """`text` as word results over the time of first..last, split evenly between its words."""
    words = text.split()
    start, end = first.start_time, last.end_time
    step = (end - start) / max(len(words), 1)
    confidence = min(first.alternatives[0].confidence, last.alternatives[0].confidence)
    return [_with_content(first, w, start + i * step, start + (i + 1) * step, confidence)
            for i, w in enumerate(words)]


@dataclass
class Stream:
    """One channel's results, and which of them a replacement has already produced."""

    results: list[Result]
    replaced: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.replaced = self.replaced or [False] * len(self.results)

    def _rewrite(self, match: Callable[[int], tuple[int, str] | None], mark: bool) -> None:
        """Where `match(i)` gives (n, text), results i..i+n-1 become `text`'s words (nothing,
        for an empty text)."""
        results, done = self.results, self.replaced
        out: list[Result] = []
        out_done: list[bool] = []
        i = 0
        while i < len(results):
            found = match(i)
            if found is None:
                out.append(results[i])
                out_done.append(done[i])
                i += 1
                continue
            n, text = found
            new = _spread(results[i], results[i + n - 1], text)
            out.extend(new)
            out_done.extend([mark] * len(new))
            i = _drop_after(results, i + n, out) if not new else i + n
        self.results, self.replaced = out, out_done

    def keep(self, mask: list[bool]) -> None:
        self.results = [r for r, k in zip(self.results, mask) if k]
        self.replaced = [d for d, k in zip(self.replaced, mask) if k]

    def _free_word(self, i: int) -> bool:
        return self.results[i].type == "word" and not self.replaced[i]

    def replace_sequences(self, table: dict[tuple[str, ...], str], mark: bool) -> None:
        """Each run of consecutive words whose case-folded text is a key becomes the value's
        words; the longest key wins. With `mark`, the new words count as replaced."""
        if not table:
            return
        longest = max(len(k) for k in table)

        def match(i: int) -> tuple[int, str] | None:
            for n in range(min(longest, len(self.results) - i), 0, -1):
                if all(self._free_word(j) for j in range(i, i + n)):
                    heard = [r.alternatives[0].content for r in self.results[i:i + n]]
                    text = table.get(tuple(w.casefold() for w in heard))
                    if text is not None and text != " ".join(heard):
                        return n, text
            return None

        self._rewrite(match, mark)

    def map_words(self, change: Callable[[str], str | None], mark: bool) -> None:
        """Apply `change` to each word's content (None: leave it; "": remove the word)."""
        def match(i: int) -> tuple[int, str] | None:
            if not self._free_word(i):
                return None
            content = self.results[i].alternatives[0].content
            new = change(content)
            return None if new is None or new == content else (1, new)

        self._rewrite(match, mark)


def _drop_after(results: list[Result], i: int, out: list[Result]) -> int:
    """After a word was removed: drop the comma-like marks that followed it, and capitalise the
    next word if the removed one began a sentence. Returns where to go on from."""
    while i < len(results) and results[i].type == "punctuation" and not results[i].is_eos \
            and results[i].attaches_to == "previous":
        i += 1
    began_sentence = not out or (out[-1].type == "punctuation" and bool(out[-1].is_eos))
    if began_sentence and i < len(results) and results[i].type == "word":
        nxt = results[i]
        content = nxt.alternatives[0].content
        results[i] = _with_content(nxt, content[:1].upper() + content[1:], nxt.start_time, nxt.end_time)
    return i


# ---- custom vocabulary ---------------------------------------------------------------------


def vocabulary_table(entries: Iterable[tuple[str, list[str]]]) -> dict[tuple[str, ...], str]:
    """(content, sounds_like) pairs -> {words heard: content}: every sounds_like spelling, and
    the content itself in any case (so the dictionary also fixes capitalisation)."""
    table: dict[tuple[str, ...], str] = {}
    for content, sounds_like in entries:
        for heard in (*sounds_like, content):
            key = _key(re.sub(r"[^\w\s'-]", " ", heard))
            if key:
                table.setdefault(key, content)
    return table


# ---- output locale -------------------------------------------------------------------------


def _spelling_table(locale: str) -> dict[str, str] | None:
    # breame's lists (from the Oxford and Cambridge dual-spelling tables), lower case.
    from breame.data.spelling_constants import AMERICAN_ENGLISH_SPELLINGS, BRITISH_ENGLISH_SPELLINGS

    return {"en-GB": AMERICAN_ENGLISH_SPELLINGS, "en-AU": AMERICAN_ENGLISH_SPELLINGS,
            "en-US": BRITISH_ENGLISH_SPELLINGS}.get(locale)


LOCALES = ("en-GB", "en-US", "en-AU")


def respell(locale: str) -> Callable[[str], str | None]:
    table = _spelling_table(locale) or {}

    def change(word: str) -> str | None:
        spelled = table.get(word.lower())
        if spelled is None:
            return None
        if word.isupper() and len(word) > 1:
            return spelled.upper()
        return spelled[:1].upper() + spelled[1:] if word[:1].isupper() else spelled

    return change


# ---- punctuation overrides -----------------------------------------------------------------


def punctuation_kept(results: list[Result], permitted: list[str] | None, sensitivity: float) -> list[bool]:
    """Which results survive punctuation_overrides: only permitted marks; below sensitivity 0.5
    a mark only where the speaker pauses after it: (0.5 - s) x 2 s for commas and the like,
    (0.5 - s) x 1 s for sentence ends, so low values leave only the clearest boundaries. 0.5
    and above keep Whisper's."""
    allowed = None if permitted is None or "all" in permitted else set(permitted)
    keep = [True] * len(results)
    next_word = float("inf")  # start of the next word, scanning backwards
    for i in range(len(results) - 1, -1, -1):
        r = results[i]
        if r.type == "word":
            next_word = r.start_time
            continue
        if allowed is not None and not set(r.alternatives[0].content) <= allowed:
            keep[i] = False
        elif sensitivity < 0.5 and next_word - r.end_time < (0.5 - sensitivity) * (1.0 if r.is_eos else 2.0):
            keep[i] = False
    return keep


# ---- disfluencies and replacements ---------------------------------------------------------


def is_disfluency(content: str) -> bool:
    return content.casefold() in DISFLUENCIES


def tag_disfluencies(results: list[Result]) -> list[Result]:
    return [msgspec.structs.replace(r, alternatives=[
                msgspec.structs.replace(r.alternatives[0], tags=[*(r.alternatives[0].tags or ()), DISFLUENCY]),
                *r.alternatives[1:]])
            if r.type == "word" and is_disfluency(r.alternatives[0].content) else r
            for r in results]


_JS_GROUP = re.compile(r"\(\?<(?![=!])")  # (?<name> ; not lookbehind
_JS_BACKREF = re.compile(r"\\k<([^>]+)>")
_JS_TOKEN = re.compile(r"\$(\$|&|\d{1,2}|<[^>]+>)")


@dataclass(frozen=True)
class CompiledReplacement:
    to: str
    plain: tuple[str, ...] | None = None  # case-folded words to match
    pattern: re.Pattern[str] | None = None

    def substitute(self, word: str) -> str | None:
        assert self.pattern is not None
        match = self.pattern.search(word)
        if match is None:
            return None
        return word[: match.start()] + _expand(match, self.to) + word[match.end():]


def _expand(match: re.Match[str], to: str) -> str:
    """ECMAScript replacement tokens: $$, $&, $1, $<name>."""
    def token(t: re.Match[str]) -> str:
        ref = t.group(1)
        if ref == "$":
            return "$"
        if ref == "&":
            return match.group(0)
        try:
            value = match.group(ref[1:-1] if ref.startswith("<") else int(ref))
        except IndexError:  # no such group: left as written, as ECMAScript does
            return t.group(0)
        return value or ""

    return _JS_TOKEN.sub(token, to)


def compile_replacement(source: str, to: str) -> CompiledReplacement:
    """A `replacements` entry: `/regex/flags` (ECMAScript syntax, matched in each word) or
    plain words. Raises ValueError with the reason for a bad regex."""
    regex = re.fullmatch(r"/(.*)/([a-z]*)", source, re.DOTALL)
    if regex is None:
        words = _key(source)
        if not words:
            raise ValueError(f"'from' {source!r} is empty")
        return CompiledReplacement(to=to, plain=words)
    body, flags = regex.groups()
    unknown = set(flags) - set("gimsuy")
    if unknown:
        raise ValueError(f"regular expression {source!r} has unknown flags {''.join(sorted(unknown))!r}")
    py_flags = (re.IGNORECASE if "i" in flags else 0) | (re.MULTILINE if "m" in flags else 0) \
        | (re.DOTALL if "s" in flags else 0)
    body = _JS_BACKREF.sub(r"(?P=\1)", _JS_GROUP.sub("(?P<", body))
    try:
        pattern = re.compile(body, py_flags)
    except re.error as exc:
        raise ValueError(f"regular expression {source!r} is invalid: {exc}") from None
    return CompiledReplacement(to=to, pattern=pattern)


def apply_replacements(stream: Stream, replacements: list[CompiledReplacement]) -> None:
    """Plain replacements first (longest first), then each regex in order; a word changed by
    one is not changed again."""
    stream.replace_sequences({r.plain: r.to for r in replacements if r.plain is not None}, mark=True)
    for r in replacements:
        if r.pattern is not None:
            stream.map_words(r.substitute, mark=True)


# ---- one stream, as the config asks ----------------------------------------------------------


def rewrite_results(results: list[Result], tc: TranscriptionConfig, language: str) -> list[Result]:
    """One stream (channel) of results, rewritten as the config asks, in the order above."""
    stream = Stream(results)
    vocabulary = vocabulary_table((v.content, v.sounds_like or []) for v in tc.vocabulary)
    stream.replace_sequences(vocabulary, mark=False)
    if tc.output_locale in LOCALES and language == "en":
        stream.map_words(respell(tc.output_locale), mark=False)
    overrides = tc.punctuation_overrides
    if overrides is not None:
        stream.keep(punctuation_kept(stream.results, overrides.permitted_marks, overrides.sensitivity))
    filtering = tc.transcript_filtering_config
    if filtering is not None and filtering.remove_disfluencies:
        stream.map_words(lambda w: "" if is_disfluency(w) else None, mark=False)
    else:
        stream.results = tag_disfluencies(stream.results)
    if filtering is not None and filtering.replacements:
        apply_replacements(stream, [compile_replacement(r.from_, r.to)
                                            for r in filtering.replacements])
    return stream.results
