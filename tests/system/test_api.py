"""Raw HTTP against the real server: every endpoint, field and error of the v2 job API."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from chorus_server import text, words
from speech import wer

CONFIG = {"type": "transcription", "transcription_config": {"language": "en"}}
ID = re.compile(r"^[0-9a-f]{20}$")
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def assert_error(response: httpx.Response, status: int, *fragments: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == status and body["error"] and body["detail"]
    for fragment in fragments:
        assert fragment in str(body["detail"]), body
    return body


def test_curl_style_job_end_to_end(idle_server, speech):
    audio, reference = speech
    response = idle_server.submit(audio)
    assert response.status_code == 201
    assert response.headers["content-type"].startswith("application/json")
    job_id = response.json()["id"]
    assert ID.match(job_id)

    # Visible the moment POST returns, running from acceptance on.
    job = idle_server.http.get(f"/v2/jobs/{job_id}").json()["job"]
    assert job["status"] in ("running", "done")
    job = idle_server.wait(job_id)
    assert job["status"] == "done"
    assert job["id"] == job_id and job["request_id"] == job_id
    assert ISO_MS.match(job["created_at"])
    assert job["data_name"] == audio.name
    assert job["duration"] == 3 and isinstance(job["duration"], int)
    assert job["config"] == CONFIG  # echoed exactly as sent
    assert job["errors"] == []

    transcript = idle_server.http.get(f"/v2/jobs/{job_id}/transcript").json()
    assert transcript["format"] == "2.9"
    assert transcript["job"]["id"] == job_id and transcript["job"]["data_name"] == audio.name
    meta = transcript["metadata"]
    assert meta["type"] == "transcription" and meta["created_at"].endswith("Z")
    assert meta["transcription_config"] == CONFIG["transcription_config"]
    assert meta["language_pack_info"]["word_delimiter"] == " "
    assert wer(reference, text(transcript)) <= 0.1

    results = transcript["results"]
    for r in results:
        alt = r["alternatives"][0]
        assert set(alt) >= {"content", "confidence", "language", "speaker"}
        assert alt["language"] == "en" and alt["speaker"] == "UU" and 0 <= alt["confidence"] <= 1
        assert 0 <= r["start_time"] <= r["end_time"] <= 3.4
        if r["type"] == "punctuation":
            assert r["start_time"] == r["end_time"]
            assert r["attaches_to"] in ("previous", "next") and isinstance(r["is_eos"], bool)
        else:
            assert r["type"] == "word" and not re.search(r"[.,?!]$", alt["content"])
    assert [r["start_time"] for r in results] == sorted(r["start_time"] for r in results)
    last = results[-1]
    assert last["type"] == "punctuation" and last["alternatives"][0]["content"] == "." and last["is_eos"]

    for fmt in ("json", "json-v2", "json_v2"):
        assert idle_server.http.get(f"/v2/jobs/{job_id}/transcript", params={"format": fmt}).json() == transcript
    txt = idle_server.http.get(f"/v2/jobs/{job_id}/transcript", params={"format": "txt"})
    assert txt.headers["content-type"].startswith("text/plain")
    assert txt.text.strip() == "Please enter your password, followed by the pound key."
    srt = idle_server.http.get(f"/v2/jobs/{job_id}/transcript", params={"format": "srt"})
    assert srt.headers["content-type"].startswith("text/plain")
    assert re.match(r"1\n00:00:00,\d{3} --> 00:00:03,\d{3}\n.+\n", srt.text)
    assert all(len(line) <= 37 for line in srt.text.splitlines())

    log = idle_server.http.get(f"/v2/jobs/{job_id}/log")
    assert log.headers["content-type"].startswith("text/plain")
    for fragment in ("received job", "decoded 3.", "segment 0 (0.00-3.29 s) -> engine", "standard model", "done on engine", "job done"):
        assert fragment in log.text
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO", log.text)

    # Outputs on disk, under fixed names; the upload and the decoded samples are gone.
    folder = idle_server.output / job_id
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json", "job.log", "transcript.json", "transcript.srt", "transcript.txt"]


def test_srt_overrides_and_sentence_cues(idle_server, prompt_wav):
    audio, _ = prompt_wav("agent-incorrect")  # two sentences
    config = {**CONFIG, "output_config": {"srt_overrides": {"max_line_length": 20, "max_lines": 1}}}
    transcript = idle_server.transcribe(audio, config)
    job_id = transcript["job"]["id"]
    srt = idle_server.http.get(f"/v2/jobs/{job_id}/transcript", params={"format": "srt"}).text
    cues = [c.splitlines() for c in srt.strip().split("\n\n")]
    assert len(cues) >= 3
    for n, cue in enumerate(cues, 1):
        assert cue[0] == str(n) and len(cue) == 3 and len(cue[2]) <= 20
    assert cues[0][2].endswith(".")  # "Login incorrect." ends the first cue


def test_config_echo_keeps_what_was_sent_and_drops_top_level_nulls(idle_server, speech):
    audio, _ = speech
    config = {"type": "transcription", "notification_config": None, "tracking": {"title": "t", "tags": ["a"]},
              "transcription_config": {"language": "en", "operating_point": "standard", "diarization": "none"}}
    response = idle_server.submit(audio, config)
    job = idle_server.wait(response.json()["id"])
    assert job["config"] == {k: v for k, v in config.items() if v is not None}
    transcript = idle_server.http.get(f"/v2/jobs/{job['id']}/transcript").json()
    assert transcript["job"]["tracking"] == {"title": "t", "tags": ["a"]}


def test_list_jobs_newest_first_with_limit_and_time_filters(idle_server, speech):
    audio, _ = speech
    ids = []
    for _ in range(3):
        ids.append(idle_server.submit(audio).json()["id"])
        idle_server.wait(ids[-1])
    listed = idle_server.http.get("/v2/jobs", params={"limit": 3}).json()["jobs"]
    assert [j["id"] for j in listed] == ids[::-1]
    for j in listed:
        assert set(j) >= {"id", "created_at", "data_name", "duration", "status", "config", "request_id"}
    middle = listed[1]["created_at"]
    before = idle_server.http.get("/v2/jobs", params={"created_before": middle, "limit": 100}).json()["jobs"]
    assert ids[0] in [j["id"] for j in before] and ids[1] not in [j["id"] for j in before]
    after = idle_server.http.get("/v2/jobs", params={"created_after": middle}).json()["jobs"]
    assert [j["id"] for j in after] == [ids[2]]
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    assert idle_server.http.get("/v2/jobs", params={"created_after": future}).json() == {"jobs": []}
    # Query parameters clients add are ignored.
    assert idle_server.http.get("/v2/jobs", params={"sm-sdk": "python-x", "limit": 1}).status_code == 200
    for bad in ("0", "101", "abc", "1.5"):
        assert_error(idle_server.http.get("/v2/jobs", params={"limit": bad}), 422, "limit")
    assert_error(idle_server.http.get("/v2/jobs", params={"created_before": "yesterday"}), 422, "created_before")


def test_delete_semantics(idle_server, speech, long_speech):
    audio, _ = speech
    job_id = idle_server.submit(audio).json()["id"]
    idle_server.wait(job_id)
    deleted = idle_server.http.delete(f"/v2/jobs/{job_id}")
    assert deleted.status_code == 200 and deleted.json()["job"]["status"] == "deleted"
    assert idle_server.http.get(f"/v2/jobs/{job_id}").json()["job"]["status"] == "deleted"
    assert_error(idle_server.http.get(f"/v2/jobs/{job_id}/transcript"), 410)
    assert not (idle_server.output / job_id).exists()
    assert job_id not in [j["id"] for j in idle_server.http.get("/v2/jobs").json()["jobs"]]

    long_audio, _ = long_speech
    config = {"type": "transcription", "transcription_config": {"language": "en", "model": "enhanced"}}
    running = idle_server.submit(long_audio, config).json()["id"]
    assert_error(idle_server.http.delete(f"/v2/jobs/{running}"), 423, "force=true")
    assert_error(idle_server.http.delete(f"/v2/jobs/{running}", params={"force": "maybe"}), 422)
    forced = idle_server.http.delete(f"/v2/jobs/{running}", params={"force": "true"})
    assert forced.status_code == 200 and forced.json()["job"]["status"] == "deleted"
    idle_server.wait_idle(timeout=60)  # the engine was told to stop, and came back
    assert idle_server.http.get("/jobs").json()["unused_engines"] == 2
    assert not (idle_server.output / running).exists()
    assert_error(idle_server.http.delete("/v2/jobs/0123456789abcdef0123"), 404)


@pytest.mark.parametrize(
    ("form", "headers", "status", "fragment"),
    [
        ({"config": "{not json"}, {}, 400, "not valid JSON"),
        ({"config": "[1, 2]"}, {}, 400, "JSON object"),
        ({"config": json.dumps({"transcription_config": {"language": "en"}})}, {}, 400, "type"),
        ({"config": json.dumps({"type": "alignment", "alignment_config": {"language": "en"}})}, {}, 400,
         "unsupported job type"),
        ({"config": json.dumps({"type": "banana"})}, {}, 400, "unsupported job type"),
        ({"config": json.dumps({"type": "transcription"})}, {}, 400, "transcription_config"),
        ({"config": json.dumps({"type": "transcription", "transcription_config": {"language": 5}})}, {}, 400,
         "$.transcription_config.language"),
        ({"config": json.dumps({"type": "transcription", "transcription_config": {}})}, {}, 400, "language"),
        ({"config": json.dumps({"type": "transcription", "transcription_config": {"language": "xx"}})}, {}, 400,
         "'xx' is not supported"),
        ({"config": json.dumps({"type": "transcription",
                                "transcription_config": {"language": "en", "model": "huge"}})}, {}, 400, "huge"),
        ({"config": json.dumps({"type": "transcription",
                                "transcription_config": {"language": "en", "diarization": "both"}})}, {}, 400,
         "diarization"),
        ({"config": json.dumps({**CONFIG, "output_config": {"srt_overrides": {"max_lines": 0}}})}, {}, 400,
         "max_lines"),
        ({"config": json.dumps(CONFIG)}, {"X-SM-Processing-Data": "{oops"}, 400, "not valid JSON"),
        ({"config": json.dumps(CONFIG)}, {"X-SM-Processing-Data": "[]"}, 400, "JSON object"),
        ({"config": json.dumps(CONFIG)}, {"X-SM-Processing-Data": '{"parallel_engines": 0}'}, 400,
         "parallel_engines"),
        ({"config": json.dumps(CONFIG)}, {"X-SM-Processing-Data": '{"parallel_engines": -3}'}, 400,
         "parallel_engines"),
        ({"config": json.dumps(CONFIG)}, {"X-SM-Processing-Data": '{"parallel_engines": "2"}'}, 400,
         "parallel_engines"),
        ({"config": json.dumps(CONFIG)}, {"X-SM-Processing-Data": '{"parallel_engines": 1.5}'}, 400,
         "parallel_engines"),
        ({"config": json.dumps(CONFIG)}, {"X-SM-Processing-Data": '{"parallel_engines": true}'}, 400,
         "parallel_engines"),
    ],
)
def test_bad_submissions_are_clear_4xx(idle_server, speech, form, headers, status, fragment):
    audio, _ = speech
    with open(audio, "rb") as f:
        response = idle_server.http.post("/v2/jobs", data=form, headers=headers, files={"data_file": ("a.wav", f)})
    assert_error(response, status, fragment)
    assert idle_server.http.get("/jobs").json()["unused_engines"] == 2  # nothing held


def test_missing_parts(idle_server, speech):
    audio, _ = speech
    assert_error(idle_server.http.post("/v2/jobs", data={"config": json.dumps(CONFIG)}), 400, "data_file")
    assert_error(idle_server.http.post("/v2/jobs", data={"config": json.dumps(CONFIG), "data_file": "x"}),
                 400, "data_file")
    with open(audio, "rb") as f:
        assert_error(idle_server.http.post("/v2/jobs", files={"data_file": ("a.wav", f)}), 400, "config")
    assert_error(idle_server.http.post("/v2/jobs", json=CONFIG), 400, "config")
    broken = idle_server.http.post(
        "/v2/jobs", content=b"--xyz\r\nContent-Disposition: form-data; name=\"config\"\r\n\r\n{}",
        headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert 400 <= broken.status_code < 500 and broken.json()["code"] == broken.status_code


def test_config_as_json_part_and_processing_alias(idle_server, speech):
    """The sync SDK sends config as an application/json part; an early SDK sent requested_parallel."""
    audio, _ = speech
    with open(audio, "rb") as f:
        response = idle_server.http.post(
            "/v2/jobs",
            files={"config": (None, json.dumps(CONFIG), "application/json"), "data_file": ("x.wav", f, "audio/wav")},
            headers={"X-SM-Processing-Data": '{"requested_parallel": 2, "user_id": "u1"}'},
        )
    assert response.status_code == 201
    job = idle_server.wait(response.json()["id"])
    assert job["status"] == "done"
    log = idle_server.http.get(f"/v2/jobs/{job['id']}/log").text
    assert "parallel_engines=2" in log and "user_id=u1" in log


def test_uploaded_filename_never_becomes_a_path(idle_server, speech):
    audio, _ = speech
    with open(audio, "rb") as f:
        response = idle_server.http.post("/v2/jobs", data={"config": json.dumps(CONFIG)},
                                         files={"data_file": ("../../../etc/evil.wav", f)})
    job = idle_server.wait(response.json()["id"])
    assert job["status"] == "done" and job["data_name"] == "evil.wav"
    assert not (idle_server.output.parent / "etc").exists()


def test_unknown_ids_formats_and_unfinished_transcripts(idle_server, long_speech):
    assert_error(idle_server.http.get("/v2/jobs/doesnotexist"), 404, "doesnotexist")
    assert_error(idle_server.http.get("/v2/jobs/doesnotexist/transcript"), 404)
    assert_error(idle_server.http.get("/v2/jobs/doesnotexist/log"), 404)
    assert_error(idle_server.http.get("/v2/nothing-here"), 404)
    assert_error(idle_server.http.put("/v2/jobs"), 405)
    audio, _ = long_speech
    job_id = idle_server.submit(audio).json()["id"]
    body = assert_error(idle_server.http.get(f"/v2/jobs/{job_id}/transcript"), 404, "not finished", "running")
    assert body["error"] == "Transcription not ready"
    idle_server.wait(job_id)
    assert_error(idle_server.http.get(f"/v2/jobs/{job_id}/transcript", params={"format": "docx"}), 404, "docx")


def test_health_endpoints(idle_server):
    assert idle_server.http.get("/live").json() == {"live": True}
    ready = idle_server.http.get("/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True, "engines_used": 0}
    assert idle_server.http.get("/jobs").json() == {"active_jobs": [], "max_engines": 2, "unused_engines": 2}


def test_words_carry_word_level_times(idle_server, long_speech):
    audio, reference = long_speech
    transcript = idle_server.transcribe(audio)
    assert wer(reference, text(transcript)) <= 0.2
    times = [(r["start_time"], r["end_time"]) for r in transcript["results"] if r["type"] == "word"]
    assert all(s <= e for s, e in times)
    assert all(a[0] <= b[0] for a, b in zip(times, times[1:]))
    assert times[-1][1] <= transcript["job"]["duration"] + 1
    assert len(words(transcript)) > 60


def test_wait_long_polls_until_the_job_ends(idle_server, long_speech):
    audio, _ = long_speech
    job_id = idle_server.submit(audio).json()["id"]
    job = idle_server.http.get(f"/v2/jobs/{job_id}", params={"wait": 120}).json()["job"]
    assert job["status"] == "done"
    transcript = idle_server.http.get(f"/v2/jobs/{job_id}/transcript", params={"wait": "0"})
    assert transcript.status_code == 200 and transcript.json()["job"]["id"] == job_id
    for bad in ("soon", "-1", "nan", "1e9"):
        assert_error(idle_server.http.get(f"/v2/jobs/{job_id}", params={"wait": bad}), 422, "wait")
