"""TXT and SRT rendered from a json-v2 transcript (api-reference §9)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from gateway.transcript.model import Result, Transcript
from gateway.transcript.speakers import UNKNOWN

# A pause this long between words starts a new subtitle cue.
CUE_GAP_S = 1.5


# The transcript formats every finished job has, and the names the API accepts for each
# (`GET /v2/jobs/{id}/transcript?format=`; none means json-v2).
FORMATS = ("json", "txt", "srt")
FORMAT_NAMES: dict[str, str] = {"json-v2": "json", "json": "json", "json_v2": "json", "txt": "txt", "srt": "srt"}
MEDIA_TYPES = {"json": "application/json", "txt": "text/plain; charset=utf-8", "srt": "text/plain; charset=utf-8"}

def _label(result: Result) -> str | None:
    speaker = result.alternatives[0].speaker
    label = speaker if speaker and speaker != UNKNOWN else None
    if result.channel:
        return result.channel if label is None else f"{result.channel} {label}"
    return label


def join_tokens(results: Iterable[Result], delimiter: str) -> str:
    """Words joined by the language's delimiter; punctuation glued per `attaches_to`."""
    out: list[str] = []
    glue_next = True  # no delimiter before the first token
    for r in results:
        text = r.alternatives[0].content
        attaches = r.attaches_to if r.type == "punctuation" else None
        if not (glue_next or attaches in ("previous", "both")):
            out.append(delimiter)
        out.append(text)
        glue_next = attaches in ("next", "both")
    return "".join(out)


def _runs(results: list[Result]) -> Iterator[tuple[str | None, list[Result]]]:
    """Consecutive results grouped by speaker/channel label."""
    label: str | None = None
    run: list[Result] = []
    for r in results:
        this = _label(r)
        if r.type == "punctuation" and run:
            this = label  # a mark belongs to the run it ends
        if run and this != label:
            yield label, run
            run = []
        label = this
        run.append(r)
    if run:
        yield label, run


def to_txt(transcript: Transcript) -> str:
    delimiter = transcript.metadata.language_pack_info.word_delimiter
    blocks = []
    for label, run in _runs(transcript.results):
        text = join_tokens(run, delimiter)
        blocks.append(f"SPEAKER: {label}\n{text}" if label else text)
    return ("\n\n".join(blocks) + "\n") if blocks else ""


def _wrap(words: list[str], delimiter: str, width: int) -> list[str]:
    lines: list[str] = []
    for word in words:
        if lines and len(lines[-1]) + len(delimiter) + len(word) <= width:
            lines[-1] += delimiter + word
        else:
            lines.append(word)
    return lines


def _timestamp(seconds: float) -> str:
    ms = int(round(max(seconds, 0.0) * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


def _pieces(results: list[Result], delimiter: str) -> list[tuple[str, Result, Result]]:
    """Words with their attached punctuation, as (text, first result, last result)."""
    pieces: list[list[Result]] = []
    glue_next = False
    for r in results:
        attaches = r.attaches_to if r.type == "punctuation" else None
        if pieces and (glue_next or attaches in ("previous", "both")):
            pieces[-1].append(r)
        else:
            pieces.append([r])
        glue_next = attaches in ("next", "both")
    return [(join_tokens(p, delimiter), p[0], p[-1]) for p in pieces]


def to_srt(transcript: Transcript, max_line_length: int = 37, max_lines: int = 2) -> str:
    delimiter = transcript.metadata.language_pack_info.word_delimiter
    cues: list[tuple[float, float, list[str]]] = []
    for _, run in _runs(transcript.results):  # a speaker change starts a new cue
        current: list[str] = []
        start = end = 0.0
        for text, first, last in _pieces(run, delimiter):
            fits = len(_wrap(current + [text], delimiter, max_line_length)) <= max_lines
            if current and (not fits or first.start_time - end > CUE_GAP_S):
                cues.append((start, end, current))
                current = []
            if not current:
                start = first.start_time
            current.append(text)
            end = max(end, last.end_time)
            if last.is_eos:
                cues.append((start, end, current))
                current = []
        if current:
            cues.append((start, end, current))
    blocks = []
    for n, (start, end, words) in enumerate(cues, 1):
        lines = "\n".join(_wrap(words, delimiter, max_line_length))
        blocks.append(f"{n}\n{_timestamp(start)} --> {_timestamp(end)}\n{lines}\n")
    return "\n".join(blocks)
