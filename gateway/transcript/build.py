"""From engine replies to a job's transcript files: merge, speakers, rewrites, json-v2, txt,
srt (and the speaker turns as RTTM).

Takes typed inputs (the job's facts, its parsed config, what the engines heard), never the
job itself, and returns the files; the job layer stores them. Runs in a worker thread (for
long audio it is tens of thousands of results).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from datetime import datetime, timezone

import msgspec

from gateway.settings import VERSION
from gateway.transcript import languages, render, speaker_id, speakers
from gateway.transcript.config import ParsedConfig, TranscriptionConfig
from gateway.transcript.merge import merge
from gateway.transcript.model import (
    FORMAT_VERSION,
    FeatureError,
    JobInfo,
    LanguageIdentification,
    Metadata,
    Result,
    SpeakerInfo,
    Transcript,
    TranslatedSentence,
    encode,
    words_to_results,
)
from gateway.transcript.rewrites import rewrite_results
from gateway.transcript.unsupported import feature_errors
from shared import messages as m

ORCHESTRATOR_VERSION = f"chorus-{VERSION}"
Log = Callable[..., None]  # the job log: (message, level="INFO")


class JobFacts(msgspec.Struct, frozen=True):
    """What the transcript says of its job."""

    id: str
    created_at: str  # as the API shows it
    data_name: str
    duration: int
    user_id: str | None  # speaker identifiers are bound to it


class Heard(msgspec.Struct):
    """Everything the engines returned for a job."""

    plans: list[m.SegmentPlan]  # per ASR task: whole channel, or a segment of the mix
    replies: list[m.Transcribed]
    language: str  # Whisper code, detected or requested
    channels: int  # > 1 for channel diarization: one task per channel
    diarized: m.Diarized | None = None
    identification: LanguageIdentification | None = None  # language "auto"
    translated: list[m.Transcribed] | None = None  # Whisper's English, one per ASR task
    translation_errors: list[FeatureError] = msgspec.field(default_factory=list)


def channel_labels(tc: TranscriptionConfig, count: int) -> list[str]:
    given = tc.channel_diarization_labels or []
    return [given[i] if i < len(given) else f"Channel {i + 1}" for i in range(count)]


class SpeakerLabels(msgspec.Struct):
    words: list[str]  # one per word: S1, S2, … an enrolled name, or UU
    names: dict[int, str]  # diarized speaker index -> label
    speakers: list[SpeakerInfo] | None  # top-level `speakers` (get_speakers)


def label_speakers(tc: TranscriptionConfig, user_id: str | None, diarized: m.Diarized, words: list[m.Word],
                   keys: speaker_id.SpeakerKeys, job_log: Log) -> SpeakerLabels:
    """S1, S2, … by first appearance; enrolled voices get their names instead."""
    sdc = tc.speaker_config
    who = speakers.assign(words, diarized.turns, sdc.prefer_current_speaker)
    # Speakers heard in words first, then those only found in turns.
    order = list(dict.fromkeys([*(i for i in who if i is not None), *(t.speaker for t in diarized.turns)]))
    identified: dict[int, str] = {}
    if sdc.speakers:
        enrolled: dict[str, list] = {}
        for entry in sdc.speakers:
            for identifier in entry.speaker_identifiers:
                try:
                    enrolled.setdefault(entry.label, []).append(
                        keys.decrypt(identifier, diarized.model_id, user_id))
                except speaker_id.IdentifierRejected as exc:
                    job_log(f"speaker identifier for {entry.label!r} ignored: {exc}", "WARNING")
        for index, (label, score) in speaker_id.match(diarized.centroids, enrolled).items():
            job_log(f"speaker identified: diarized speaker {index} is {label!r} (cosine similarity {score:.2f})")
            identified[index] = label
    numbered = speakers.labels_by_first_appearance([i for i in order if i not in identified])
    names = {i: identified.get(i) or numbered[i] for i in order}
    known = None
    if sdc.get_speakers:
        known = [SpeakerInfo(label=names[i], speaker_identifiers=[
                     keys.encrypt(diarized.centroids[i], diarized.model_id, user_id)])
                 for i in order if i in who and i < len(diarized.centroids)
                 and all(math.isfinite(x) for x in diarized.centroids[i])]
    return SpeakerLabels(words=[names[i] if i is not None else speakers.UNKNOWN for i in who],
                         names=names, speakers=known)


def rttm(job_id: str, diarized: m.Diarized, names: dict[int, str]) -> str:
    return "".join(f"SPEAKER {job_id} 1 {t.start:.3f} {t.end - t.start:.3f} <NA> <NA> "
                   f"{names.get(t.speaker, f'speaker{t.speaker}').replace(' ', '_')} <NA> <NA>\n"
                   for t in diarized.turns)


def sentences(results: list[Result], delimiter: str) -> list[TranslatedSentence]:
    """Results cut into sentences (at sentence ends and speaker changes) for `translations`."""
    out: list[TranslatedSentence] = []
    run: list[Result] = []

    def close() -> None:
        words = [r for r in run if r.type == "word"]
        if words:
            speaker = words[0].alternatives[0].speaker
            out.append(TranslatedSentence(
                start_time=words[0].start_time, end_time=run[-1].end_time,
                content=render.join_tokens(run, delimiter),
                speaker=speaker if speaker != speakers.UNKNOWN else None, channel=words[0].channel))
        run.clear()

    for r in results:
        if r.type == "word" and run and r.alternatives[0].speaker != run[-1].alternatives[0].speaker:
            close()
        run.append(r)
        if r.is_eos:
            close()
    close()
    return out


def _translations(parsed: ParsedConfig, heard: Heard, streams: list[list[Result]],
                  labels: SpeakerLabels | None) -> dict[str, list[TranslatedSentence]] | None:
    config = parsed.config.translation_config
    if config is None or not config.into_english:
        return None
    if heard.language == "en":  # the transcript is already English
        found = [s for stream in streams for s in sentences(stream, " ")]
    elif heard.translated is not None:
        names = channel_labels(parsed.transcription, heard.channels) if heard.channels > 1 else [None]
        found = []
        for c, words in enumerate([r.words for r in heard.translated] if heard.channels > 1
                                  else [merge(heard.plans, heard.translated)]):
            who = None
            if labels is not None and heard.diarized is not None:
                who = [labels.names.get(i, speakers.UNKNOWN) if i is not None else speakers.UNKNOWN
                       for i in speakers.assign(words, heard.diarized.turns)]
            found += sentences(words_to_results(words, "en", who, names[c]), " ")
    else:
        return None
    return {"en": sorted(found, key=lambda s: s.start_time)}


def build_transcript(facts: JobFacts, parsed: ParsedConfig, heard: Heard, words: list[m.Word],
                     labels: SpeakerLabels | None) -> Transcript:
    tc = parsed.transcription
    language = languages.from_whisper(heard.language) if tc.language == "auto" else tc.language
    if heard.channels > 1:
        names = channel_labels(tc, heard.channels)
        streams = [words_to_results(reply.words, language, channel=names[c])
                   for c, reply in enumerate(heard.replies)]
    else:
        streams = [words_to_results(words, language, labels and labels.words)]
    streams = [rewrite_results(stream, tc, heard.language) for stream in streams]
    results: list[Result] = list(heapq.merge(*streams, key=lambda r: r.start_time))
    errors = feature_errors(parsed.config, tc, heard.language)
    output_config = parsed.echo.get("output_config")
    return Transcript(
        format=FORMAT_VERSION,
        job=JobInfo(id=facts.id, created_at=facts.created_at, data_name=facts.data_name,
                    duration=facts.duration, tracking=parsed.config.tracking),
        metadata=Metadata(
            created_at=datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z"),
            type="transcription",
            transcription_config=parsed.echo["transcription_config"],
            language_pack_info=languages.pack_info(language),
            orchestrator_version=ORCHESTRATOR_VERSION,
            output_config=output_config if isinstance(output_config, dict) else None,
            language_identification=heard.identification,
            translation_errors=(heard.translation_errors + errors.translation) or None,
            summarization_errors=errors.summarization or None,
            sentiment_analysis_errors=errors.sentiment_analysis or None,
            topic_detection_errors=errors.topic_detection or None,
            auto_chapters_errors=errors.auto_chapters or None,
            audio_events_errors=errors.audio_events or None,
            transcription_errors=errors.transcription or None,
        ),
        results=results,
        speakers=labels.speakers if labels else None,
        translations=_translations(parsed, heard, streams, labels),
    )


class Rendered(msgspec.Struct):
    files: dict[str, bytes | str]  # by format: json, txt, srt (and rttm with speakers)
    words: int


def render_outputs(facts: JobFacts, parsed: ParsedConfig, heard: Heard, keys: speaker_id.SpeakerKeys,
                   job_log: Log) -> Rendered:
    """Build json-v2, render txt and srt from it (and the speaker turns as RTTM)."""
    labels = None
    words = merge(heard.plans, heard.replies) if heard.channels == 1 else []
    if heard.diarized is not None and heard.channels == 1:
        labels = label_speakers(parsed.transcription, facts.user_id, heard.diarized, words, keys, job_log)
    transcript = build_transcript(facts, parsed, heard, words, labels)
    output = parsed.config.output_config
    srt = output.srt_overrides if output and output.srt_overrides else None
    files: dict[str, bytes | str] = {
        "json": encode(transcript),
        "txt": render.to_txt(transcript),
        "srt": render.to_srt(transcript, *((srt.max_line_length, srt.max_lines) if srt else ())),
    }
    if labels is not None and heard.diarized is not None:
        files["rttm"] = rttm(facts.id, heard.diarized, labels.names)
    return Rendered(files=files, words=sum(1 for r in transcript.results if r.type == "word"))
