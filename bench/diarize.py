"""Speaker diarization cost: real-time factor of the diarization itself, the time it adds to
a job, and the engine memory it takes.

A few minutes of conversation built from four real voices (Asterisk prompts, LibriVox, the
two speakers of pyannote's sample call). Usage: python -m bench.diarize [--runs 3]
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from bench.common import ChorusServer, machine, median, table, testdata, write_section
from bench.plots import figure, label_bars, save

VOICES = ["allison", "reader", "call-a", "call-b"]


def run(server: ChorusServer, audio: Path, diarization: str, engines: int) -> tuple[float, float | None]:
    """Wall seconds of the job, and the diarization's own RTF from the job log."""
    config = {"type": "transcription", "transcription_config": {"language": "en", "diarization": diarization}}
    started = time.perf_counter()
    job_id = server.submit(audio, config, processing={"parallel_engines": engines}).json()["id"]
    server.http.get(f"/v2/jobs/{job_id}/transcript", params={"wait": 300}, timeout=330).raise_for_status()
    wall = time.perf_counter() - started
    found = re.search(r"speaker diarization done on engine \d: [\d.]+ s in [\d.]+ s \(RTF ([\d.]+)\)",
                      server.http.get(f"/v2/jobs/{job_id}/log").text)
    return wall, float(found.group(1)) if found else None


def engine_rss(server: ChorusServer) -> float:
    children = [p for p in psutil.Process(server.process.pid).children()
                if any("spawn_main" in part for part in p.cmdline())]
    return median([p.memory_info().rss / 2**20 for p in children])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--turns", type=int, default=30)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="chorus-bench-diarize-"))
    rng = np.random.default_rng(5)
    order = [VOICES[i] for i in rng.integers(0, len(VOICES), args.turns)]
    samples, _ = testdata.conversation(order)
    audio = testdata.write_wav(samples, work / "conversation.wav")
    minutes = samples.size / testdata.RATE / 60

    rows, memory, bars = [], {}, {}
    for label, parallel, threads, extra in (("--parallel 1, 2 threads", 1, 2, []),
                                            ("--parallel 2, 1 thread each", 2, 1, [])):
        server = ChorusServer(work / f"jobs{parallel}", parallel=parallel,
                              args=["--threads-per-engine", str(threads), *extra])
        try:
            server.wait_ready()
            memory["with diarization models"] = engine_rss(server)
            run(server, audio, "speaker", parallel)  # warm-up
            plain = [run(server, audio, "none", parallel)[0] for _ in range(args.runs)]
            diarized = [run(server, audio, "speaker", parallel) for _ in range(args.runs)]
        finally:
            server.stop()
        p, d = median(plain), median([w for w, _ in diarized])
        rtf = median([r for _, r in diarized if r is not None])
        bars[label] = (p, d, rtf)
        rows.append([label, f"{rtf:.3f}", f"{p:.2f}", f"{d:.2f}", f"+{d - p:.2f} s ({(d - p) / p * 100:+.0f} %)"])

    server = ChorusServer(work / "jobs-off", parallel=1, args=["--diarization-model", "none"])
    try:
        server.wait_ready()
        memory["without"] = engine_rss(server)
    finally:
        server.stop()

    fig, (jobs, rtfs) = figure(9, 3.4, ncols=2)
    xs = range(len(bars))
    label_bars(jobs, jobs.bar([x - 0.2 for x in xs], [v[0] for v in bars.values()], 0.4, label="transcript only",
                              color="#a3a3a3"), "{:.1f}")
    label_bars(jobs, jobs.bar([x + 0.2 for x in xs], [v[1] for v in bars.values()], 0.4, label="with speakers",
                              color="#2a6f97"), "{:.1f}")
    jobs.set_xticks(list(xs), list(bars))
    jobs.set_ylabel(f"job seconds ({minutes:.1f}-min conversation)")
    jobs.legend(fontsize=8)
    label_bars(rtfs, rtfs.bar(list(bars), [v[2] for v in bars.values()], color="#2a6f97"), "{:.3f}")
    rtfs.axhline(0.25, ls=":", color="#e07a5f", label="target 0.25")
    rtfs.set_ylabel("diarization RTF (lower is better)")
    rtfs.legend(fontsize=8)
    for ax in (jobs, rtfs):
        ax.tick_params(axis="x", labelsize=7.5)
    image = save(fig, "diarize", "Speaker diarization cost",
                 f"pyannote segmentation-3.0 + CAM++ on CPU; ASR tiny.en int8; median of {args.runs} runs")
    write_section("diarize", f"""## Speaker diarization (bench/diarize.py)

{machine()}. A {minutes:.1f}-minute conversation of four real voices ({args.turns} turns);
embedded models (pyannote segmentation-3.0, CAM++, agglomerative clustering), CPU; ASR on
the standard model (tiny.en). The diarization RTF is the engine's own time for the whole
file over its duration (from the job log); the added time compares the same job with
`"diarization": "speaker"` and with `"none"`. Medians of {args.runs} runs. pyannote's own CPU
figure is near 0.8× real time; target ≤ 0.25.

{image}

{table(["engines", "diarization RTF", "job without (s)", "job with (s)", "added"], rows)}

Engine memory (RSS, median over engines): {memory['with diarization models']:.0f} MiB with the
diarization models loaded, {memory['without']:.0f} MiB without (`--diarization-model none`).
With two engines the diarization runs on one engine while the other transcribes, so the
job takes about as long as the diarization alone: it is the larger task on this machine
(CAM++ embeddings on CPU), and the place to speed up next.
""")


if __name__ == "__main__":
    main()
