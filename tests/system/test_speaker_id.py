"""Speaker identification: enrol a voice, find it in a later job; identifiers bound to the
user, the model and this deployment's secrets; keys rotate."""

from __future__ import annotations

import base64
import json
import struct

import numpy as np
import pytest

import testdata
from chorus_server import ChorusServer

ENROLMENT_PROMPTS = ["all-circuits-busy-now", "agent-loginok", "conf-enteringno", "vm-incorrect",
                     "agent-loggedoff", "auth-thankyou", "vm-goodbye"]


def config(**sdc) -> dict:
    return {"type": "transcription",
            "transcription_config": {"language": "en", "diarization": "speaker", "speaker_diarization_config": sdc}}


def key_number(identifier: str) -> int:
    raw = base64.urlsafe_b64decode(identifier + "=" * (-len(identifier) % 4))
    return struct.unpack_from(">4sI", raw)[1]


@pytest.fixture(scope="module")
def secrets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("secrets")
    (folder / "s.1").write_bytes(b"first secret of this deployment, 32+ bytes long")
    return folder


def start(tmp_path_factory, secrets, name: str) -> ChorusServer:
    server = ChorusServer(tmp_path_factory.mktemp(name) / "jobs", parallel=2,
                          env={"SM_SPEAKER_ID_SECRETS_DIR": str(secrets)})
    server.wait_ready()
    return server


@pytest.fixture(scope="module")
def audio(audio_dir, corpus):
    samples = []
    for name in ENROLMENT_PROMPTS:
        samples += [testdata.prompt(name)[0], testdata.silence(0.5)]
    enrol = testdata.write_wav(np.concatenate(samples), audio_dir / "allison-enrol.wav")
    mixed, reference = testdata.conversation(["allison", "reader", "allison", "reader", "allison", "reader"])
    return enrol, testdata.write_wav(mixed, audio_dir / "allison-and-reader.wav"), reference


def run(server: ChorusServer, path, cfg: dict, user: str | None) -> tuple[dict, str]:
    response = server.submit(path, cfg, processing={"user_id": user} if user else None)
    assert response.status_code == 201, response.text
    job = server.wait(response.json()["id"])
    assert job["status"] == "done", job
    return server.http.get(f"/v2/jobs/{job['id']}/transcript").json(), job["id"]


def speakers_by_voice(transcript: dict, reference) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for r in transcript["results"]:
        if r["type"] != "word":
            continue
        mid = (r["start_time"] + r["end_time"]) / 2
        voice = min(reference, key=lambda s: 0 if s[0] <= mid <= s[1] else min(abs(mid - s[0]), abs(mid - s[1])))[2]
        out.setdefault(voice, set()).add(r["alternatives"][0]["speaker"])
    return out


def test_enrol_identify_and_refuse_across_users(tmp_path_factory, secrets, audio):
    enrol, mixed, reference = audio
    server = start(tmp_path_factory, secrets, "id")
    try:
        transcript, _ = run(server, enrol, config(get_speakers=True), "customer-a")
        assert [s["label"] for s in transcript["speakers"]] == ["S1"]
        identifiers = transcript["speakers"][0]["speaker_identifiers"]
        assert len(identifiers) == 1 and key_number(identifiers[0]) == 1

        known = [{"label": "Alice", "speaker_identifiers": identifiers}]
        transcript, job_id = run(server, mixed, config(speakers=known), "customer-a")
        voices = speakers_by_voice(transcript, reference)
        assert voices["allison"] == {"Alice"} and voices["reader"] == {"S1"}, voices
        assert "speaker identified" in server.http.get(f"/v2/jobs/{job_id}/log").text

        # The same identifiers from another user are never decrypted: ignored, with a warning.
        transcript, job_id = run(server, mixed, config(speakers=known), "customer-b")
        assert "Alice" not in {s for labels in speakers_by_voice(transcript, reference).values() for s in labels}
        log = server.http.get(f"/v2/jobs/{job_id}/log").text
        assert "WARNING" in log and "ignored: not valid for this user_id" in log

        # Altered identifiers too.
        raw = bytearray(base64.urlsafe_b64decode(identifiers[0] + "=" * (-len(identifiers[0]) % 4)))
        raw[-5] ^= 0x01
        tampered = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
        for bad in (tampered, "not-an-identifier"):
            transcript, job_id = run(server, mixed, config(speakers=[{"label": "Alice", "speaker_identifiers": [bad]}]),
                                     "customer-a")
            assert "Alice" not in json.dumps(transcript["results"])
            assert "ignored" in server.http.get(f"/v2/jobs/{job_id}/log").text
    finally:
        assert server.stop() == 0


def test_key_rotation_keeps_old_identifiers(tmp_path_factory, tmp_path, audio):
    enrol, mixed, reference = audio
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "s.1").write_bytes(b"the old secret, soon to be rotated out of encrypting")
    server = start(tmp_path_factory, secrets, "rot1")
    try:
        transcript, _ = run(server, enrol, config(get_speakers=True), None)
        old = transcript["speakers"][0]["speaker_identifiers"]
    finally:
        server.stop()
    (secrets / "s.2").write_bytes(b"the new secret that encrypts from now on")
    server = start(tmp_path_factory, secrets, "rot2")
    try:
        transcript, _ = run(server, mixed, config(speakers=[{"label": "Alice", "speaker_identifiers": old}],
                                                  get_speakers=True), None)
        assert speakers_by_voice(transcript, reference)["allison"] == {"Alice"}
        new = {s["label"]: s["speaker_identifiers"] for s in transcript["speakers"]}
        assert key_number(new["Alice"][0]) == 2 and key_number(old[0]) == 1
    finally:
        server.stop()


def test_no_secrets_no_identification(idle_server, speech):
    for sdc in ({"get_speakers": True}, {"speakers": [{"label": "Alice", "speaker_identifiers": ["x"]}]}):
        response = idle_server.submit(speech[0], config(**sdc))
        assert response.status_code == 400
        assert "SM_SPEAKER_ID_SECRETS_DIR" in response.json()["detail"]


def test_diarization_switched_off(tmp_path, corpus, speech):
    server = ChorusServer(tmp_path / "jobs", parallel=1, args=["--diarization-model", "none"])
    try:
        server.wait_ready()
        response = server.submit(speech[0], config())
        assert response.status_code == 400 and "not enabled" in response.json()["detail"]
        assert server.submit(speech[0]).status_code == 201
    finally:
        server.stop()
