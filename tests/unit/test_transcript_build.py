"""gateway.transcript.build: engine replies to the job's files, from typed inputs only."""

from __future__ import annotations

import msgspec

from gateway.settings import VERSION
from gateway.transcript.build import Heard, JobFacts, render_outputs
from gateway.transcript.config import parse_config
from gateway.transcript.speaker_id import SpeakerKeys
from shared import messages as m

R = m.SAMPLE_RATE
FACTS = JobFacts(id="job1", created_at="2026-12-01T12:00:00.000Z", data_name="call.wav", duration=8, user_id=None)


def parsed(**transcription):
    return parse_config(msgspec.json.encode({"type": "transcription", "transcription_config": {
        "language": "en", **transcription}}).decode())


def word(start: float, end: float, text: str) -> m.Word:
    return m.Word(start, end, text, 0.9)


# Two segments cut inside speech at 4.0 s with 1 s of overlap: both hear "there", the first owns it.
PLANS = [m.SegmentPlan(0, 5 * R, 0, 4 * R, "start", "overlap"), m.SegmentPlan(3 * R, 8 * R, 4 * R, 8 * R, "overlap", "end")]
REPLIES = [m.Transcribed(job_id="job1", words=[word(0.5, 1.0, " Hello"), word(3.5, 3.9, " there.")],
                         audio_seconds=5, seconds=1),
           m.Transcribed(job_id="job1", words=[word(3.5, 3.9, " there."), word(5.0, 5.5, " Good"),
                                               word(5.6, 6.0, " morning.")], audio_seconds=5, seconds=1)]
TURNS = m.Diarized(job_id="job1", turns=[m.Turn(0.0, 4.2, 0), m.Turn(4.8, 8.0, 1)], centroids=[],
                   model_id="test", audio_seconds=8, seconds=1)


def render(heard: Heard, **transcription):
    logged: list[str] = []
    out = render_outputs(FACTS, parsed(**transcription), heard, SpeakerKeys({}), lambda msg, *_: logged.append(msg))
    return out, msgspec.json.decode(out.files["json"])


def test_split_segments_merge_into_one_timeline_without_doubles():
    out, transcript = render(Heard(plans=PLANS, replies=REPLIES, language="en", channels=1))
    words = [r["alternatives"][0]["content"] for r in transcript["results"] if r["type"] == "word"]
    assert words == ["Hello", "there", "Good", "morning"] and out.words == 4
    assert transcript["format"] == "2.9" and transcript["metadata"]["orchestrator_version"] == f"chorus-{VERSION}"
    assert transcript["job"] == {"id": "job1", "created_at": "2026-12-01T12:00:00.000Z", "data_name": "call.wav",
                                 "duration": 8}
    assert out.files["txt"] == "Hello there. Good morning.\n"
    assert out.files["srt"].startswith("1\n00:00:00,500 --> ")
    assert set(out.files) == {"json", "txt", "srt"}


def test_speakers_are_numbered_by_first_appearance_and_written_as_rttm():
    out, transcript = render(Heard(plans=PLANS, replies=REPLIES, language="en", channels=1, diarized=TURNS),
                             diarization="speaker")
    speakers = [r["alternatives"][0]["speaker"] for r in transcript["results"] if r["type"] == "word"]
    assert speakers == ["S1", "S1", "S2", "S2"]
    assert out.files["txt"] == "SPEAKER: S1\nHello there.\n\nSPEAKER: S2\nGood morning.\n"
    assert out.files["rttm"].splitlines() == ["SPEAKER job1 1 0.000 4.200 <NA> <NA> S1 <NA> <NA>",
                                              "SPEAKER job1 1 4.800 3.200 <NA> <NA> S2 <NA> <NA>"]
