"""Figures for docs/benchmarks.md: one PNG per measurement, each stamped with what a reader
needs to trust it (machine, date, model, compute type, runs)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no screen: render straight to PNG

import matplotlib.pyplot as plt  # noqa: E402

from bench.common import RESULTS, machine  # noqa: E402

__all__ = ["plt", "figure", "save", "label_bars"]


def figure(width: float = 7.0, height: float = 3.6, ncols: int = 1):
    return plt.subplots(1, ncols, figsize=(width, height), layout="constrained")


def save(fig, name: str, title: str, facts: str, measured_on: str | None = None) -> str:
    """Write docs/bench/<name>.png with the title and a footer of facts; return the Markdown
    that shows it (links are relative to docs/, where benchmarks.md lies)."""
    fig.suptitle(title, fontsize=11, fontweight="bold")
    fig.get_layout_engine().set(h_pad=0.15)
    fig.text(0.5, -0.02, f"{measured_on or machine()}\n{facts}", ha="center", va="top", fontsize=7.5, color="0.3")
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS / f"{name}.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return f"![{title}](bench/{name}.png)"


def label_bars(ax, bars, fmt: str = "{:.2f}") -> None:
    ax.margins(y=0.12)  # room for the labels above the tallest bar
    for bar in bars:
        ax.annotate(fmt.format(bar.get_height()), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
