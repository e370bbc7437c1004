"""The real server in a subprocess (`chorus serve` under Hypercorn), and a small HTTP helper."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]  # the repository
CHORUS = [sys.executable, "-m", "gateway.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ChorusServer:
    def __init__(self, output: Path, parallel: int = 2, args: list[str] | None = None,
                 env: dict[str, str] | None = None, port: int | None = None) -> None:
        self.output = output
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [*CHORUS, "serve", "--run-mode", "http", "--parallel", str(parallel),
               "--all-formats", str(output), "--host", "127.0.0.1", *(args or [])]
        # The robustness matrix (docs/testing.md): the same tests at 1 and 2 threads per engine.
        if os.environ.get("CHORUS_TEST_THREADS") and "--threads-per-engine" not in cmd:
            cmd += ["--threads-per-engine", os.environ["CHORUS_TEST_THREADS"]]
        if not (env and "SM_BATCH_WORKER_LISTEN_PORT" in env):
            cmd += ["--port", str(self.port)]
        self.log_path = output.parent / f"server-{self.port}.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            cmd, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self.http = httpx.Client(base_url=self.url, timeout=60)

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited {self.process.returncode}:\n{self.log()}")
            try:
                if self.http.get("/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not ready in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.http.close()
        self._log.close()
        return self.process.returncode

    # ---- job helpers -------------------------------------------------------------------

    def submit(self, audio: Path, config: dict | None = None, processing: dict | None = None,
               client: httpx.Client | None = None) -> httpx.Response:
        config = config or {"type": "transcription", "transcription_config": {"language": "en"}}
        headers = {"X-SM-Processing-Data": json.dumps(processing)} if processing else {}
        with open(audio, "rb") as f:
            return (client or self.http).post(
                "/v2/jobs", headers=headers,
                data={"config": json.dumps(config)}, files={"data_file": (audio.name, f)},
            )

    def wait(self, job_id: str, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.http.get(f"/v2/jobs/{job_id}").json()["job"]
            if job["status"] != "running":
                return job
            time.sleep(0.1)
        raise TimeoutError(f"job {job_id} still running after {timeout} s")

    def transcribe(self, audio: Path, config: dict | None = None, processing: dict | None = None) -> dict:
        """Submit, wait for done, and return the json-v2 transcript."""
        response = self.submit(audio, config, processing)
        assert response.status_code == 201, response.text
        job = self.wait(response.json()["id"])
        assert job["status"] == "done", job
        return self.http.get(f"/v2/jobs/{job['id']}/transcript").json()

    def wait_idle(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.http.get("/jobs").json()["active_jobs"]:
                return
            time.sleep(0.1)
        raise TimeoutError("jobs still active")


def engine_pids(server: ChorusServer) -> set[int]:
    """The gateway's spawned engine processes (not multiprocessing's resource tracker)."""
    import psutil

    return {p.pid for p in psutil.Process(server.process.pid).children()
            if any("spawn_main" in part for part in p.cmdline())}


def words(transcript: dict) -> list[str]:
    return [r["alternatives"][0]["content"] for r in transcript["results"] if r["type"] == "word"]


def text(transcript: dict) -> str:
    return " ".join(words(transcript))


def tasks_of(server: ChorusServer, job_id: str) -> list[dict]:
    """The job's engine tasks as the progress route reports them: span, cuts, engine, pid."""
    return server.http.get(f"/v2/jobs/{job_id}/progress").json()["tasks"]


def pid_of_task(server: ChorusServer, job_id: str, task: str, occurrence: int = 1, timeout: float = 120) -> int:
    """The pid of the engine that took `task` (e.g. "segment 1") the n-th time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for t in tasks_of(server, job_id):
            if (t["name"] == task or t["name"].startswith(task + " (")) and t["attempts"] >= occurrence:
                return t["pid"]
        time.sleep(0.05)
    raise AssertionError(f"{task} was not handed to an engine {occurrence} time(s)")
