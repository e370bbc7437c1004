"""Real speech: accuracy on Asterisk prompts, LibriVox and the pyannote call; languages; formats."""

from __future__ import annotations

import jiwer
import numpy as np
import pytest

import testdata
from chorus_server import text
from speech import EN_PROMPTS, FR_PROMPTS, normalise, wer


def test_wer_on_asterisk_prompts_with_tiny_en(idle_server, prompt_wav, audio_dir):
    """≥ 10 fixed studio prompts, standard model (tiny.en): corpus WER ≤ 10 %."""
    references, hypotheses = [], []
    for name in EN_PROMPTS:
        audio, reference = prompt_wav(name)
        transcript = idle_server.transcribe(audio)
        assert transcript["results"], name
        references.append(normalise(reference))
        hypotheses.append(normalise(text(transcript)))
    score = jiwer.wer(references, hypotheses)
    assert score <= 0.10, list(zip(references, hypotheses))


def test_librivox_clip(idle_server, audio_dir):
    samples, reference = testdata.librivox()[0]
    audio = testdata.write_wav(samples, audio_dir / "librivox-0.wav")
    assert wer(reference, text(idle_server.transcribe(audio))) <= 0.15


def test_pyannote_two_speaker_call(idle_server):
    audio, reference = testdata.pyannote_sample()
    transcript = idle_server.transcribe(audio)
    assert transcript["job"]["duration"] == 30
    assert wer(reference, text(transcript)) <= 0.25


def test_non_english_job_on_the_enhanced_default(idle_server, prompt_wav):
    references, hypotheses = [], []
    for name in FR_PROMPTS:
        audio, reference = prompt_wav(name, "fr")
        config = {"type": "transcription", "transcription_config": {"language": "fr", "model": "enhanced"}}
        transcript = idle_server.transcribe(audio, config)
        assert {r["alternatives"][0]["language"] for r in transcript["results"]} == {"fr"}
        assert transcript["metadata"]["language_pack_info"]["language_description"] == "French"
        references.append(normalise(reference))
        hypotheses.append(normalise(text(transcript)))
    assert jiwer.cer(references, hypotheses) <= 0.25, list(zip(references, hypotheses))


def test_french_on_the_standard_model_is_served_by_the_multilingual_one(idle_server, prompt_wav):
    audio, reference = prompt_wav("agent-pass", "fr")
    config = {"type": "transcription", "transcription_config": {"language": "fr"}}
    transcript = idle_server.transcribe(audio, config)
    assert jiwer.cer(normalise(reference), normalise(text(transcript))) <= 0.3
    log = idle_server.http.get(f"/v2/jobs/{transcript['job']['id']}/log").text
    assert "cannot serve language 'fr'; using the enhanced model" in log


@pytest.mark.parametrize(("lang", "name"), [("fr", "agent-user"), ("en", "agent-incorrect")])
def test_language_auto(idle_server, prompt_wav, lang, name):
    audio, reference = prompt_wav(name, lang)
    config = {"type": "transcription", "transcription_config": {"language": "auto"}}
    transcript = idle_server.transcribe(audio, config)
    assert {r["alternatives"][0]["language"] for r in transcript["results"]} == {lang}
    assert jiwer.cer(normalise(reference), normalise(text(transcript))) <= 0.3
    log = idle_server.http.get(f"/v2/jobs/{transcript['job']['id']}/log").text
    assert f"detected language {lang}" in log


@pytest.mark.parametrize("kind", sorted(testdata.ENCODINGS))
def test_containers_detected_from_bytes(idle_server, audio_dir, kind):
    samples, reference = testdata.prompt("agent-pass")
    path = testdata.encode(samples, audio_dir / f"agent-pass.{kind}", kind)
    disguised = path.with_name(f"upload-{kind}.wav")  # the client calls everything audio/wav
    disguised.write_bytes(path.read_bytes())
    assert wer(reference, text(idle_server.transcribe(disguised))) <= 0.1


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "could not decode"),
        (b"this is not audio at all, just some text\n" * 50, "could not decode"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00" + b"\x00" * 20, "could not decode"),
        (np.random.default_rng(1).bytes(40_000), "could not decode"),
    ],
    ids=["empty", "text", "truncated-wav", "random-bytes"],
)
def test_bad_audio_is_rejected_and_the_next_job_works(idle_server, audio_dir, speech, content, reason):
    bad = audio_dir / "bad.wav"
    bad.write_bytes(content)
    response = idle_server.submit(bad)
    assert response.status_code == 201
    job = idle_server.wait(response.json()["id"])
    assert job["status"] == "rejected"
    assert job["errors"] and set(job["errors"][0]) == {"timestamp", "message"}
    message = job["errors"][0]["message"]
    assert reason in message or "no audio samples" in message
    assert str(idle_server.output) not in message and "/upload" not in message  # no server paths
    transcript = idle_server.http.get(f"/v2/jobs/{job['id']}/transcript")
    assert transcript.status_code == 404 and "rejected" in transcript.json()["detail"]
    assert "ERROR" in idle_server.http.get(f"/v2/jobs/{job['id']}/log").text
    audio, reference = speech
    assert wer(reference, text(idle_server.transcribe(audio))) <= 0.1
