"""Shared bits of the benchmarks: the test corpus, the real server, machine facts, tables."""

from __future__ import annotations

import os
import platform
import statistics
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
from tests.system import testdata
from tests.system.chorus_server import ChorusServer

RESULTS = ROOT / "docs" / "bench"
MODEL_NAMES = {"standard": "tiny.en", "enhanced": "base"}  # the embedded models, by operating point


def _cpu_times() -> list[int]:
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:]]


_STARTED = _cpu_times()


def cpu_steal_percent() -> float:
    """Share of CPU time the virtual machine's host took away since this benchmark began
    (the `steal` column of /proc/stat); high values inflate every time measured."""
    now = _cpu_times()
    delta = [b - a for a, b in zip(_STARTED, now)]
    return 100.0 * delta[7] / max(1, sum(delta[:8]))

__all__ = ["cpu_steal_percent", "MODEL_NAMES", "ChorusServer", "testdata", "machine", "median", "table", "write_section", "RESULTS", "ROOT"]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    return f"{cpu}, {cores} cores, Python {platform.python_version()}, {date}"


def median(values: list[float]) -> float:
    return statistics.median(values)


def table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, markdown: str, steal: float | None = None) -> None:
    """docs/bench/<name>.md; `steal`: the CPU steal measured with the figures (default: now)."""
    steal = cpu_steal_percent() if steal is None else steal
    markdown = markdown.rstrip() + (f"\n\nCPU steal over this run: {steal:.1f} % of CPU time "
                                    "(taken by the VM's host; high values inflate the times above).\n")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.md").write_text(markdown.rstrip() + "\n")
    print(markdown)
