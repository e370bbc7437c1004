"""A worker no fault can wedge: hung engines are killed and replaced, a force DELETE or the drain
deadline stops a job in any step within seconds, and progress is reported while jobs run."""

from __future__ import annotations

import os
import signal
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

import testdata
from chorus_server import ChorusServer, engine_pids, pid_of_task, text
from speech import wer

# Short for the tests, yet longer than any one uninterruptible step: under CT2_FORCE_CPU_ISA=GENERIC
# a single window's decoding took over 3 s, and a 3 s timeout killed a healthy engine.
HANG_TIMEOUT = 6.0
# The watchdog looks every tenth of the timeout; the kill and the reaping take a moment more.
KILL_MARGIN = 3.0
FREE_WITHIN = 2.0  # engines are free again this soon after a force DELETE
EN = {"type": "transcription", "transcription_config": {"language": "en"}}
DIARIZED = {"type": "transcription", "transcription_config": {"language": "en", "diarization": "speaker"}}
# The overlap-aware operating point: its diarization is slow enough (windows every 2 s) to still be
# running when a 1 s drain deadline falls; the standard one may finish within it.
DIARIZED_SLOW = {"type": "transcription",
                 "transcription_config": {"language": "en", "model": "enhanced", "diarization": "speaker"}}


@pytest.fixture(scope="module")
def watched(tmp_path_factory, corpus):
    """`--parallel 2` with speaker models and a short hang timeout."""
    server = ChorusServer(tmp_path_factory.mktemp("watched") / "jobs", parallel=2,
                          args=["--hang-timeout", str(HANG_TIMEOUT)])
    try:
        server.wait_ready()
        yield server
    finally:
        assert server.stop() == 0, server.log()


@pytest.fixture
def idle_watched(watched):
    watched.wait_idle()
    watched.wait_ready()
    yield watched
    watched.wait_idle()


@pytest.fixture(scope="module")
def long_decode(audio_dir) -> Path:
    """Almost two hours at 8 kHz: written in a second, and its decoding (resampled to 16 kHz)
    takes seconds, long enough to delete the job while it decodes."""
    clip = testdata.decode(Path(testdata.write_wav(testdata.librivox()[0][0], audio_dir / "clip.wav")))[::2]
    samples = np.tile(clip, int(7000 * 8000 / clip.size) + 1)[: 7000 * 8000]
    path = audio_dir / "two-hours-8k.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes())
    return path


@pytest.fixture(scope="module")
def minute_and_a_half(audio_dir, long_speech) -> Path:
    """Three times the LibriVox reading: diarization takes several seconds on it."""
    samples = testdata.decode(long_speech[0])
    return testdata.write_wav(np.concatenate([samples] * 3), audio_dir / "librivox-x3.wav")


def progress(server: ChorusServer, job_id: str) -> dict:
    return server.http.get(f"/v2/jobs/{job_id}/progress").json()


def wait_for_step(server: ChorusServer, job_id: str, prefix: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = progress(server, job_id)
        assert p["status"] == "running", p
        if p["step"].startswith(prefix):
            return p
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} never reached step {prefix!r}")


