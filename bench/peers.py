"""Chorus side by side with its peers on the same 20 mixed real-speech jobs (5 s to 3 min).

Peers are installed from PyPI at benchmark time, pinned, each into its own venv under
.cache/peers/, all on the same faster-whisper and CTranslate2 as Chorus:
  - faster-whisper-server (OpenAI-compatible HTTP server), over HTTP;
  - wyoming-faster-whisper (Home Assistant's Wyoming server), with the `wyoming` client;
  - WhisperX's batched pipeline, as an in-process library baseline.
Same model (tiny.en, CTranslate2), compute type (int8), cores (all of them), beam size (5),
language (en) and VAD on (Silero; WhisperX its bundled pyannote VAD). The servers get the jobs from
`--concurrency` clients at once, in the same order; WhisperX, a library, one call at a time.
Usage: python -m bench.peers [--runs 3] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import httpx

from engine import embedded

from bench.common import RESULTS, ROOT, cpu_steal_percent, machine, write_section
from bench.plots import figure, label_bars, save
from bench.workload import DURATIONS, Job, Run, chorus_runs, median_run, mixed_jobs, passes, push, summary
from tests.system.chorus_server import free_port

SAME_ENGINE = ["faster-whisper==1.2.1", "ctranslate2==4.8.5"]
PEERS = {
    "faster-whisper-server": ["faster-whisper-server==0.0.3"],
    "wyoming-faster-whisper": ["wyoming-faster-whisper==3.8.1", "wyoming==1.10.2"],
    "whisperx": ["whisperx==3.8.6"],
}
VENVS = ROOT / ".cache" / "peers"
CLIENTS = Path(__file__).resolve().parent / "peer_clients"
SAVED = RESULTS / "peers.json"
THREADS = len(os.sched_getaffinity(0))


def peer_bin(name: str) -> Path:
    """The peer's venv bin folder, installing it (pinned) on first use."""
    pins = PEERS[name] + SAME_ENGINE
    folder = VENVS / name
    marker = folder / f".installed-{hashlib.sha1(' '.join(pins).encode()).hexdigest()[:12]}"
    if not marker.exists():
        print(f"installing {name} into {folder} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(folder)], check=True)
        with open(folder / "install.log", "wb") as log:
            subprocess.run([str(folder / "bin" / "pip"), "install", *pins], check=True, stdout=log, stderr=log)
        marker.touch()
    return folder / "bin"


@contextmanager
def serving(cmd: list[str], log: Path, ready: Callable[[], bool], timeout: float = 300) -> Iterator[None]:
    """A peer server process, up (ready() true) for the block's duration, then stopped."""
    with open(log, "wb") as out, subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT) as process:
        try:
            deadline = time.monotonic() + timeout
            while not ready():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{cmd[0]} not ready (exit {process.poll()}):\n{log.read_text()[-3000:]}")
                time.sleep(0.3)
            yield
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def listening(port: int) -> Callable[[], bool]:
    def ready() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    return ready


