"""Cluster mode end to end: two `chorus serve` workers (one engine each) on one PostgreSQL database
and one SeaweedFS bucket, real audio, real engines (issue 13)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import signal
import time

import httpx
import pytest
from speechmatics.batch import AsyncClient, JobStatus

from tests.cluster.cluster_workers import LEASE_SECONDS, Cluster, running_on, wait_for
from tests.system import testdata
from tests.system.chorus_server import text

CONFIG = {"type": "transcription", "transcription_config": {"language": "en"}}


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    """A short clip, and a recording long enough (about 10-20 s on one engine) to be caught running."""
    folder = tmp_path_factory.mktemp("cluster-audio")
    short, short_text = testdata.prompt("agent-pass")
    long, _ = testdata.long_recording(150)
    # Opus (about 0.5 MB): 30 concurrent uploads, most of them refused before their body is read.
    return (testdata.write_wav(short, folder / "short.wav"), short_text,
            testdata.encode(long, folder / "long.ogg", "ogg"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, postgres_url, s3_bucket):
    cluster = Cluster(tmp_path_factory.mktemp("cluster"), postgres_url, s3_bucket)
    try:
        cluster.start("a", "b")
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def idle(cluster):
    for name in ("a", "b"):  # a test that stopped a worker leaves it to be started again
        if name not in cluster.workers or cluster[name].process.poll() is not None:
            cluster.stop(name)
            cluster.start(name)
    cluster.wait_idle()
    yield cluster
    cluster.wait_idle(timeout=300)


def submit(server, path, processing=None) -> str:
    response = server.submit(path, CONFIG, processing)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def started(server, job_id: str) -> str:
    """Wait until the job runs somewhere; the worker's id."""
    return wait_for(lambda: running_on(server, job_id), 60, what=f"job {job_id} running")


def test_submit_on_one_worker_read_on_the_other(idle, audio):
    a, b = idle["a"], idle["b"]
    short, reference, _ = audio
    job_id = submit(a, short)
    waited = b.http.get(f"/v2/jobs/{job_id}", params={"wait": 120}, timeout=130).json()["job"]
    assert waited["status"] == "done", waited  # B's long-poll woke when the job ended
    for fmt in ("json-v2", "txt", "srt"):
        on_a = a.http.get(f"/v2/jobs/{job_id}/transcript", params={"format": fmt})
        on_b = b.http.get(f"/v2/jobs/{job_id}/transcript", params={"format": fmt})
        assert on_a.status_code == on_b.status_code == 200 and on_a.content == on_b.content
    assert "password" in text(b.http.get(f"/v2/jobs/{job_id}/transcript").json()).lower()
    assert a.http.get(f"/v2/jobs/{job_id}").json() == b.http.get(f"/v2/jobs/{job_id}").json()
    log = b.http.get(f"/v2/jobs/{job_id}/log").text
    assert f"received job {job_id} on worker a" in log and "job done" in log
    assert job_id in [j["id"] for j in b.http.get("/v2/jobs").json()["jobs"]]
    assert b.http.get(f"/v2/jobs/{job_id}/progress").json()["status"] == "done"
    assert b.http.get("/v2/jobs/nope").status_code == 404


def test_a_full_worker_places_the_next_job_on_another(idle, audio):
    a, b = idle["a"], idle["b"]
    _, _, long = audio
    first = submit(a, long)
    assert started(a, first) == "a"
    second = submit(a, long)  # accepted through A, which is full: it runs on B
    assert started(b, second) == "b"
    while_running = b.http.get(f"/v2/jobs/{second}/progress").json()
    assert while_running["status"] == "running"
    for job_id in (first, second):
        assert b.wait(job_id, timeout=300)["status"] == "done"
    assert "placed on worker b" in a.http.get(f"/v2/jobs/{second}/log").text


def test_a_full_cluster_answers_the_same_503_everywhere(idle, audio):
    a, b = idle["a"], idle["b"]
    _, _, long = audio
    jobs = [submit(a, long), submit(b, long)]
    refused = [a.submit(long, CONFIG), b.submit(long, CONFIG)]
    assert [r.status_code for r in refused] == [503, 503]
    assert refused[0].json() == refused[1].json()
    assert refused[0].json()["detail"].startswith("Server busy: ")
    capacity = [a.http.get("/jobs").json(), b.http.get("/jobs").json()]
    assert capacity[0] == capacity[1]
    assert sorted(j["job_id"] for j in capacity[0]["active_jobs"]) == sorted(jobs)
    assert capacity[0]["unused_engines"] == 0 and capacity[0]["max_engines"] == 1
    assert sorted(w["id"] for w in capacity[0]["workers"]) == ["a", "b"]
    for job_id in jobs:
        a.wait(job_id, timeout=300)


def test_concurrent_submissions_never_over_admit(idle, audio):
    a, b = idle["a"], idle["b"]
    _, _, long = audio

    def post(i: int) -> httpx.Response:
        server = (a, b)[i % 2]
        with httpx.Client(base_url=server.url, timeout=120) as client:
            return server.submit(long, CONFIG, client=client)

    with concurrent.futures.ThreadPoolExecutor(30) as pool:
        answers = list(pool.map(post, range(30)))
    admitted = [r.json()["id"] for r in answers if r.status_code == 201]
    assert len(admitted) == 2, [r.status_code for r in answers]  # two engines in the cluster
    assert {r.status_code for r in answers} == {201, 503}
    for job_id in admitted:
        assert a.wait(job_id, timeout=300)["status"] == "done"


