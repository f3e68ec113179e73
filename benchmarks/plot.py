"""Throughput against workers, one panel per task and DB mode, one line per
engine and placement of its workers (and per file, when comparing), with
the repetitions' min–max."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display here or in CI

import matplotlib.pyplot as plt
import pandas as pd

from benchmarks.compare import placements_vary, summarize, where
from benchmarks.engines import ENGINES
from benchmarks.grid import DB_MODES
from benchmarks.schema import METRICS
from benchmarks.tasks import TASKS


def throughput(frames: dict[str, pd.DataFrame], path: Path, metric: str = "drain_per_s") -> Path:
    """Draws ``metric`` against workers for each sweep in ``frames`` (label
    -> rows) and saves it to ``path`` (PNG)."""
    summaries = {label: summarize(frame) for label, frame in frames.items()}
    every = pd.concat([s.reset_index() for s in summaries.values()])
    every = every[every["runs"] > 0]
    if every.empty:
        raise ValueError("no cell finished: nothing to plot")
    tasks = [task for task in TASKS if task in set(every["task"])]
    dbs = [db for db in DB_MODES if db in set(every["db"])]
    fig, axes = plt.subplots(
        len(tasks), len(dbs), squeeze=False, figsize=(4.2 * len(dbs), 3.4 * len(tasks)), sharey="row"
    )
    m = METRICS[metric]
    # Each engine keeps its colour in every plot: taken by its registry position.
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    known = list(ENGINES)
    copies = sorted({e for e in every["engine"] if e not in ENGINES})
    colours = {e: palette[i % len(palette)] for i, e in enumerate(known + copies)}
    styles = {label: ("-", "--", ":")[i % 3] for i, label in enumerate(summaries)}
    # Where the workers ran: a marker of its own, and said in the legend.
    markers = {"thread": "o", "process": "s"}
    labelled = placements_vary(*summaries.values())
    for i, task in enumerate(tasks):
        for j, db in enumerate(dbs):
            ax = axes[i][j]
            for label, summary in summaries.items():
                rows = summary.reset_index()
                rows = rows[(rows["task"] == task) & (rows["db"] == db) & (rows["runs"] > 0)]
                lines = rows.groupby(["engine", "placement", "processes"], sort=False)
                for (engine, placement, processes), line in lines:
                    line = line.sort_values("workers")
                    median = line[f"{metric}:median"]
                    below = median - line[f"{metric}:min"]
                    above = line[f"{metric}:max"] - median
                    name = (
                        f"{engine}, {where(engine, placement, processes, short=True)}" if labelled else engine
                    )
                    name = name if len(summaries) == 1 else f"{name} ({label})"
                    ax.errorbar(
                        line["workers"],
                        median,
                        yerr=[below, above],
                        marker=markers.get(placement, "o"),
                        capsize=3,
                        label=name,
                        color=colours[engine],
                        linestyle=styles[label],
                    )
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            workers = sorted(set(every["workers"]))
            ax.set_xlim(workers[0] / 1.5, workers[-1] * 1.5)  # room around a single count too
            ax.set_xticks(workers, [str(w) for w in workers])
            ax.minorticks_off()
            ax.set_title(f"{task}, {db}")
            ax.set_xlabel("workers")
            if j == 0:
                ax.set_ylabel(f"{m.label} ({m.unit})")
            ax.grid(True, which="both", alpha=0.3)
            if ax.has_data():
                ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
