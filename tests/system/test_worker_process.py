"""The worker as a process: flags, environment, supervision of engines, job history."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from chorus_server import ROOT, ChorusServer, engine_pids, free_port, pid_of_task, text
from speech import wer


@pytest.mark.parametrize("value", ["0", "-1", "two", ""])
def test_bad_parallel_exits_2_with_a_clear_message(value, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--parallel", value, "--all-formats", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "invalid check_parallel value" in result.stderr


def test_run_mode_other_than_http_is_refused(tmp_path):
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--run-mode", "batch"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--run-mode" in result.stderr


@pytest.fixture
def own_server(tmp_path, corpus):
    servers = []

    def start(**kwargs) -> ChorusServer:
        srv = ChorusServer(tmp_path / f"jobs{len(servers)}", **kwargs)
        servers.append(srv)
        srv.wait_ready()
        return srv

    yield start
    for srv in servers:
        assert srv.stop() == 0, srv.log()


def test_engine_killed_mid_job_retries_then_gives_up(own_server, long_speech, speech):
    server = own_server(parallel=2)
    engines_before = engine_pids(server)
    assert len(engines_before) == 2
    audio, reference = long_speech
    config = {"type": "transcription", "transcription_config": {"language": "en", "model": "enhanced"}}

    # Killed once: the segment is retried on the fresh engine and the job is done.
    job_id = server.submit(audio, config).json()["id"]
    pid = pid_of_task(server, job_id, "segment 0")
    assert pid in engines_before
    time.sleep(1.0)
    os.kill(pid, signal.SIGKILL)
    job = server.wait(job_id, timeout=180)
    assert job["status"] == "done", job
    log = server.http.get(f"/v2/jobs/{job_id}/log").text
    assert re.search(r"engine \d died \(killed by signal 9\) while working on it; retrying once", log)
    assert wer(reference, text(server.http.get(f"/v2/jobs/{job_id}/transcript").json())) <= 0.2
    assert server.http.get("/jobs").json()["unused_engines"] == 2
    server.wait_ready()
    assert len(engine_pids(server)) == 2 and pid not in engine_pids(server)

    # Killed twice: rejected, saying why; capacity exact; the engines come back.
    job_id = server.submit(audio, config).json()["id"]
    os.kill(pid_of_task(server, job_id, "segment 0"), signal.SIGKILL)
    second = pid_of_task(server, job_id, "segment 0", occurrence=2)
    time.sleep(0.5)
    os.kill(second, signal.SIGKILL)
    job = server.wait(job_id, timeout=180)
    assert job["status"] == "rejected"
    assert re.search(r"engine \d died \(killed by signal 9\) while working on it \(after one retry\)",
                     job["errors"][0]["message"]), job
    assert server.http.get("/jobs").json()["unused_engines"] == 2
    server.wait_ready()
    assert server.http.get("/live").json() == {"live": True}
    first, second = server.submit(speech[0]), server.submit(speech[0])
    assert first.status_code == second.status_code == 201
    for response in (first, second):
        done = server.wait(response.json()["id"])
        assert done["status"] == "done"
        assert wer(speech[1], text(server.http.get(f"/v2/jobs/{done['id']}/transcript").json())) <= 0.1


def test_port_from_environment_and_bounded_job_history(own_server, speech):
    port = free_port()
    server = own_server(parallel=1, port=port,
                        env={"SM_BATCH_WORKER_LISTEN_PORT": str(port), "SM_BATCH_WORKER_MAX_JOB_HISTORY": "2"})
    ids = []
    for _ in range(3):
        ids.append(server.submit(speech[0]).json()["id"])
        assert server.wait(ids[-1])["status"] == "done"
    expired = server.http.get(f"/v2/jobs/{ids[0]}")
    assert expired.status_code == 410 and expired.json()["error"] == "Job Expired"
    assert server.http.get(f"/v2/jobs/{ids[0]}/transcript").status_code == 410
    assert [j["id"] for j in server.http.get("/v2/jobs").json()["jobs"]] == ids[:0:-1]
    deadline = time.monotonic() + 10
    while (server.output / ids[0]).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not (server.output / ids[0]).exists()
    assert (server.output / ids[2] / "transcript.json").exists()


def test_sigterm_stops_the_worker_and_its_engines(tmp_path, corpus):
    server = ChorusServer(tmp_path / "jobs", parallel=2)
    server.wait_ready()
    engines = [psutil.Process(pid) for pid in engine_pids(server)]
    assert len(engines) == 2 and server.stop() == 0
    gone, alive = psutil.wait_procs(engines, timeout=15)
    assert not alive


def test_an_engine_that_keeps_dying_at_load_is_reported_on_live(tmp_path, corpus):
    server = ChorusServer(tmp_path / "jobs", parallel=1,
                          args=["--model-standard", str(tmp_path / "no-such-model"), "--diarization-model", "none"])
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # it never gets ready: wait until it listens
            try:
                live = server.http.get("/live")
                break
            except httpx.TransportError:
                time.sleep(0.2)
        while live.status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.5)
            live = server.http.get("/live")
        assert live.status_code == 503
        body = live.json()
        assert body["live"] is False and "failed to load its models" in body["reason"]
        assert server.http.get("/ready").status_code == 503
        assert "respawning in" in server.log()  # with a growing backoff, not a tight loop
    finally:
        assert server.stop() == 0
