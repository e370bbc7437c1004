"""Gateway responsiveness and memory: status-endpoint latency while every engine is busy,
and the RSS of the gateway and engines over many short jobs.

Usage: python -m bench.gateway [--requests 2000] [--jobs 500]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

from bench.common import ChorusServer, machine, table, testdata, write_section
from bench.plots import figure, save

LONG = {"type": "transcription", "transcription_config": {"language": "en", "model": "enhanced"}}
SHORT = {"type": "transcription", "transcription_config": {"language": "en"}}


def percentile(values: list[float], p: float) -> float:
    return float(np.percentile(values, p))


def latencies(server: ChorusServer, path: str, count: int) -> tuple[list[float], float]:
    times = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        started = time.perf_counter()
        for _ in range(count):
            t = time.perf_counter()
            client.get(path).raise_for_status()
            times.append(time.perf_counter() - t)
        wall = time.perf_counter() - started
    return times, count / wall


def rss(server: ChorusServer) -> tuple[float, float]:
    gateway = psutil.Process(server.process.pid)
    engines = [p for p in gateway.children() if any("spawn_main" in part for part in p.cmdline())]
    return gateway.memory_info().rss / 2**20, sum(p.memory_info().rss for p in engines) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=500)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="chorus-bench-gateway-"))
    long_samples, _ = testdata.long_recording(240)
    long_audio = testdata.write_wav(long_samples, work / "long.wav")
    short_audio = testdata.write_wav(testdata.prompt("auth-thankyou")[0], work / "short.wav")

    server = ChorusServer(work / "jobs", parallel=2, args=["--diarization-model", "none"])
    try:
        server.wait_ready()
        # Every engine busy with a long job, then hammer the status endpoints.
        busy = [server.submit(long_audio, LONG).json()["id"] for _ in range(2)]
        assert server.http.get("/jobs").json()["unused_engines"] == 0
        rows, distributions = [], {}
        for path in ("/jobs", f"/v2/jobs/{busy[0]}"):
            times, rate = latencies(server, path, args.requests)
            distributions[f"GET {path.replace(busy[0], '{id}')}"] = sorted(t * 1000 for t in times)
            rows.append([f"`GET {path.replace(busy[0], '{id}')}`", f"{percentile(times, 50) * 1000:.2f}",
                         f"{percentile(times, 99) * 1000:.2f}", f"{max(times) * 1000:.1f}", f"{rate:.0f}"])
        still_busy = server.http.get("/jobs").json()["unused_engines"] == 0
        for job_id in busy:
            server.http.get(f"/v2/jobs/{job_id}", params={"wait": 300}, timeout=330)

        # Memory over many short jobs, two at a time (one per engine).
        samples: list[tuple[int, float, float]] = []
        done = 0
        lock = threading.Lock()

        def worker(n: int) -> None:
            nonlocal done
            with httpx.Client(base_url=server.url, timeout=120) as client:
                for _ in range(n):
                    job_id = client.post("/v2/jobs", data={"config": __import__("json").dumps(SHORT)},
                                         files={"data_file": ("s.wav", short_audio.read_bytes())}).json()["id"]
                    client.get(f"/v2/jobs/{job_id}/transcript", params={"wait": 60})
                    with lock:
                        done += 1
                        if done % 25 == 0:
                            samples.append((done, *rss(server)))

        threads = [threading.Thread(target=worker, args=(args.jobs // 2,)) for _ in range(2)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
    finally:
        server.stop()

    warm = [s for s in samples if s[0] >= 100]
    growth_g = (warm[-1][1] - warm[0][1]) / warm[0][1] * 100
    growth_e = (warm[-1][2] - warm[0][2]) / warm[0][2] * 100
    memory_rows = [[n, f"{g:.1f}", f"{e:.1f}"] for n, g, e in samples[:: max(1, len(samples) // 8)]]
    fig, (lat, mem) = figure(9, 3.4, ncols=2)
    for label, ms in distributions.items():
        lat.plot(ms, [100 * (i + 1) / len(ms) for i in range(len(ms))], label=label)
    lat.axvline(10, ls=":", color="#e07a5f", label="p99 target 10 ms")
    lat.set_xscale("log")
    lat.set_xlabel("response time, ms (both engines busy)")
    lat.set_ylabel("% of requests at or below")
    lat.legend(fontsize=8)
    mem.plot([n for n, _, _ in samples], [g for _, g, _ in samples], "o-", ms=3, label="gateway")
    mem.plot([n for n, _, _ in samples], [e for _, _, e in samples], "o-", ms=3, label="engines (summed)")
    mem.set_yscale("log")
    mem.set_xlabel("short jobs done")
    mem.set_ylabel("RSS, MiB")
    mem.legend(fontsize=8)
    image = save(fig, "gateway", "Gateway responsiveness and memory under load",
                 f"--parallel 2, CPU; {args.requests} requests per endpoint; {args.jobs} short jobs")
    write_section("gateway", f"""## Gateway under load (bench/gateway.py)

{machine()}. `--parallel 2`, both engines busy with a 4-minute job each (enhanced model)
{"for the whole measurement" if still_busy else "(one finished during the measurement)"};
{args.requests} sequential requests per endpoint from one client on the same machine.
Target p99 < 10 ms.

{image}

{table(["endpoint", "p50 ms", "p99 ms", "max ms", "requests/s"], rows)}

Memory over {args.jobs} short jobs (a 1-second prompt each, two at a time, {elapsed:.0f} s in
all), RSS in MiB (engines summed). Growth after warm-up (job 100 to job {warm[-1][0]}):
gateway {growth_g:+.1f} %, engines {growth_e:+.1f} % (target < 5 %).

{table(["jobs done", "gateway MiB", "engines MiB"], memory_rows)}
""")


if __name__ == "__main__":
    main()
