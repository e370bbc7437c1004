"""Operating the worker: durability across a killed gateway, drain, load, auth, queue,
fetch_data and callbacks, metrics."""

from __future__ import annotations

import json
import select
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from chorus_server import ChorusServer, text
from speech import wer

FAST = ["--diarization-model", "none"]  # these tests need no speaker models: engines start faster
CONFIG = {"type": "transcription", "transcription_config": {"language": "en"}}
ENHANCED = {"type": "transcription", "transcription_config": {"language": "en", "model": "enhanced"}}
BUSY = "Server busy: 1 engines not available (2 engines in use, 2 parallel allowed)"


@pytest.fixture
def start(tmp_path, corpus):
    servers: list[ChorusServer] = []

    def run(output=None, **kwargs) -> ChorusServer:
        kwargs["args"] = FAST + kwargs.get("args", [])
        server = ChorusServer(output or tmp_path / f"jobs{len(servers)}", **kwargs)
        servers.append(server)
        server.wait_ready()
        return server

    yield run
    for server in servers:
        server.stop()


def test_gateway_killed_and_restarted(start, tmp_path, speech, long_speech):
    output = tmp_path / "durable"
    server = start(output)
    finished = server.submit(speech[0]).json()["id"]
    assert server.wait(finished)["status"] == "done"
    deleted = server.submit(speech[0]).json()["id"]
    server.wait(deleted)
    server.http.delete(f"/v2/jobs/{deleted}")
    running = server.submit(long_speech[0], ENHANCED).json()["id"]
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()

    again = start(output, port=server.port)
    jobs = {j["id"]: j for j in again.http.get("/v2/jobs").json()["jobs"]}
    assert jobs[finished]["status"] == "done"
    assert wer(speech[1], text(again.http.get(f"/v2/jobs/{finished}/transcript").json())) <= 0.1
    assert "job done" in again.http.get(f"/v2/jobs/{finished}/log").text
    interrupted = again.http.get(f"/v2/jobs/{running}").json()["job"]
    assert interrupted["status"] == "rejected" and "worker restarted" in interrupted["errors"][0]["message"]
    assert again.http.get(f"/v2/jobs/{deleted}").json()["job"]["status"] == "deleted"
    assert again.http.get("/jobs").json()["unused_engines"] == 2
    assert again.transcribe(speech[0])["results"]


def test_sigterm_drains_running_jobs(start, speech, long_speech):
    server = start()
    job_id = server.submit(long_speech[0], ENHANCED).json()["id"]
    time.sleep(0.5)
    server.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 5
    while server.http.get("/ready").status_code != 503 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.http.get("/ready").json()["ready"] is False
    refused = server.submit(speech[0])
    assert refused.status_code == 503 and "shutting down" in refused.json()["detail"]
    # The long-poll answers when the job ends, before the worker exits.
    job = server.http.get(f"/v2/jobs/{job_id}", params={"wait": 120}, timeout=150).json()["job"]
    assert job["status"] == "done"
    assert server.process.wait(60) == 0
    transcript = (server.output / job_id / "transcript.json").read_text()
    assert wer(long_speech[1], " ".join(r["alternatives"][0]["content"] for r in json.loads(transcript)["results"]
                                        if r["type"] == "word")) <= 0.2


def test_drain_timeout_rejects_what_is_left(start, long_speech):
    server = start(args=["--drain-timeout", "0.5"])
    job_id = server.submit(long_speech[0], ENHANCED).json()["id"]
    time.sleep(0.3)
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(60) == 0
    server.process.wait()
    again = start(server.output, port=server.port)
    job = again.http.get(f"/v2/jobs/{job_id}").json()["job"]
    assert job["status"] == "rejected" and "shut down" in job["errors"][0]["message"]


