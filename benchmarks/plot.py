"""Throughput against workers, one panel per task and DB mode, one line per
engine and placement of its workers (and per file, when comparing), with
the repetitions' min–max."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display here or in CI

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from benchmarks.compare import placements_vary, summarize, where
from benchmarks.engines import ENGINES
from benchmarks.grid import DB_MODES
from benchmarks.schema import METRICS
from benchmarks.tasks import KINDS


def throughput(frames: dict[str, pd.DataFrame], path: Path, metric: str = "drain_per_s") -> Path:
    """Draws ``metric`` against workers for each sweep in ``frames`` (label
    -> rows) and saves it to ``path`` (PNG)."""
    fig = figure(frames, metric)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path


def figure(frames: dict[str, pd.DataFrame], metric: str = "drain_per_s") -> Figure:
    """The figure ``throughput`` saves; close it with ``plt.close``."""
    summaries = {label: summarize(frame) for label, frame in frames.items()}
    every = pd.concat([s.reset_index() for s in summaries.values()])
    every = every[every["runs"] > 0]
    if every.empty:
        raise ValueError("no cell finished: nothing to plot")
    tasks = [task for task in KINDS if task in set(every["task"])]
    dbs = [db for db in DB_MODES if db in set(every["db"])]
    # Constrained layout sizes the panels around every label: tight_layout
    # left the y label, longer than a panel is high, cut off at the figure's
    # edge and over the tick labels. The metric is said once, on top, and
    # its unit once, beside the rows, whose y scales each row shares.
    fig, axes = plt.subplots(
        len(tasks),
        len(dbs),
        squeeze=False,
        figsize=(4.2 * len(dbs), 3.4 * len(tasks)),
        sharey="row",
        layout="constrained",
    )
    m = METRICS[metric]
    fig.suptitle(m.label)
    fig.supylabel(m.unit)
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
            # x: the worker counts run, nothing between; y keeps its minor
            # ticks, labelled where a row spans about a decade or less.
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_title(f"{task}, {db}")
            ax.set_xlabel("workers")
            ax.grid(True, which="major", alpha=0.3)
            if ax.has_data():
                ax.legend(fontsize="small")
    return fig
