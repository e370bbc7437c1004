"""Speakers on real pyannote models: diarization, channels, identification (§8)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from pyannote.core import Annotation, Segment
from pyannote.metrics.diarization import DiarizationErrorRate

import testdata
from chorus_server import ChorusServer, text
from speech import normalise

SPEAKER = {"type": "transcription", "transcription_config": {"language": "en", "diarization": "speaker"}}
VOICES4 = ["allison", "reader", "call-a", "call-b"]
ORDER = ["allison", "reader", "call-a", "call-b", "reader", "allison", "call-b", "call-a",
         "allison", "call-a", "reader", "call-b", "allison", "reader"]


def annotation(spans) -> Annotation:
    out = Annotation()
    for start, end, who in spans:
        out[Segment(start, end)] = who
    return out


def hypothesis(server: ChorusServer, job_id: str) -> Annotation:
    rows = [line.split() for line in (server.output / job_id / "diarization.rttm").read_text().splitlines()]
    return annotation((float(r[3]), float(r[3]) + float(r[4]), r[7]) for r in rows)


def words_with_right_speaker(transcript: dict, reference: list[tuple[float, float, str]],
                             mapping: dict[str, str]) -> float:
    """Share of words whose speaker (mapped to the reference's names) speaks at the word's midpoint."""
    words = [r for r in transcript["results"] if r["type"] == "word"]
    right = 0
    for w in words:
        mid = (w["start_time"] + w["end_time"]) / 2
        truth = min(reference, key=lambda s: 0 if s[0] <= mid <= s[1] else min(abs(mid - s[0]), abs(mid - s[1])))[2]
        right += mapping.get(w["alternatives"][0]["speaker"]) == truth
    return right / len(words)


def run_diarized(server: ChorusServer, audio, config=SPEAKER, processing=None) -> tuple[dict, str]:
    response = server.submit(audio, config, processing)
    assert response.status_code == 201, response.text
    job = server.wait(response.json()["id"])
    assert job["status"] == "done", job
    return server.http.get(f"/v2/jobs/{job['id']}/transcript").json(), job["id"]


@pytest.fixture(scope="module")
def conversation(audio_dir):
    samples, reference = testdata.conversation(ORDER)
    return testdata.write_wav(samples, audio_dir / "conversation.wav"), reference


def with_speaker_config(model: str = "standard", **sdc) -> dict:
    config = json.loads(json.dumps(SPEAKER))
    config["transcription_config"]["model"] = model
    config["transcription_config"]["speaker_diarization_config"] = sdc
    return config


def speaker_count(server: ChorusServer, job_id: str) -> int:
    return len(hypothesis(server, job_id).labels())


# DER bounds: today's measured DER (docs/benchmarks.md, both operating points: sample 5-6 %,
# 14-turn conversation 4-5 %) plus a margin for other CPUs' kernels; the pre-issue-15 pipeline
# measured 6.0 % and 4.3 %.
@pytest.mark.parametrize("model", ["standard", "enhanced"])
def test_der_on_the_pyannote_sample(idle_server, model):
    audio, _ = testdata.pyannote_sample()
    transcript, job_id = run_diarized(idle_server, audio, with_speaker_config(model))
    reference = annotation(
        (float(r[3]), float(r[3]) + float(r[4]), r[7])
        for r in (line.split() for line in audio.with_suffix(".rttm").read_text().splitlines()))
    der = DiarizationErrorRate(collar=0.25)(reference, hypothesis(idle_server, job_id))
    assert der <= 0.08, der
    labels = [r["alternatives"][0]["speaker"] for r in transcript["results"]]
    assert set(labels) == {"S1", "S2"} and labels[0] == "S1"  # numbered by first appearance
    log = idle_server.http.get(f"/v2/jobs/{job_id}/log").text
    assert re.search(r"speaker diarization done on engine \d: 30.00 s in [\d.]+ s \(RTF [\d.]+\), 2 speakers", log)


@pytest.mark.parametrize("engines", [1, 2])
def test_conversation_of_four_real_voices(idle_server, conversation, engines):
    audio, reference = conversation
    transcript, job_id = run_diarized(idle_server, audio, processing={"parallel_engines": engines})
    ref, hyp = annotation(reference), hypothesis(idle_server, job_id)
    metric = DiarizationErrorRate(collar=0.25)
    der = metric(ref, hyp)
    assert der <= 0.10, der
    mapping = metric.optimal_mapping(ref, hyp)
    assert words_with_right_speaker(transcript, reference, mapping) >= 0.90
    # Every word has a speaker; punctuation carries its word's.
    results = transcript["results"]
    assert all(r["alternatives"][0]["speaker"] != "UU" for r in results)
    for before, mark in zip(results, results[1:]):
        if mark["type"] == "punctuation" and mark["attaches_to"] == "previous":
            assert mark["alternatives"][0]["speaker"] == before["alternatives"][0]["speaker"]
    # txt has speaker blocks; srt cues never span two speakers.
    txt = idle_server.http.get(f"/v2/jobs/{job_id}/transcript", params={"format": "txt"}).text
    assert txt.startswith("SPEAKER: S1\n") and txt.count("SPEAKER: ") >= len(ORDER) - 3
    if engines == 2:
        log = idle_server.http.get(f"/v2/jobs/{job_id}/log").text
        assert "speaker diarization -> engine" in log
        # The split leaves room for the diarization on the engine that runs it (gateway/jobs/costs.py).
        assert re.search(r"plan: diarization costs about [\d.]+x the transcription here; speech shares ", log)
        assert re.search(r"plan: [12] segment\(s\) for 2 engines", log)


def test_sensitivity_moves_the_number_of_speakers(idle_server, conversation):
    audio, _ = conversation
    counts = []
    for sensitivity in (0.0, 1.0):
        _, job_id = run_diarized(idle_server, audio, with_speaker_config(speaker_sensitivity=sensitivity))
        counts.append(speaker_count(idle_server, job_id))
    assert counts[0] < counts[1], counts  # four voices: measured 3 and 6


def test_max_speakers_caps_the_speakers(idle_server, conversation):
    audio, _ = conversation
    transcript, job_id = run_diarized(idle_server, audio, with_speaker_config(max_speakers=2))
    assert speaker_count(idle_server, job_id) == 2
    assert {r["alternatives"][0]["speaker"] for r in transcript["results"]} == {"S1", "S2"}


def speaker_changes(transcript: dict) -> int:
    speakers = [r["alternatives"][0]["speaker"] for r in transcript["results"] if r["type"] == "word"]
    return sum(a != b for a, b in zip(speakers, speakers[1:]))


def test_prefer_current_speaker_changes_speaker_less_often(idle_server):
    """pyannote's sample call has overlapping speech, where words lie near ties between two
    turns: preferring the current speaker never adds a change (the exact rule: tests/unit)."""
    audio, _ = testdata.pyannote_sample()
    plain, _ = run_diarized(idle_server, audio, with_speaker_config())
    sticky, _ = run_diarized(idle_server, audio, with_speaker_config(prefer_current_speaker=True))
    assert [r["alternatives"][0]["content"] for r in plain["results"]] == \
        [r["alternatives"][0]["content"] for r in sticky["results"]]
    assert speaker_changes(sticky) <= speaker_changes(plain)


def test_ten_minutes_of_conversation_diarize_at_the_new_cost(idle_server):
    """A regression guard, not the speed target (bench/diarize.py): before issue 15 the
    diarization ran at RTF 0.18-0.24 on this kind of machine; the bound is generous for
    slower CPUs."""
    order = [VOICES4[i % 4] for i in np.random.default_rng(11).permutation(125)]
    samples, reference = testdata.conversation(order)
    assert samples.size / testdata.RATE >= 590
    audio = testdata.write_wav(samples, idle_server.output.parent / "ten-minutes.wav")
    _, job_id = run_diarized(idle_server, audio, with_speaker_config(), processing={"parallel_engines": 2})
    log = idle_server.http.get(f"/v2/jobs/{job_id}/log").text
    rtf = float(re.search(r"speaker diarization done on engine \d: [\d.]+ s in [\d.]+ s \(RTF ([\d.]+)\)",
                          log).group(1))
    assert rtf <= 0.10, rtf
    assert DiarizationErrorRate(collar=0.25)(annotation(reference), hypothesis(idle_server, job_id)) <= 0.15


def test_channel_diarization(idle_server, audio_dir):
    voices = testdata.voices()
    left, right = [], []
    for i in range(4):  # voices take turns, one per channel
        a, b = voices["allison"][i], voices["reader"][i]
        left += [a, testdata.silence((b.size) / testdata.RATE + 0.8)]
        right += [testdata.silence(a.size / testdata.RATE + 0.4), b, testdata.silence(0.4)]
    stereo = testdata.write_stereo(np.concatenate(left), np.concatenate(right), audio_dir / "stereo.wav")
    spans = testdata.speech_spans(np.concatenate(left))

    def on_left(t: float) -> bool:
        return any(s - 0.3 <= t <= e + 0.3 for s, e in spans)

    for labels, expected in ((None, ["Channel 1", "Channel 2"]), (["Agent", "Caller.2"], ["Agent", "Caller.2"])):
        config = {"type": "transcription", "transcription_config": {"language": "en", "diarization": "channel"}}
        if labels:
            config["transcription_config"]["channel_diarization_labels"] = labels
        transcript, job_id = run_diarized(idle_server, stereo, config, processing={"parallel_engines": 2})
        words = [r for r in transcript["results"] if r["type"] == "word"]
        assert {r["channel"] for r in transcript["results"]} == set(expected)
        right_channel = [(r["channel"] == expected[0]) == on_left((r["start_time"] + r["end_time"]) / 2)
                         for r in words]
        assert sum(right_channel) / len(words) >= 0.95
        starts = [r["start_time"] for r in transcript["results"]]
        assert starts == sorted(starts)
        assert "password" in normalise(text(transcript))
        txt = idle_server.http.get(f"/v2/jobs/{job_id}/transcript", params={"format": "txt"}).text
        assert f"SPEAKER: {expected[0]}" in txt and f"SPEAKER: {expected[1]}" in txt

    mono, _ = testdata.prompt("agent-pass")
    response = idle_server.submit(testdata.write_wav(mono, audio_dir / "mono.wav"),
                                  {"type": "transcription",
                                   "transcription_config": {"language": "en", "diarization": "channel"}})
    job = idle_server.wait(response.json()["id"])
    assert job["status"] == "rejected" and "mono" in job["errors"][0]["message"]


@pytest.mark.parametrize(
    ("sdc", "fragment"),
    [
        ({"speakers": [{"label": "S1", "speaker_identifiers": ["x"]}]}, "reserved"),
        ({"speakers": [{"label": "UU", "speaker_identifiers": ["x"]}]}, "reserved"),
        ({"speakers": [{"label": " Alice", "speaker_identifiers": ["x"]}]}, "spaces"),
        ({"speakers": [{"label": "", "speaker_identifiers": ["x"]}]}, "label"),
        ({"speakers": [{"label": "Alice", "speaker_identifiers": []}]}, "speaker_identifiers"),
        ({"speakers": [{"label": "Alice", "speaker_identifiers": ["x", "x"]}]}, "repeat"),
        ({"speakers": [{"label": f"P{i}", "speaker_identifiers": [f"id{i}"]} for i in range(51)]}, "at most 50"),
        ({"speaker_sensitivity": 1.5}, "speaker_sensitivity"),
        ({"max_speakers": 1}, "max_speakers"),
    ],
)
def test_bad_speaker_config_is_refused(idle_server, speech, sdc, fragment):
    config = json.loads(json.dumps(SPEAKER))
    config["transcription_config"]["speaker_diarization_config"] = sdc
    response = idle_server.submit(speech[0], config)
    assert response.status_code == 400 and fragment in response.json()["detail"], response.text
