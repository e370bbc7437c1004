"""The mixed job set the throughput and peer benchmarks push through every system, and the
client that pushes it: jobs from a shared queue, `concurrency` at a time, each timed from
its first request to its transcript."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from bench.common import ChorusServer, testdata
from tests.system.speech import wer

# 20 lengths from 5 s to 3 min, evenly spaced on a log scale: a batch service sees many
# short files and a few long ones.
DURATIONS = [float(round(d)) for d in np.geomspace(5, 180, 20)]


@dataclass(frozen=True)
class Job:
    path: Path
    seconds: float
    reference: str


@dataclass(frozen=True)
class Done:
    job: Job
    latency: float
    text: str


@dataclass(frozen=True)
class Run:
    """One pass of the whole job set through one system."""

    wall: float
    done: list[Done]

    @property
    def audio_seconds(self) -> float:
        return sum(d.job.seconds for d in self.done)

    @property
    def throughput(self) -> float:
        """Audio hours transcribed per wall-clock hour."""
        return self.audio_seconds / self.wall

    def latency(self, q: float) -> float:
        return float(np.percentile([d.latency for d in self.done], q))

    @property
    def wer(self) -> float:
        """Corpus WER in %: all references against all hypotheses, in job order."""
        ordered = sorted(self.done, key=lambda d: str(d.job.path))
        return 100 * wer(" ".join(d.job.reference for d in ordered), " ".join(d.text for d in ordered))


def mixed_jobs(folder: Path, durations: list[float] = DURATIONS) -> list[Job]:
    """Real speech (LibriVox clips and Asterisk prompts in a shuffled order per job, with
    natural pauses), one WAV per duration; each runs to the end of its last utterance."""
    folder.mkdir(parents=True, exist_ok=True)
    jobs = []
    for i, seconds in enumerate(durations):
        samples, reference = testdata.long_recording(seconds, seed=100 + i, shuffled=True)
        path = testdata.write_wav(samples, folder / f"job{i:02d}-{seconds:.0f}s.wav")
        jobs.append(Job(path, samples.size / testdata.RATE, reference))
    return jobs


def push(jobs: list[Job], concurrency: int, transcribe: Callable[[Job], str]) -> Run:
    """Every job through `transcribe` with `concurrency` clients; longest first is not
    assumed: jobs go in the order given, as they would arrive."""
    def one(job: Job) -> Done:
        started = time.perf_counter()
        text = transcribe(job)
        return Done(job, time.perf_counter() - started, text)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        done = list(pool.map(one, jobs))
    return Run(time.perf_counter() - started, done)


def passes(jobs: list[Job], concurrency: int, runs: int, transcribe: Callable[[Job], str]) -> list[Run]:
    transcribe(jobs[0])  # warm-up, untimed: lazy model loads and first-call allocations
    return [push(jobs, concurrency, transcribe) for _ in range(runs)]


def chorus_runs(jobs: list[Job], work: Path, parallel: int, runs: int, batch_size: int = 1,
                device: str = "cpu", model: str = "standard") -> list[Run]:
    """`runs` passes through a fresh Chorus (`--parallel` engines, N clients for N engines)."""
    server = ChorusServer(work / f"jobs-{device}-{model}-{parallel}-{batch_size}", parallel=parallel,
                          args=["--device", device, "--batch-size", str(batch_size), "--diarization-model", "none"])
    try:
        server.wait_ready()
        return passes(jobs, parallel, runs, chorus_transcriber(server, model))
    finally:
        server.stop()


def median_run(runs: list[Run]) -> Run:
    """The run with the median wall time (its latencies and WER come with it); with an even
    count, the slower of the middle two."""
    return sorted(runs, key=lambda r: r.wall)[len(runs) // 2]


def chorus_transcriber(server: ChorusServer, model: str = "standard") -> Callable[[Job], str]:
    """Submit through the real HTTP API; a 503 (engines busy) is retried, as a client of a
    persistent worker must, so the wait counts in the job's latency."""
    config = {"type": "transcription", "transcription_config": {"language": "en", "operating_point": model}}

    def transcribe(job: Job) -> str:
        with httpx.Client(base_url=server.url, timeout=600) as client:
            while (response := server.submit(job.path, config, client=client)).status_code == 503:
                time.sleep(0.05)
            response.raise_for_status()
            job_id = response.json()["id"]
            transcript = client.get(f"/v2/jobs/{job_id}/transcript", params={"wait": 300, "format": "txt"})
            transcript.raise_for_status()
            return transcript.text

    return transcribe


def summary(run: Run) -> dict[str, float]:
    return {
        "wall": run.wall,
        "throughput": run.throughput,
        "p50": run.latency(50),
        "p95": run.latency(95),
        "wer": run.wer,
    }