def wait_for_exit(pid: int, timeout: float) -> float:
    """Seconds until process `pid` is gone (reaped or a zombie), or AssertionError."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return time.monotonic() - started
        except FileNotFoundError:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} still alive after {timeout} s")


def counter(server: ChorusServer, name: str) -> dict[str, float]:
    families = text_string_to_metric_families(server.http.get("/metrics").text)
    return {s.labels.get("engine", s.labels.get("job_id", "")): s.value
            for f in families if f.name == name for s in f.samples if not s.name.endswith("_created")}


def assert_all_free(server: ChorusServer, engines: int = 2) -> None:
    assert server.http.get("/jobs").json() == {"active_jobs": [], "max_engines": engines, "unused_engines": engines}


def seconds_until_free(server: ChorusServer, engines: int, timeout: float = 30) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if server.http.get("/jobs").json()["unused_engines"] == engines:
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"engines not free after {timeout} s: {server.http.get('/jobs').json()}")


# ---- hung engines ---------------------------------------------------------------------------


@pytest.mark.parametrize("step, task, config", [
    ("transcribing", "segment 0", EN),
    ("diarizing", "speaker diarization", DIARIZED),
])
def test_a_hung_engine_is_killed_replaced_and_its_task_retried(idle_watched, long_speech, speech, step, task, config):
    server = idle_watched
    hangs_before = sum(counter(server, "chorus_engine_hangs").values())
    job_id = server.submit(long_speech[0], config).json()["id"]
    wait_for_step(server, job_id, step)
    pid = pid_of_task(server, job_id, task)
    os.kill(pid, signal.SIGSTOP)  # as a stuck GPU kernel: alive, and silent
    assert wait_for_exit(pid, HANG_TIMEOUT + KILL_MARGIN + 5) <= HANG_TIMEOUT + KILL_MARGIN

    job = server.wait(job_id)
    assert job["status"] == "done" and job["errors"] == [], job
    log = server.http.get(f"/v2/jobs/{job_id}/log").text
    assert "hung (no progress for" in log and "retrying once" in log
    assert wer(long_speech[1], text(server.http.get(f"/v2/jobs/{job_id}/transcript").json())) <= 0.2
    assert_all_free(server)
    assert sum(counter(server, "chorus_engine_hangs").values()) == hangs_before + 1
    server.wait_ready()
    assert pid not in engine_pids(server)
    assert wer(speech[1], text(server.transcribe(speech[0]))) <= 0.1


def test_an_engine_that_keeps_hanging_fails_its_job_and_is_reported_on_live(tmp_path, corpus, long_speech, speech):
    server = ChorusServer(tmp_path / "jobs", parallel=1,
                          args=["--hang-timeout", str(HANG_TIMEOUT), "--diarization-model", "none"])
    try:
        server.wait_ready()
        # Hung twice: the job is rejected, saying the engine hung.
        job_id = server.submit(long_speech[0], EN).json()["id"]
        for occurrence in (1, 2):
            wait_for_step(server, job_id, "transcribing")
            pid = pid_of_task(server, job_id, "segment 0", occurrence=occurrence)
            os.kill(pid, signal.SIGSTOP)
            wait_for_exit(pid, HANG_TIMEOUT + KILL_MARGIN + 5)
        job = server.wait(job_id)
        assert job["status"] == "rejected"
        message = job["errors"][0]["message"]
        assert message.startswith("segment 0 (") and "engine 0 hung (no progress for" in message, message
        assert "after one retry" in message
        assert_all_free(server, 1)
        # A third hang in a row: /live says so, as for an engine that keeps dying.
        server.wait_ready()
        job_id = server.submit(long_speech[0], EN).json()["id"]
        wait_for_step(server, job_id, "transcribing")
        os.kill(pid_of_task(server, job_id, "segment 0"), signal.SIGSTOP)
        deadline = time.monotonic() + HANG_TIMEOUT + KILL_MARGIN + 5
        while server.http.get("/live").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        live = server.http.get("/live")
        assert live.status_code == 503 and "engine 0 hung 3 times in the last 600 s" in live.json()["reason"], live.text
        # Its retry works on the fresh engine, and the job is done; /live stays failing while the
        # three hangs are recent, so that Kubernetes restarts the pod.
        assert server.wait(job_id)["status"] == "done"
        assert server.http.get("/live").status_code == 503
        assert server.http.get("/ready").status_code == 200
        assert counter(server, "chorus_engine_hangs") == {"0": 3.0}
        assert wer(speech[1], text(server.transcribe(speech[0]))) <= 0.1
    finally:
        assert server.stop() == 0, server.log()


# ---- one cancellation path -----------------------------------------------------------------


def delete_and_time_it(server: ChorusServer, job_id: str) -> float:
    response = server.http.delete(f"/v2/jobs/{job_id}", params={"force": "true"})
    assert response.status_code == 200 and response.json()["job"]["status"] == "deleted"
    return seconds_until_free(server, 2)


def assert_nothing_left(server: ChorusServer, job_id: str) -> None:
    """No output for a deleted job: its folder goes, and its transcript is gone (410)."""
    deadline = time.monotonic() + 10
    while (server.output / job_id).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (server.output / job_id).exists()
    assert server.http.get(f"/v2/jobs/{job_id}/transcript").status_code == 410
    assert server.http.get(f"/v2/jobs/{job_id}").json()["job"]["status"] == "deleted"


def test_force_delete_while_decoding_a_long_file(idle_watched, long_decode, speech):
    server = idle_watched
    job_id = server.submit(long_decode, EN, processing={"parallel_engines": 2}).json()["id"]
    wait_for_step(server, job_id, "decoding")
    assert delete_and_time_it(server, job_id) <= FREE_WITHIN
    assert_nothing_left(server, job_id)
    assert wer(speech[1], text(server.transcribe(speech[0], processing={"parallel_engines": 2}))) <= 0.1


def test_force_delete_during_diarization_stops_the_task_queue(idle_watched, minute_and_a_half, speech):
    server = idle_watched
    # One engine: the diarization runs first, and the segment must never start after the delete.
    job_id = server.submit(minute_and_a_half, DIARIZED).json()["id"]
    wait_for_step(server, job_id, "diarizing: segmentation")
    log_before = server.http.get(f"/v2/jobs/{job_id}/log").text
    assert "segment 0" not in log_before
    assert delete_and_time_it(server, job_id) <= FREE_WITHIN
    assert_nothing_left(server, job_id)
    assert "Traceback" not in server.log()
    assert wer(speech[1], text(server.transcribe(speech[0]))) <= 0.1


def test_force_delete_during_transcription_with_progress(idle_watched, minute_and_a_half, speech):
    server = idle_watched
    job_id = server.submit(minute_and_a_half, EN, processing={"parallel_engines": 2}).json()["id"]
    seen = [wait_for_step(server, job_id, "transcribing")]
    while seen[-1]["progress"] == 0:
        seen.append(progress(server, job_id))
        assert seen[-1]["status"] == "running"
        time.sleep(0.05)
    # Progress covers the job's two segments: it only grows, and the metrics show it too.
    assert seen[-1]["audio_seconds_total"] == pytest.approx(testdata.decode(minute_and_a_half).size / 16000, abs=0.05)
    fractions = [p["progress"] for p in seen]
    assert fractions == sorted(fractions) and 0 < fractions[-1] < 1
    assert 0 < counter(server, "chorus_job_progress_ratio")[job_id] < 1
    assert delete_and_time_it(server, job_id) <= FREE_WITHIN
    assert_nothing_left(server, job_id)
    assert job_id not in counter(server, "chorus_job_progress_ratio")
    assert wer(speech[1], text(server.transcribe(speech[0], processing={"parallel_engines": 2}))) <= 0.1


def test_progress_of_a_finished_job_and_its_log(idle_watched, long_speech):
    server = idle_watched
    job_id = server.submit(long_speech[0], DIARIZED).json()["id"]
    assert server.wait(job_id)["status"] == "done"
    final = progress(server, job_id)
    duration = testdata.decode(long_speech[0]).size / 16000
    # Two tasks each cover the whole file: the diarization and the one ASR segment.
    tasks = final.pop("tasks")
    assert final == {"job_id": job_id, "status": "done", "step": "done", "progress": 1.0,
                     "audio_seconds_done": pytest.approx(2 * duration, abs=0.05),
                     "audio_seconds_total": pytest.approx(2 * duration, abs=0.05)}
    assert [(t["kind"], t["state"], t["attempts"]) for t in tasks] == [("diarization", "done", 1),
                                                                       ("transcription", "done", 1)]
    assert tasks[1]["start"] == 0 and tasks[1]["end"] == pytest.approx(duration, abs=0.01)
    assert tasks[1]["cut_before"] == "start" and tasks[1]["cut_after"] == "end"
    log = server.http.get(f"/v2/jobs/{job_id}/log").text
    assert "progress: 50% (" in log
    assert server.http.get("/v2/jobs/0123456789abcdef0123/progress").status_code == 404


def test_drain_deadline_mid_diarization_rejects_and_exits(tmp_path, corpus, minute_and_a_half):
    output = tmp_path / "jobs"
    server = ChorusServer(output, parallel=1, args=["--drain-timeout", "1"])
    restarted = None
    try:
        server.wait_ready()
        job_id = server.submit(minute_and_a_half, DIARIZED_SLOW).json()["id"]
        wait_for_step(server, job_id, "diarizing: ")
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(60) == 0
        assert time.monotonic() - started <= 1 + 6
        restarted = ChorusServer(output, parallel=1, args=["--diarization-model", "none"])
        restarted.wait_ready()
        job = restarted.http.get(f"/v2/jobs/{job_id}").json()["job"]
        assert job["status"] == "rejected" and "shut down" in job["errors"][0]["message"], job
        assert "segment 0" not in restarted.http.get(f"/v2/jobs/{job_id}/log").text
    finally:
        server.stop()
        if restarted is not None:
            assert restarted.stop() == 0