def test_burst_of_200_submissions(start, speech):
    server = start()
    audio = speech[0].read_bytes()
    stop = threading.Event()
    peak = [0]

    def watch() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            while not stop.is_set():
                body = c.get("/jobs").json()
                peak[0] = max(peak[0], body["max_engines"] - body["unused_engines"], len(body["active_jobs"]))
                time.sleep(0.005)

    def post(_):
        with httpx.Client(base_url=server.url, timeout=60) as c:
            return c.post("/v2/jobs", data={"config": json.dumps(CONFIG)}, files={"data_file": ("a.wav", audio)})

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(32) as pool:
            responses = list(pool.map(post, range(200)))
    finally:
        stop.set()
        watcher.join()
    accepted = [r.json()["id"] for r in responses if r.status_code == 201]
    refused = [r for r in responses if r.status_code != 201]
    assert len(accepted) + len(refused) == 200 and accepted
    for r in refused:
        assert r.status_code == 503 and r.json()["detail"] == BUSY, r.text
    assert peak[0] <= 2
    for job_id in accepted:
        assert server.wait(job_id)["status"] == "done"
    assert server.http.get("/jobs").json()["unused_engines"] == 2
    families = {f.name: f for f in text_string_to_metric_families(server.http.get("/metrics").text)}
    refused_total = next(s.value for s in families["chorus_admissions_refused"].samples if s.name.endswith("_total"))
    assert refused_total == len(refused)


def test_auth_on_and_off(start, speech):
    server = start(args=["--api-key", "s3cret"])
    refused = server.submit(speech[0])  # its upload is never read: the connection is not reused
    assert refused.status_code == 401 and refused.headers["connection"] == "close"
    body = server.http.get("/v2/jobs").json()
    assert body["code"] == 401 and "Bearer" in body["detail"]
    assert server.http.get("/v2/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    good = httpx.Client(base_url=server.url, headers={"Authorization": "Bearer s3cret"}, timeout=60)
    response = server.submit(speech[0], client=good)
    assert response.status_code == 201
    for path in ("/live", "/ready", "/jobs", "/metrics"):  # probes and scraping stay open
        assert server.http.get(path).status_code == 200
    assert good.get(f"/v2/jobs/{response.json()['id']}").status_code == 200
    good.close()
    # Off (the default): any key, or none, is accepted: the official client always sends one.
    open_server = start()
    for headers in ({}, {"Authorization": "Bearer anything"}, {"Authorization": "Basic xyz"}):
        assert open_server.http.get("/v2/jobs", headers=headers).status_code == 200


def test_queue_mode(start, speech, long_speech):
    server = start(parallel=1, args=["--queue-size", "2"])
    first = server.submit(long_speech[0], ENHANCED).json()["id"]
    second = server.submit(speech[0]).json()["id"]
    third = server.submit(speech[0]).json()["id"]
    refused = server.submit(speech[0])
    assert refused.status_code == 503
    capacity = server.http.get("/jobs").json()
    assert capacity["active_jobs"] == [{"job_id": first, "parallel_engines": 1}]
    assert capacity["queued_jobs"] == [{"job_id": second, "parallel_engines": 1},
                                       {"job_id": third, "parallel_engines": 1}]
    assert server.http.get(f"/v2/jobs/{second}").json()["job"]["status"] == "running"
    assert "queued: waiting for 1 engine(s), position 1" in server.http.get(f"/v2/jobs/{second}/log").text
    done = [server.wait(j) for j in (first, second, third)]
    assert [j["status"] for j in done] == ["done"] * 3
    starts = [server.http.get(f"/v2/jobs/{j}/log").text for j in (second, third)]
    assert all("left the queue" in log for log in starts)
    assert server.http.get("/jobs").json()["queued_jobs"] == []


class _Peer(BaseHTTPRequestHandler):
    """Serves the audio (behind a header) and records callbacks."""

    audio = b""
    received: list = []

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/audio.wav" and self.headers.get("X-Token") == "t0k":
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.audio)))
            self.end_headers()
            self.wfile.write(self.audio)
        else:
            self.send_response(404 if self.path != "/audio.wav" else 403)
            self.end_headers()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        failing = self.path.startswith("/broken")
        _Peer.received.append((self.command, self.path, dict(self.headers), body))
        self.send_response(500 if failing else 200)
        self.end_headers()

    do_PUT = do_POST


