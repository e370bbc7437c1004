"""Admission is exact: never more engines in use than --parallel, and the 503 text is exact."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import httpx

BUSY = re.compile(r"^Server busy: (\d+) engines not available \((\d+) engines in use, 2 parallel allowed\)$")
ENHANCED = {"type": "transcription", "transcription_config": {"language": "en", "model": "enhanced"}}


def test_concurrent_submissions_against_a_full_server(idle_server, long_speech):
    audio, _ = long_speech
    data = audio.read_bytes()

    def post(_):
        with httpx.Client(base_url=idle_server.url, timeout=60) as c:
            return c.post("/v2/jobs", data={"config": json.dumps(ENHANCED)}, files={"data_file": ("l.wav", data)})

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(post, range(8)))
    accepted = [r for r in responses if r.status_code == 201]
    refused = [r for r in responses if r.status_code == 503]
    assert len(accepted) == 2 and len(refused) == 6, [r.status_code for r in responses]
    for r in refused:
        body = r.json()
        assert BUSY.match(body["detail"]), body
        assert body["code"] == 503 and body["error"] == "Server busy"
        assert body["detail"] == "Server busy: 1 engines not available (2 engines in use, 2 parallel allowed)"

    capacity = idle_server.http.get("/jobs").json()
    assert capacity["unused_engines"] == 0 and capacity["max_engines"] == 2
    assert sorted(j["job_id"] for j in capacity["active_jobs"]) == sorted(r.json()["id"] for r in accepted)
    ready = idle_server.http.get("/ready")
    assert ready.status_code == 503 and ready.json() == {"ready": False, "engines_used": 2}

    for r in accepted:
        assert idle_server.wait(r.json()["id"])["status"] == "done"
    assert idle_server.http.get("/ready").json() == {"ready": True, "engines_used": 0}
    assert idle_server.http.get("/jobs").json()["unused_engines"] == 2


def test_a_job_holds_the_engines_it_asks_for(idle_server, long_speech, speech):
    audio, _ = long_speech
    job_id = idle_server.submit(audio, ENHANCED, processing={"parallel_engines": 2}).json()["id"]
    capacity = idle_server.http.get("/jobs").json()
    assert capacity["active_jobs"] == [{"job_id": job_id, "parallel_engines": 2}]
    assert capacity["unused_engines"] == 0
    refused = idle_server.submit(speech[0])
    assert refused.status_code == 503
    assert refused.json()["detail"] == "Server busy: 1 engines not available (2 engines in use, 2 parallel allowed)"
    assert idle_server.wait(job_id)["status"] == "done"
    assert idle_server.http.get("/jobs").json()["unused_engines"] == 2


def test_more_engines_than_the_server_has(idle_server, speech):
    response = idle_server.submit(speech[0], processing={"parallel_engines": 8})
    assert response.status_code == 503
    assert response.json()["detail"] == "Server busy: 8 engines not available (0 engines in use, 2 parallel allowed)"
    assert idle_server.http.get("/jobs").json()["unused_engines"] == 2
