"""Per-job overhead of the worker: (a) HTTP round trip vs (b) bare in-process transcribe vs
(c) a cold process per job, for a ~10 s clip, on the same model and threads.

Usage: python -m bench.overhead [--runs 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import MODEL_NAMES, ChorusServer, machine, median, table, testdata, write_section
from bench.plots import figure, label_bars, save

COLD = """
import sys, time
from faster_whisper import WhisperModel
model = WhisperModel(sys.argv[1], device="cpu", compute_type="int8", cpu_threads=int(sys.argv[3]))
segments, _ = model.transcribe(sys.argv[2], language="en", word_timestamps=True, vad_filter=True)
print(len([w for s in segments for w in s.words]))
"""


def clip(folder: Path) -> Path:
    """About 10 s of LibriVox reading."""
    clips = testdata.librivox()
    samples = np.concatenate([clips[1][0], testdata.silence(0.5), clips[2][0]])
    return testdata.write_wav(samples, folder / "clip.wav")


def http_round_trip(server: ChorusServer, audio: Path, model: str) -> float:
    config = {"type": "transcription", "transcription_config": {"language": "en", "model": model}}
    started = time.perf_counter()
    job_id = server.submit(audio, config).json()["id"]
    # Long-poll (`?wait=`) answers the moment the job ends, without a client spinning on
    # the CPU the engine needs.
    server.http.get(f"/v2/jobs/{job_id}/transcript", params={"wait": 120}, timeout=150).raise_for_status()
    return time.perf_counter() - started


def in_process(model, audio: Path) -> float:
    started = time.perf_counter()
    segments, _ = model.transcribe(str(audio), language="en", word_timestamps=True, vad_filter=True)
    [w for s in segments for w in s.words]
    return time.perf_counter() - started


def cold(source: str, audio: Path, threads: int) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", COLD, source, str(audio), str(threads)], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from faster_whisper import WhisperModel

    from engine import embedded

    work = Path(tempfile.mkdtemp(prefix="chorus-bench-"))
    audio = clip(work)
    duration = len(testdata.decode(audio)) / testdata.RATE
    rows, seconds = [], {}
    server = ChorusServer(work / "jobs", parallel=1, args=["--threads-per-engine", str(args.threads)])
    try:
        server.wait_ready()
        for name in ("standard", "enhanced"):
            source = embedded.resolve(name, embedded.EMBEDDED)
            http_round_trip(server, audio, name)  # warm-up
            a = median([http_round_trip(server, audio, name) for _ in range(args.runs)])
            model = WhisperModel(source, device="cpu", compute_type="int8", cpu_threads=args.threads)
            in_process(model, audio)
            b = median([in_process(model, audio) for _ in range(args.runs)])
            del model
            c = median([cold(source, audio, args.threads) for _ in range(args.cold_runs)])
            rows.append([name, f"{a:.3f}", f"{b:.3f}", f"{c:.3f}", f"{a / b:.3f}", f"{c / a:.2f}"])
            seconds[name] = (b, a, c)
    finally:
        server.stop()

    fig, ax = figure(7, 3.4)
    kinds = ["(b) in-process", "(a) Chorus over HTTP", "(c) cold process per job"]
    for i, kind in enumerate(kinds):
        xs = [j + (i - 1) * 0.27 for j in range(len(seconds))]
        label_bars(ax, ax.bar(xs, [v[i] for v in seconds.values()], 0.27, label=kind,
                              color=["#a3a3a3", "#2a6f97", "#e07a5f"][i]), "{:.2f}")
    ax.set_xticks(range(len(seconds)), [f"{n} ({MODEL_NAMES[n]})" for n in seconds])
    ax.set_ylabel(f"seconds for a {duration:.1f} s clip")
    ax.legend(fontsize=8)
    image = save(fig, "overhead", "Per-job overhead: HTTP worker vs in-process vs cold start",
                 f"CPU int8, {args.threads} threads, word timings + VAD; medians of {args.runs} runs "
                 f"((a), (b)) and {args.cold_runs} runs ((c))")
    write_section("overhead", f"""## Per-job overhead (bench/overhead.py)

{machine()}. A {duration:.1f} s LibriVox clip; CPU, int8, {args.threads} threads; `--parallel 1`.
(a) full HTTP round trip (POST, then `GET /transcript?wait=120`, which answers when the job ends), (b) bare
in-process `WhisperModel.transcribe` of the same file with the same options (word
timestamps, Silero VAD), (c) a cold process per job (start Python, load the model,
transcribe). Medians of {args.runs} runs for (a) and (b), {args.cold_runs} for (c), seconds.
Target (a) ≤ 1.10 × (b).

{image}

{table(["model", "(a) HTTP", "(b) in-process", "(c) cold process", "(a)/(b)", "(c)/(a)"], rows)}
""")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
