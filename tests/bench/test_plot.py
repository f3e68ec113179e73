"""The throughput plot's layout: every piece of text drawn on it is whole
and clear of the others (the y label was once cut off at the figure's edge
and drawn over the tick labels)."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import combinations
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from benchmarks import compare, plot
from tests.bench.test_compare import A, B, with_placements

RESULTS = Path(__file__).resolve().parent.parent.parent / "results"


def tick_labels(axis: Axis) -> Iterator[Text]:
    """The labels of the ticks drawn: those inside the axis's view (a
    locator also returns ticks beyond it, which are not drawn)."""
    low, high = sorted(axis.get_view_interval())
    for ticks, places in (
        (axis.get_major_ticks(), axis.get_majorticklocs()),
        (axis.get_minor_ticks(), axis.get_minorticklocs()),
    ):
        for tick, place in zip(ticks, places, strict=False):
            if low <= place <= high:
                yield tick.label1


def drawn(figure: Figure) -> list[tuple[str, Bbox]]:
    """Each visible piece of text on ``figure`` and its box in pixels: the
    figure's own (title, shared labels) and each panel's title, axis
    labels, tick labels and legend."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    texts: list[Text] = list(figure.texts)
    for ax in figure.axes:
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label, *tick_labels(ax.xaxis), *tick_labels(ax.yaxis)]
        legend = ax.get_legend()
        if legend is not None:
            texts += legend.get_texts()
    return [
        (text.get_text(), text.get_window_extent(renderer))
        for text in texts
        if text.get_visible() and text.get_text().strip()
    ]


def unreadable(figure: Figure) -> list[str]:
    """Each text not wholly inside the figure, and each pair drawn over each other."""
    width, height = figure.bbox.width, figure.bbox.height
    placed = drawn(figure)
    problems = [
        f"{text!r} runs off the figure: x {box.x0:.0f}..{box.x1:.0f}, y {box.y0:.0f}..{box.y1:.0f} "
        f"of {width:.0f} x {height:.0f}"
        for text, box in placed
        if box.x0 < 0 or box.y0 < 0 or box.x1 > width or box.y1 > height
    ]
    problems += [
        f"{a!r} overlaps {b!r}" for (a, box_a), (b, box_b) in combinations(placed, 2) if box_a.overlaps(box_b)
    ]
    return problems


def sweeps(name: str, tmp_path: Path) -> dict[str, pd.DataFrame]:
    if name == "one sweep":
        return {"a": compare.load(A)}
    if name == "two sweeps":
        return {"a": compare.load(A), "b": compare.load(B)}
    if name == "placements":
        return {"placed": compare.load(with_placements(tmp_path))}
    path = RESULTS / f"{name}.csv"
    return {path.stem: compare.load(path)}


@pytest.mark.parametrize(
    "name", ["one sweep", "two sweeps", "placements", "reference-default", "reference-workers"]
)
def test_every_text_of_the_plot_is_whole_and_clear_of_the_others(name: str, tmp_path: Path) -> None:
    figure = plot.figure(sweeps(name, tmp_path))
    try:
        assert unreadable(figure) == []
    finally:
        plt.close(figure)


def test_the_plot_names_the_metric_and_its_unit_once(tmp_path: Path) -> None:
    figure = plot.figure(sweeps("reference-workers", tmp_path))
    try:
        texts = [text for text, _ in drawn(figure)]
        assert texts.count("drain of a pre-loaded batch, first to last completion") == 1
        assert texts.count("jobs/s") == 1
    finally:
        plt.close(figure)
