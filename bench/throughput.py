"""Throughput of one worker as the operator tunes it: `--parallel N` engines with the cores
split between them, against one engine with every core; window-by-window decoding against
faster-whisper's batched pipeline (`--batch-size`).

The first jobs of the mixed real-speech set (bench/workload.py), pushed by N clients at once
(one per engine, as a batch queue in front of the worker would), median of `--runs` passes.
On a GPU (`--device cuda`) the same script gives the RTF per model for `--parallel 1…4`.
Usage: python -m bench.throughput [--device cpu] [--parallel 1 2 4] [--batch-sizes 1 8]
       [--models standard] [--jobs 12] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from bench.common import MODEL_NAMES, machine, table, write_section
from bench.plots import figure, label_bars, save
from bench.workload import chorus_runs, median_run, mixed_jobs, summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--parallel", type=int, nargs="+", default=None)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--models", nargs="+", default=None, choices=list(MODEL_NAMES))
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    parallel = args.parallel or ([1, 2, 3, 4] if args.device == "cuda" else sorted({1, cores, 2 * cores}))
    models = args.models or (["standard", "enhanced"] if args.device == "cuda" else ["standard"])
    work = Path(tempfile.mkdtemp(prefix="chorus-bench-throughput-"))
    jobs = mixed_jobs(work / "audio")[:args.jobs]
    audio = sum(j.seconds for j in jobs)

    rows, bars = [], {}
    for model in models:
        for batch in args.batch_sizes:
            for n in parallel:
                runs = chorus_runs(jobs, work, n, args.runs, batch, args.device, model)
                s = summary(median_run(runs))
                threads = "GPU" if args.device == "cuda" else f"{max(1, cores // n)}" + (" (shared)" if n > cores else "")
                rows.append([MODEL_NAMES[model], n, threads, batch, f"{s['wall']:.1f}", f"{s['throughput']:.1f}",
                             f"{1 / s['throughput']:.3f}", f"{s['p50']:.2f}", f"{s['wer']:.2f}"])
                bars.setdefault((model, batch), []).append((n, s["throughput"]))
                print(rows[-1], flush=True)

    fig, ax = figure(7.5, 3.8)
    width = 0.8 / len(bars)
    for i, ((model, batch), points) in enumerate(bars.items()):
        xs = [parallel.index(n) + (i - (len(bars) - 1) / 2) * width for n, _ in points]
        label = f"{MODEL_NAMES[model]}, " + ("window by window" if batch == 1 else f"batches of {batch}")
        label_bars(ax, ax.bar(xs, [t for _, t in points], width, label=label), "{:.0f}")
    ax.set_xticks(range(len(parallel)), [f"--parallel {n}" for n in parallel])
    ax.set_ylabel("audio hours per hour")
    ax.legend(fontsize=8)
    compute = "float16" if args.device == "cuda" else "int8"
    name = "throughput" if args.device == "cpu" else "throughput-cuda"
    image = save(fig, name, f"Throughput by engine layout ({args.device.upper()})",
                 f"{', '.join(MODEL_NAMES[m] for m in models)}; {args.device} {compute}, beam 5, VAD; {len(jobs)} jobs, "
                 f"{audio / 60:.1f} min of audio, N clients for N engines; median of {args.runs} runs")
    write_section(name, f"""## Throughput by engine layout, {args.device.upper()} (bench/{Path(__file__).name})

{machine()}. The first {len(jobs)} jobs of the mixed real-speech set ({audio / 60:.1f} min of audio,
{min(j.seconds for j in jobs):.0f}–{max(j.seconds for j in jobs):.0f} s each), pushed by N clients for N engines;
{args.device} {compute}, beam 5, Silero VAD, word timings. `--parallel N` splits the cores
between the engines (pinned while each has its own); more engines than cores share them. Batch 1 is
window-by-window decoding (each 30 s window conditioned on the text before it); larger batches
use faster-whisper's batched pipeline on VAD chunks (`--batch-size`). RTF here is wall time over audio time for the
whole set. Median of {args.runs} passes.

{image}

{table(["model", "engines", "threads each", "batch", "wall s", "audio h/h", "RTF", "p50 s", "WER %"], rows)}
""")


if __name__ == "__main__":
    main()
