"""gateway.jobs.tasks.build_tasks: a job's engine tasks in named groups, and their replies back."""

from __future__ import annotations

import msgspec

from gateway.jobs.tasks import Source, build_tasks
from gateway.transcript.config import parse_config
from shared import messages as m

R = m.SAMPLE_RATE


def config(top: dict | None = None, **transcription):
    return parse_config(msgspec.json.encode({"type": "transcription", "transcription_config": {
        "language": "en", **transcription}, **(top or {})}).decode())


def segment(start: float, end: float, before: str, after: str) -> m.SegmentPlan:
    return m.SegmentPlan(int(start * R), int(end * R), int(start * R), int(end * R), before, after)


PLANS = [segment(0, 40, "start", "silence"), segment(40, 90, "silence", "end")]


def test_segments_of_the_mix_then_diarization_first_in_the_queue():
    parsed = config(diarization="speaker", additional_vocab=[{"content": "Chorus", "sounds_like": ["core us"]}])
    groups = build_tasks("j", Source("/a.f32", 90.0, PLANS), parsed.transcription, None, "standard", "en", None)
    assert [t.name for t in groups.asr] == ["segment 0 (0.00-40.00 s)", "segment 1 (40.00-90.00 s)"]
    assert [(t.request.start_sample, t.request.end_sample) for t in groups.asr] == [(0, 40 * R), (40 * R, 90 * R)]
    assert {t.request.hotwords for t in groups.asr} == {"Chorus, core us"}
    assert [t.seconds for t in groups.asr] == [40.0, 50.0]
    assert groups.diarization.name == "speaker diarization" and groups.diarization.seconds == 90.0
    assert groups.translation == [] and groups.translation_errors == []
    queue = groups.queue()
    assert [t.name for t in queue] == ["speaker diarization", *(t.name for t in groups.asr)]
    words = [m.Word(1.0, 1.5, " hi", 0.9)]
    replies = [m.Diarized(job_id="j", turns=[], centroids=[], model_id="x", audio_seconds=90, seconds=1),
               m.Transcribed(job_id="j", words=words, audio_seconds=40, seconds=1),
               m.Transcribed(job_id="j", words=[], audio_seconds=50, seconds=1)]
    collected = groups.collect(replies)
    assert collected.diarized is replies[0] and collected.asr == replies[1:] and collected.translated is None


def test_channels_and_their_translations():
    parsed = config(top={"translation_config": {"target_languages": ["en", "de"]}}, diarization="channel",
                    channel_diarization_labels=["Agent", "Caller"], language="fr")
    whole = segment(0, 30, "start", "end")
    groups = build_tasks("j", Source("/a.f32", 30.0, [whole, whole], ["Agent", "Caller"]), parsed.transcription,
                         parsed.config.translation_config, "enhanced", "fr", translator="enhanced")
    assert [t.name for t in groups.asr] == ["channel 1 (Agent)", "channel 2 (Caller)"]
    assert [t.request.audio_path for t in groups.asr] == ["/a.f32.ch0", "/a.f32.ch1"]
    assert [(t.name, t.request.task, t.request.hotwords) for t in groups.translation] == [
        ("channel 1 (Agent), translated", "translate", None), ("channel 2 (Caller), translated", "translate", None)]
    assert groups.diarization is None and [t.name for t in groups.queue()][-1] == "channel 2 (Caller), translated"


def test_translation_without_a_multilingual_model_is_a_feature_error():
    parsed = config(top={"translation_config": {"target_languages": ["en"]}}, language="fr")
    groups = build_tasks("j", Source("/a.f32", 90.0, PLANS), parsed.transcription, parsed.config.translation_config,
                         "standard", "fr", translator=None)
    assert groups.translation == []
    assert [e.type for e in groups.translation_errors] == ["translation_failed"]
    english = build_tasks("j", Source("/a.f32", 90.0, PLANS), parsed.transcription,
                          parsed.config.translation_config, "standard", "en", translator="enhanced")
    assert english.translation == [] and english.translation_errors == []  # already English