@pytest.fixture
def peer(speech):
    _Peer.audio = speech[0].read_bytes()
    _Peer.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Peer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_fetch_data_and_callbacks(start, peer, speech):
    server = start()
    config = {
        "type": "transcription", "transcription_config": {"language": "en"},
        "fetch_data": {"url": f"{peer}/audio.wav", "auth_headers": ["X-Token: t0k"]},
        "notification_config": [
            {"url": f"{peer}/hook-json", "contents": ["transcript.txt"]},
            {"url": f"{peer}/hook-multi", "contents": ["jobinfo", "transcript.srt"], "method": "put"},
            {"url": f"{peer}/broken", "contents": []},
        ],
    }
    response = server.http.post("/v2/jobs", files={"config": (None, json.dumps(config))})
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    job = server.wait(job_id)
    assert job["status"] == "done" and job["data_name"] == ""
    assert wer(speech[1], text(server.http.get(f"/v2/jobs/{job_id}/transcript").json())) <= 0.1
    deadline = time.monotonic() + 30
    while not any("notification" in e["message"] for e in server.http.get(f"/v2/jobs/{job_id}").json()["job"]["errors"]):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    calls = {path.split("?")[0]: (method, path, headers, body) for method, path, headers, body in _Peer.received}
    method, path, headers, body = calls["/hook-json"]
    assert f"id={job_id}" in path and "status=success" in path
    assert headers["Content-Type"].startswith("text/plain") and wer(speech[1], body.decode()) <= 0.1
    assert headers["User-Agent"] == "Speechmatics-API/2.0"
    method, _, headers, body = calls["/hook-multi"]
    assert method == "PUT" and headers["Content-Type"].startswith("multipart/form-data")
    assert b'name="jobinfo"' in body and b'name="transcript.srt"' in body and b"-->" in body
    assert sum(1 for _, p, _, _ in _Peer.received if p.startswith("/broken")) == 4  # retried
    errors = server.http.get(f"/v2/jobs/{job_id}").json()["job"]["errors"]
    assert any("/broken failed after 4 attempts" in e["message"] for e in errors)

    # A fetch that fails rejects the job, saying why; the callback says fetch_error.
    bad = {**config, "fetch_data": {"url": f"{peer}/audio.wav"},
           "notification_config": [{"url": f"{peer}/hook-fail", "contents": ["jobinfo"]}]}
    job_id = server.http.post("/v2/jobs", files={"config": (None, json.dumps(bad))}).json()["id"]
    job = server.wait(job_id)
    assert job["status"] == "rejected" and "http status code 403" in job["errors"][0]["message"]
    deadline = time.monotonic() + 10
    while not any(p.startswith("/hook-fail") for _, p, _, _ in _Peer.received):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert any("status=fetch_error" in p for _, p, _, _ in _Peer.received if p.startswith("/hook-fail"))

    # No `contents`: the json-v2 transcript as a file part named data_file.
    plain = {**config, "notification_config": [{"url": f"{peer}/hook-default"}]}
    job_id = server.http.post("/v2/jobs", files={"config": (None, json.dumps(plain))}).json()["id"]
    assert server.wait(job_id)["status"] == "done"
    deadline = time.monotonic() + 10
    while not any(p.startswith("/hook-default") for _, p, _, _ in _Peer.received):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    body = next(b for _, p, _, b in _Peer.received if p.startswith("/hook-default"))
    assert b'name="data_file"' in body and b'"format":"2.9"' in body


