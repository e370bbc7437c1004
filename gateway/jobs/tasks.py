"""A job's engine tasks, from what it asked for and what decoding and planning found.

Pure: no engine, no I/O (tests/unit/test_tasks.py). The tasks come in named groups: ASR (one
per segment of the mix, or per channel), translation (Whisper's English of each ASR task,
when asked), and speaker diarization (the whole file at once, so labels agree across
segments).
"""

from __future__ import annotations

import msgspec

from gateway.transcript.config import TranscriptionConfig, TranslationConfig
from gateway.transcript.model import FeatureError
from shared import messages as m


class Task(msgspec.Struct, frozen=True):
    name: str  # how the log and errors call it: "segment 1 (0.00-91.48 s)", "channel 2 (Agent)", …
    request: m.Transcribe | m.Diarize
    seconds: float  # of audio it covers: what its progress is measured against
    plan: m.SegmentPlan | None = None  # an ASR or translation task's segment (and the words it keeps)


class DecodeOptions(msgspec.Struct, frozen=True):
    """What a job's options change in every Transcribe request it sends."""

    hotwords: str | None
    volume_threshold: float | None

    @classmethod
    def of(cls, tc: TranscriptionConfig) -> DecodeOptions:
        # The content and its sounds_like spellings: Whisper is steered towards any of them,
        # and a sounds_like spelling it writes is mapped back to the content afterwards.
        vocabulary = ", ".join(dict.fromkeys(s for v in tc.vocabulary for s in (v.content, *(v.sounds_like or ()))))
        filtering = tc.audio_filtering_config
        return cls(hotwords=vocabulary or None,
                   volume_threshold=filtering.volume_threshold if filtering is not None else None)


class Source(msgspec.Struct, frozen=True):
    """The decoded audio the tasks read, and how it was cut."""

    audio_path: str
    duration: float
    plans: list[m.SegmentPlan]  # one per ASR task: a segment of the mix, or a whole channel
    channel_labels: list[str] | None = None  # channel diarization: one task per channel


class TaskGroups(msgspec.Struct):
    asr: list[Task]
    translation: list[Task]
    diarization: Task | None
    translation_errors: list[FeatureError]

    def queue(self) -> list[Task]:
        """The order the job's engines take them: diarization first, as the longest single
        task; then the ASR tasks in timeline order; then their translations."""
        return ([self.diarization] if self.diarization else []) + self.asr + self.translation

    def collect(self, replies: list[m.Reply]) -> Collected:
        """The replies to `queue()`, by group."""
        offset = 1 if self.diarization else 0
        asr = replies[offset: offset + len(self.asr)]
        translated = replies[offset + len(self.asr):]
        return Collected(asr=[r for r in asr if isinstance(r, m.Transcribed)],
                         translated=[r for r in translated if isinstance(r, m.Transcribed)] or None,
                         diarized=replies[0] if self.diarization and isinstance(replies[0], m.Diarized) else None)


class Collected(msgspec.Struct):
    asr: list[m.Transcribed]
    translated: list[m.Transcribed] | None
    diarized: m.Diarized | None


def _seconds(samples: int) -> float:
    return samples / m.SAMPLE_RATE


def build_tasks(job_id: str, source: Source, tc: TranscriptionConfig, translation: TranslationConfig | None,
                model: str, language: str, translator: str | None) -> TaskGroups:
    """The job's tasks. `language` is the Whisper code it is transcribed in; `translator` the
    multilingual model that can translate, if any."""
    options = DecodeOptions.of(tc)

    def transcribe(index: int, path: str, plan: m.SegmentPlan) -> m.Transcribe:
        return m.Transcribe(job_id=job_id, segment=index, audio_path=path, start_sample=plan.start,
                            end_sample=plan.end, model=model, language=language,
                            hotwords=options.hotwords, volume_threshold=options.volume_threshold)

    if source.channel_labels is not None:
        asr = [Task(f"channel {c + 1} ({label})", transcribe(c, m.channel_path(source.audio_path, c), plan),
                    _seconds(plan.end - plan.start), plan)
               for c, (label, plan) in enumerate(zip(source.channel_labels, source.plans))]
    else:
        asr = [Task(f"segment {i} ({_seconds(p.start):.2f}-{_seconds(p.end):.2f} s)",
                    transcribe(i, source.audio_path, p), _seconds(p.end - p.start), p)
               for i, p in enumerate(source.plans)]
    translated: list[Task] = []
    errors: list[FeatureError] = []
    if translation is not None and translation.into_english and language != "en":
        if translator is None:
            errors.append(FeatureError(type="translation_failed",
                                       message="no multilingual model is configured to translate with"))
        else:
            translated = [Task(f"{t.name}, translated", msgspec.structs.replace(
                t.request, model=translator, task="translate", hotwords=None), t.seconds, t.plan) for t in asr]
    diarization = None
    if tc.diarization == "speaker":
        diarization = Task("speaker diarization", m.Diarize(
            job_id=job_id, audio_path=source.audio_path, sensitivity=tc.speaker_config.sensitivity,
            operating_point=model, max_speakers=tc.speaker_config.max_speakers),
            source.duration)
    return TaskGroups(asr=asr, translation=translated, diarization=diarization, translation_errors=errors)