class LineClient:
    """A client process in a peer's venv: a WAV path per line in, {"text": ...} per line out."""

    def __init__(self, cmd: list[str], log: Path) -> None:
        self.log = open(log, "ab")
        self.process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)

    def read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"client exited {self.process.wait()}")
        return json.loads(line)

    def transcribe(self, job: Job) -> str:
        self.process.stdin.write(f"{job.path}\n")
        self.process.stdin.flush()
        return self.read()["text"]

    def close(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def bench_faster_whisper_server(jobs: list[Job], concurrency: int, runs: int, work: Path,
                                batch_size: int = 1, workers: int = 1) -> list[Run]:
    bin_ = peer_bin("faster-whisper-server")
    config = work / "fws.yaml"
    config.write_text(json.dumps({"models": [{  # JSON is YAML
        "name": "tiny.en", "path": str(embedded.standard_path()), "batch_size": batch_size,
        "model_options": {"device": "cpu", "compute_type": "int8", "cpu_threads": max(1, THREADS // workers)},
        "transcribe_options": {"beam_size": 5, "language": "en", "vad_filter": True},
    }]}))
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def transcribe(job: Job) -> str:
        with open(job.path, "rb") as f:
            response = httpx.post(f"{url}/v1/audio/transcriptions", timeout=600,
                                  data={"model_name": "tiny.en", "response_format": "json"},
                                  files={"file": (job.path.name, f, "audio/wav")})
        response.raise_for_status()
        return response.json()["text"]

    with serving([str(bin_ / "faster-whisper-server"), "--config", str(config), "--host", "127.0.0.1",
                  "--port", str(port), "--workers", str(workers)], work / "fws.log", listening(port)):
        if workers > 1:  # each worker loads its model on its first request: warm them all
            push(jobs[:2 * workers], workers, transcribe)
        return passes(jobs, concurrency, runs, transcribe)


def bench_wyoming(jobs: list[Job], concurrency: int, runs: int, work: Path) -> list[Run]:
    bin_ = peer_bin("wyoming-faster-whisper")
    port = free_port()
    free: list[LineClient] = []

    def transcribe(job: Job) -> str:
        client = free.pop()  # one client process per concurrent caller (list.pop is atomic)
        try:
            return client.transcribe(job)
        finally:
            free.append(client)

    with serving([
        str(bin_ / "wyoming-faster-whisper"), "--uri", f"tcp://127.0.0.1:{port}",
        "--model", str(embedded.standard_path()), "--data-dir", str(work / "wyoming-data"), "--local-files-only",
        "--device", "cpu", "--compute-type", "int8", "--cpu-threads", str(THREADS), "--beam-size", "5",
        "--language", "en", "--vad-filter",
    ], work / "wyoming.log", listening(port)):
        clients = [LineClient([str(bin_ / "python"), str(CLIENTS / "wyoming_client.py"), str(port)],
                              work / "wyoming-client.log") for _ in range(concurrency)]
        free.extend(clients)
        try:
            return passes(jobs, concurrency, runs, transcribe)
        finally:
            for client in clients:
                client.close()


def bench_whisperx(jobs: list[Job], runs: int, work: Path, batch_size: int) -> list[Run]:
    bin_ = peer_bin("whisperx")
    client = LineClient([str(bin_ / "python"), str(CLIENTS / "whisperx_client.py"), str(embedded.standard_path()),
                         str(THREADS), str(batch_size)], work / "whisperx.log")
    try:
        client.read()  # {"ready": true} once the model and VAD are loaded
        return passes(jobs, 1, runs, client.transcribe)
    finally:
        client.close()


def measured(results: dict[str, tuple[str, int, list[Run]]], jobs: list[Job], runs: int) -> dict:
    """What the section is drawn from, kept in docs/bench/peers.json so it can be redrawn."""
    return {
        "machine": machine(), "runs": runs, "threads": THREADS, "steal": cpu_steal_percent(),
        "jobs": [j.seconds for j in jobs],
        "systems": {name: {"how": how, "clients": clients, "median": summary(median_run(system_runs)),
                           "walls": sorted(r.wall for r in system_runs), "steal": cpu_steal_percent()}
                    for name, (how, clients, system_runs) in results.items()},
    }


def render(data: dict) -> str:
    systems, jobs, runs = data["systems"], data["jobs"], data["runs"]
    ours = {name: v["median"]["throughput"] for name, v in systems.items() if name.startswith("Chorus")}
    rows = []
    for name, v in systems.items():
        s, walls = v["median"], v["walls"]
        ratios = ["—" if name.startswith("Chorus") else f"{rate / s['throughput']:.2f}×" for rate in ours.values()]
        rows.append([f"**{name}**" if name.startswith("Chorus") else name, v["how"], v["clients"],
                     f"{s['wall']:.1f} ({walls[0]:.1f}–{walls[-1]:.1f})", f"{s['throughput']:.1f}",
                     f"{s['p50']:.2f}", f"{s['p95']:.2f}", f"{s['wer']:.2f}", *ratios])
    names = [n.replace("faster-whisper-server", "fw-server").replace("wyoming-faster-whisper", "wyoming")
             .replace(" ", "\n") for n in systems]
    median = [v["median"] for v in systems.values()]
    audio = sum(jobs)
    facts = (f"tiny.en (CTranslate2), CPU int8, beam 5, VAD; {len(jobs)} jobs, {audio / 60:.1f} min of audio; "
             f"median of {runs} runs")
    fig, (left, right) = figure(10, 4, ncols=2)
    colors = ["#2a6f97" if n.startswith("Chorus") else "#a3a3a3" for n in systems]
    x = range(len(names))
    label_bars(left, left.bar(x, [s["throughput"] for s in median], color=colors), "{:.0f}")
    left.set_ylabel("audio hours per hour (higher is better)")
    left.set_title("throughput", fontsize=9)
    label_bars(right, right.bar([i - 0.2 for i in x], [s["p50"] for s in median], 0.4, label="p50",
                                color="#6c9a8b"), "{:.1f}")
    label_bars(right, right.bar([i + 0.2 for i in x], [s["p95"] for s in median], 0.4, label="p95",
                                color="#e07a5f"), "{:.1f}")
    right.set_ylabel("seconds per job (lower is better)")
    right.set_title("per-job latency", fontsize=9)
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.set_xticks(list(x), names)
        ax.tick_params(axis="x", labelsize=7)
    image = save(fig, "peers", "Chorus vs peers, same jobs and cores", facts, data["machine"])
    later = [f"{name} ({v['separately']}, {v['steal']:.1f} % CPU steal)" for name, v in systems.items()
             if "separately" in v]
    remeasured = f"\nRe-measured separately: {'; '.join(later)}.\n" if later else ""
    threads = data["threads"]
    return f"""## Chorus vs peers (bench/peers.py)

{data["machine"]}. {len(jobs)} real-speech jobs from {min(jobs):.0f} s to
{max(jobs):.0f} s ({audio / 60:.1f} min in all; LibriVox clips and Asterisk prompts in a
different order per job, with natural pauses), pushed through each system in the same order.
All on faster-whisper 1.2.1 / CTranslate2 4.8.5 with tiny.en, CPU int8, beam 5, English, VAD on
(Silero; WhisperX uses its own pyannote VAD), and every core ({threads}). Peers installed from PyPI into their
own venvs at benchmark time. Chorus also computes word timings (its json-v2 needs them); the
servers return text only. Wall time is the median of {runs} passes (range in brackets); latency
is from a job's first request to its transcript; WER is over all {len(jobs)} jobs (numbers spelled out,
case and punctuation ignored). Ratio: Chorus throughput over the peer's; target ≥ 1.5× the
server peers at equal or better WER.
{remeasured}
{image}

| system | how it ran | clients | wall s | audio h/h | p50 s | p95 s | WER % | {" | ".join(f"{n} ÷ peer" for n in ours)} |
|---|---|---|---|---|---|---|---|{"---|" * len(ours)}
{chr(10).join("| " + " | ".join(str(c) for c in row) + " |" for row in rows)}
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=THREADS)
    parser.add_argument("--batch-size", type=int, default=8, help="for the batched runs (faster-whisper's default)")
    parser.add_argument("--only", nargs="*", default=None, help="systems to run (default: all)")
    parser.add_argument("--jobs", type=int, default=len(DURATIONS), help="the first N jobs only (smoke runs)")
    parser.add_argument("--update", action="store_true",
                        help="with --only: replace those systems in docs/bench/peers.json, keep the others")
    parser.add_argument("--redraw", action="store_true", help="redraw the section from docs/bench/peers.json")
    args = parser.parse_args()
    if args.redraw:
        data = json.loads(SAVED.read_text())
        write_section("peers", render(data), data["steal"])
        return
    work = Path(tempfile.mkdtemp(prefix="chorus-bench-peers-"))
    jobs = mixed_jobs(work / "audio")[:args.jobs]
    c = args.concurrency
    b = args.batch_size
    systems = {
        "Chorus": (f"`--parallel {c}`, {THREADS // c or 1} thread(s) per engine", c,
                   lambda: chorus_runs(jobs, work, c, args.runs)),
        "Chorus batched": (f"`--parallel {c} --batch-size {b}`", c,
                           lambda: chorus_runs(jobs, work, c, args.runs, b)),
        "faster-whisper-server workers": (f"`--workers {c}`, {THREADS // c or 1} thread(s) each", c,
                                          lambda: bench_faster_whisper_server(jobs, c, args.runs, work, workers=c)),
        "faster-whisper-server": (f"one process, {THREADS} threads", c,
                                  lambda: bench_faster_whisper_server(jobs, c, args.runs, work)),
        "faster-whisper-server batched": (f"one process, {THREADS} threads, `batch_size: {b}`", c,
                                          lambda: bench_faster_whisper_server(jobs, c, args.runs, work, b)),
        "wyoming-faster-whisper": (f"one process, {THREADS} threads", c,
                                   lambda: bench_wyoming(jobs, c, args.runs, work)),
        "WhisperX": (f"library, batch {b}, {THREADS} threads", 1,
                     lambda: bench_whisperx(jobs, args.runs, work, b)),
    }
    results = {}
    for name, (how, clients, run) in systems.items():
        if args.only and name not in args.only:
            continue
        print(f"== {name}", flush=True)
        results[name] = (how, clients, run())
        s = summary(median_run(results[name][2]))
        print({k: round(v, 2) for k, v in s.items()}, flush=True)
    data = measured(results, jobs, args.runs)
    if args.update and SAVED.exists():  # keep the systems not measured this time, in their order
        saved = json.loads(SAVED.read_text())
        for fresh in data["systems"].values():
            fresh["separately"] = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
        data["systems"] = {**saved["systems"], **data["systems"]}
        data["machine"], data["steal"] = saved["machine"], saved["steal"]
    SAVED.write_text(json.dumps(data, indent=1))
    write_section("peers", render(data), data["steal"])


if __name__ == "__main__":
    main()