def test_upload_limit_and_audio_duration_limit(start, long_speech):
    server = start(args=["--max-upload-mb", "1", "--max-audio-seconds", "10"])
    big = b"\0" * (3 << 20)
    response = server.http.post("/v2/jobs", data={"config": json.dumps(CONFIG)}, files={"data_file": ("b.wav", big)})
    assert response.status_code == 413 and response.json()["error"] == "Payload Too Large"

    # Chunked, with no Content-Length: the answer comes while the client is still sending.
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"POST /v2/jobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: multipart/form-data; boundary=b\r\n\r\n")
        head = (b"--b\r\nContent-Disposition: form-data; name=\"config\"\r\n\r\n" + json.dumps(CONFIG).encode()
                + b"\r\n--b\r\nContent-Disposition: form-data; name=\"data_file\"; filename=\"x.wav\"\r\n\r\n")
        sock.sendall(b"%x\r\n%s\r\n" % (len(head), head))
        sent, answer = 0, b""
        while not answer and sent < (8 << 20):
            chunk = b"\0" * 65536
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:
                break
            sent += len(chunk)
            if select.select([sock], [], [], 0)[0]:
                answer = sock.recv(65536)
        while b"Payload Too Large" not in answer:  # the body may come in a later packet
            more = sock.recv(65536)
            if not more:
                break
            answer += more
    assert answer.startswith(b"HTTP/1.1 413") and b"Payload Too Large" in answer, answer[:200]
    assert sent < (8 << 20)  # answered before the client had sent its 8 MiB (kernel buffers hold some)
    assert server.http.get("/jobs").json()["unused_engines"] == 2
    response = server.submit(long_speech[0])  # 40 s of audio, 1.3 MB: over the 10 s limit
    if response.status_code == 413:
        pytest.fail("the long clip should fit in 1 MiB? it does not: pick a shorter one")
    job = server.wait(response.json()["id"])
    assert job["status"] == "rejected" and "limit" in job["errors"][0]["message"]


def test_metrics_match_what_happened(start, speech):
    server = start()
    for _ in range(3):
        assert server.transcribe(speech[0])["results"]
    server.submit(speech[0], processing={"parallel_engines": 3})  # refused
    server.http.get("/v2/jobs/nope")
    families = {f.name: f for f in text_string_to_metric_families(server.http.get("/metrics").text)}

    def samples(name: str, suffix: str = "") -> list:
        return [s for s in families[name].samples if s.name == name + suffix]

    assert sum(s.value for s in samples("chorus_engine_segments", "_total") if s.labels["outcome"] == "done") == 3
    assert sum(s.value for s in samples("chorus_engine_jobs", "_total") if s.labels["outcome"] == "done") == 3
    audio = sum(s.value for s in samples("chorus_engine_audio_seconds", "_total"))
    assert audio == pytest.approx(3 * 3.285, abs=0.05)
    assert sum(s.value for s in samples("chorus_engine_real_time_factor", "_count")) == 3
    assert samples("chorus_admissions_refused", "_total")[0].value == 1
    assert {s.labels["status"]: s.value for s in samples("chorus_jobs")}["done"] == 3
    assert samples("chorus_engines_max")[0].value == 2 and samples("chorus_engines_in_use")[0].value == 0
    states = {(s.labels["engine"], s.labels["state"]): s.value for s in samples("chorus_engine_state")}
    assert states[("0", "idle")] == 1 and states[("1", "idle")] == 1
    assert all(s.value > 50e6 for s in samples("chorus_engine_resident_memory_bytes"))
    assert all(s.value > 0 for s in samples("chorus_engine_cpu_seconds", "_total"))
    uploads = samples("chorus_upload_bytes", "_total")[0].value
    assert uploads == 3 * speech[0].stat().st_size  # the refused one was never read
    latency = {(s.labels["route"], s.labels["status"]): s.value
               for s in samples("chorus_http_request_duration_seconds", "_count")}
    assert latency[("/v2/jobs/{job_id}", "404")] == 1
    assert latency[("/v2/jobs", "503")] == 1 and latency[("/v2/jobs", "201")] == 3
