"""Several `chorus serve` processes in cluster mode, on one throwaway PostgreSQL database and one
SeaweedFS bucket prefix: the tests' handle on them."""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

import httpx

from tests.cluster.postgres_server import create_database, drop_database
from tests.system.chorus_server import ChorusServer

LEASE_SECONDS = 4  # short, so that takeovers happen within a test (heartbeats every lease / 3)
DRAIN_SECONDS = 3


class Cluster:
    def __init__(self, work: Path, postgres_url: str, bucket, engines: int = 1, args: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.work = work
        self.postgres_url = postgres_url
        self.database_url = create_database(postgres_url)
        self.object_store = bucket.url(f"cluster-{uuid.uuid4().hex[:8]}")
        self.env = {"AWS_ENDPOINT_URL": bucket.endpoint_url, "AWS_ACCESS_KEY_ID": bucket.access_key,
                    "AWS_SECRET_ACCESS_KEY": bucket.secret_key, "AWS_REGION": bucket.region, **(env or {})}
        self.engines = engines
        self.args = args or []
        self.workers: dict[str, ChorusServer] = {}

    def start(self, *names: str) -> list[ChorusServer]:
        """Start the named workers together and wait until each is ready."""
        for name in names:
            (self.work / name).mkdir(parents=True, exist_ok=True)
            self.workers[name] = ChorusServer(
                self.work / name / "jobs", parallel=self.engines, env=self.env,
                args=["--database-url", self.database_url, "--object-store", self.object_store,
                      "--worker-id", name, "--lease-seconds", str(LEASE_SECONDS),
                      "--drain-timeout", str(DRAIN_SECONDS), "--diarization-model", "none",
                      "--threads-per-engine", "1", *self.args])
        for name in names:
            self.workers[name].wait_ready()
        return [self.workers[n] for n in names]

    def __getitem__(self, name: str) -> ChorusServer:
        return self.workers[name]

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        self.workers[name].process.send_signal(sig)
        if sig in (signal.SIGKILL,):
            self.workers[name].process.wait(30)

    def restart(self, name: str) -> ChorusServer:
        self.stop(name)
        return self.start(name)[0]

    def stop(self, name: str) -> None:
        server = self.workers.pop(name, None)
        if server is not None:
            if server.process.poll() is None:
                server.process.send_signal(signal.SIGCONT)  # in case a test left it stopped
            server.stop()

    def close(self) -> None:
        for name in list(self.workers):
            self.stop(name)
        drop_database(self.postgres_url, self.database_url)

    def wait_idle(self, timeout: float = 120) -> None:
        """No job holds or waits for engines anywhere in the cluster."""
        server = next(w for w in self.workers.values() if w.process.poll() is None)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            capacity = server.http.get("/jobs").json()
            if not capacity["active_jobs"] and not capacity.get("queued_jobs"):
                return
            time.sleep(0.2)
        raise TimeoutError(f"cluster still busy: {capacity}")


def wait_for(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except httpx.TransportError:
            value = None
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not met in {timeout} s")


def running_on(server: ChorusServer, job_id: str) -> str | None:
    """The worker that holds the job's engines, from GET /jobs's per-worker breakdown and its log."""
    log = server.http.get(f"/v2/jobs/{job_id}/log").text
    names = [line.split("on worker ")[1].split()[0].rstrip(":;,") for line in log.splitlines()
             if "running on worker " in line or ("attempt " in line and " on worker " in line)]
    return names[-1] if names else None