def test_force_delete_through_another_worker_frees_the_engine(idle, audio):
    a, b = idle["a"], idle["b"]
    _, _, long = audio
    job_id = submit(a, long)
    assert started(a, job_id) == "a"
    deleted = b.http.delete(f"/v2/jobs/{job_id}", params={"force": "true"})
    assert deleted.status_code == 200 and deleted.json()["job"]["status"] == "deleted"
    asked = time.monotonic()
    wait_for(lambda: not a.http.get("/jobs").json()["active_jobs"], 10, 0.05, "engines free")
    assert time.monotonic() - asked <= 2.0
    assert a.http.get(f"/v2/jobs/{job_id}").json()["job"]["status"] == "deleted"


def test_official_client_against_each_worker(idle, audio):
    short, reference, _ = audio

    async def transcribe(url: str):
        async with AsyncClient(url=f"{url}/v2", api_key="x") as client:
            result = await client.transcribe(str(short), parallel_engines=1)
            jobs = await client.list_jobs(limit=10)
            return result, jobs

    for name in ("a", "b"):
        result, jobs = asyncio.run(transcribe(idle[name].url))
        assert "password" in result.transcript_text.lower()
        assert {j.id: j.status for j in jobs}[result.job.id] == JobStatus.DONE


def test_a_killed_workers_job_is_finished_by_another(idle, audio):
    a, b = idle["a"], idle["b"]
    _, _, long = audio
    job_id = submit(a, long)
    assert started(a, job_id) == "a"
    idle.kill("a", signal.SIGKILL)
    killed = time.monotonic()
    assert wait_for(lambda: running_on(b, job_id) == "b", LEASE_SECONDS + 15, 0.2, "takeover")
    assert time.monotonic() - killed <= LEASE_SECONDS + 5 + 3  # lease, a heartbeat period, a slow machine
    job = b.wait(job_id, timeout=300)
    assert job["status"] == "done", job
    log = b.http.get(f"/v2/jobs/{job_id}/log").text
    assert "attempt 2 on worker b" in log
    assert "password" in text(b.http.get(f"/v2/jobs/{job_id}/transcript").json()).lower() or \
        len(text(b.http.get(f"/v2/jobs/{job_id}/transcript").json())) > 500


def test_a_paused_worker_cannot_overwrite_the_rerun(idle, audio):
    a, b = idle["a"], idle["b"]
    _, _, long = audio
    job_id = submit(a, long)
    assert started(a, job_id) == "a"
    a.process.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: running_on(b, job_id) == "b", LEASE_SECONDS + 20, 0.2, "takeover")
        assert b.wait(job_id, timeout=300)["status"] == "done"
        transcript = b.http.get(f"/v2/jobs/{job_id}/transcript").content
    finally:
        a.process.send_signal(signal.SIGCONT)
    # A comes back: its attempt 1 is refused (or dropped when A learns it was taken for dead).
    wait_for(lambda: any(s in b.http.get(f"/v2/jobs/{job_id}/log").text
                         for s in ("superseded by attempt 2", "no longer the job's current one")),
             60, 0.5, "the late attempt stopped or refused")
    time.sleep(2)
    assert b.http.get(f"/v2/jobs/{job_id}").json()["job"]["status"] == "done"
    assert b.http.get(f"/v2/jobs/{job_id}/transcript").content == transcript
    assert a.http.get(f"/v2/jobs/{job_id}/transcript").content == transcript
    wait_for(lambda: a.http.get("/ready").status_code == 200, 60, 0.5, "A ready again")


def test_sigterm_hands_a_running_job_over(idle, audio):
    a, b = idle["a"], idle["b"]
    _, _, long = audio
    job_id = submit(a, long)
    assert started(a, job_id) == "a"
    a.process.send_signal(signal.SIGTERM)
    assert wait_for(lambda: running_on(b, job_id) == "b", 30, 0.2, "hand-over")
    assert a.process.wait(60) == 0
    job = b.wait(job_id, timeout=300)
    assert job["status"] == "done", job
    log = b.http.get(f"/v2/jobs/{job_id}/log").text
    assert "handed over to another worker" in log and "attempt 2 on worker b" in log
    assert json.loads(b.http.get("/jobs").text)["workers"][0]["id"] == "b"


def log_time(server, job_id: str, needle: str) -> str:
    """The timestamp of the job log's first line containing `needle`."""
    return next(line[:23] for line in server.http.get(f"/v2/jobs/{job_id}/log").text.splitlines() if needle in line)


def test_a_cluster_wide_queue_in_arrival_order_and_history(tmp_path_factory, postgres_url, s3_bucket, audio):
    """--queue-size queues across workers, in arrival order; the history bound holds cluster-wide."""
    short, _, long = audio
    cluster = Cluster(tmp_path_factory.mktemp("cluster-queue"), postgres_url, s3_bucket,
                      args=["--queue-size", "2"], env={"SM_BATCH_WORKER_MAX_JOB_HISTORY": "3"})
    try:
        c, d = cluster.start("c", "d")
        busy = [submit(c, long), submit(d, long)]
        queued = [submit(c, short), submit(d, short)]
        refused = c.submit(short, CONFIG)
        assert refused.status_code == 503 and refused.json()["detail"].startswith("Server busy: ")
        for server in (c, d):
            capacity = server.http.get("/jobs").json()
            assert [j["job_id"] for j in capacity["queued_jobs"]] == queued
        for job_id in busy + queued:
            assert c.wait(job_id, timeout=300)["status"] == "done"
        assert log_time(d, queued[0], "running on worker") <= log_time(d, queued[1], "running on worker")
        # Four finished, three kept: the oldest is forgotten everywhere.
        for server in (c, d):
            assert server.http.get(f"/v2/jobs/{busy[0]}").status_code == 410
            assert server.http.get(f"/v2/jobs/{queued[1]}").status_code == 200
    finally:
        cluster.close()
