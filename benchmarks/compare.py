"""Reads sweep CSVs with pandas: repetitions grouped (median, min, max),
workers x DB mode per engine and task as markdown, and the ratio of two runs
with regressions flagged."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from benchmarks.engines import ENGINES
from benchmarks.grid import DB_MODES, PLACEMENTS, adapter_of
from benchmarks.schema import ADDED_COLUMNS, ADDED_METRICS, COUNTS, KEY, METRICS, POOL_COUNTED_SINCE
from benchmarks.tasks import KINDS

DEFAULT_METRICS = ["drain_per_s"]
# What a B/A comparison looks at unless told otherwise.
# Metrics in ADDED_METRICS are left out of a table where nothing measured them.
DIFF_METRICS = [
    "drain_per_s",
    "enqueue_map_per_s",
    "enqueue_delay_per_s",
    "latency_rtt_p50_ms",
    "latency_rtt_p99_ms",
    "latency_rtt_idle_p50_ms",
    "latency_rtt_idle_p99_ms",
]
SUMMARY_METRICS = [
    "enqueue_map_per_s",
    "enqueue_delay_per_s",
    "drain_per_s",
    "latency_rtt_p50_ms",
    "latency_rtt_p99_ms",
    "latency_rtt_idle_p50_ms",
    "latency_rtt_idle_p99_ms",
    "latency_stored_p50_ms",
    "latency_stored_p99_ms",
    "failures",
    "peak_pss_mb",
]
SHORT = {
    "enqueue_map_per_s": "enqueue batch/s",
    "enqueue_delay_per_s": "enqueue 1-by-1/s",
    "drain_per_s": "drain/s",
    "first_completion_s": "first done s",
    "latency_rtt_p50_ms": "rtt p50 ms",
    "latency_rtt_p95_ms": "rtt p95 ms",
    "latency_rtt_p99_ms": "rtt p99 ms",
    "latency_rtt_idle_p50_ms": "idle rtt p50 ms",
    "latency_rtt_idle_p95_ms": "idle rtt p95 ms",
    "latency_rtt_idle_p99_ms": "idle rtt p99 ms",
    "latency_stored_p50_ms": "stored p50 ms",
    "latency_stored_p95_ms": "stored p95 ms",
    "latency_stored_p99_ms": "stored p99 ms",
    "failures": "failures",
    "peak_pss_mb": "peak PSS MiB",
}
STATS = ("median", "min", "max")
# The column that says where a row's workers ran.
WHERE = "workers run in"
# The columns a CSV must have; CSVs made before placements lack those two.
REQUIRED = [c for c in KEY if c not in ("placement", "processes")]


class NotABenchmarkCSV(ValueError):
    pass


def load(path: Path) -> pd.DataFrame:
    """One sweep's rows; raises NotABenchmarkCSV for any other file."""
    try:
        frame = pd.read_csv(path, dtype={"error": str, "git_commit": str, "command": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise NotABenchmarkCSV(f"{path}: cannot read it as CSV: {exc}") from None
    missing = [c for c in ("status", *REQUIRED) if c not in frame.columns]
    if missing:
        raise NotABenchmarkCSV(f"{path}: not a benchmark CSV (no column {', '.join(missing)})")
    # A sweep by a harness whose metrics were named or defined otherwise:
    # its numbers do not compare with this one's.
    missing = [c for c in METRICS if c not in frame.columns and c not in ADDED_METRICS]
    if missing:
        raise NotABenchmarkCSV(
            f"{path}: made by another version of the harness (no column {', '.join(missing)}): "
            "run it again with this one"
        )
    if frame.empty:
        raise NotABenchmarkCSV(
            f"{path}: no rows, only the header (a sweep stopped before its first cell finished): "
            "run the sweep again"
        )
    return with_added_columns(_as_numbers(frame, path))


def _as_numbers(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """``frame`` with its COUNTS and METRICS as numbers; raises
    NotABenchmarkCSV naming the first cell that is not one, or a count that
    is empty, as a CSV edited by hand or by another tool can have: the
    tables would otherwise fail deep inside pandas."""
    frame = frame.copy()
    for column in (c for c in (*COUNTS, *METRICS) if c in frame.columns):
        values = frame[column]
        numbers = pd.to_numeric(values, errors="coerce")
        bad = numbers.isna() & values.notna()
        if column in COUNTS:
            bad |= numbers.isna() | (numbers % 1 != 0)
        if bad.any():
            raise NotABenchmarkCSV(_bad_cell(path, int(bad.to_numpy().argmax()), column))
        frame[column] = numbers.astype(int) if column in COUNTS else numbers
    return frame


def _bad_cell(path: Path, index: int, column: str) -> str:
    """What is wrong with the cell of data row ``index`` (0-based) and
    ``column``, in the words of the file as written."""
    row = pd.read_csv(path, dtype=str, keep_default_na=False).iloc[index]
    value = row[column]
    kind = "whole number" if column in COUNTS else "number"
    what = "is empty" if not value.strip() else f"holds {value!r}, not a {kind}"
    cell = f"{row['engine']} {row['db']} workers={row['workers'] or '?'} rep {row['repetition'] or '?'}"
    return (
        f"{path}: data row {index + 1} ({cell}): column {column} {what}; "
        "correct or delete that row, or run the sweep again"
    )


def with_added_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """A CSV made before placements: every engine's workers ran where they
    had to (the peers' as one worker command each) or, for engines that
    can run either way (taskito), as threads of the measuring process, the
    only way it had. Metrics added since were not measured."""
    frame = frame.copy()
    if "placement" not in frame.columns:
        frame["placement"] = [_only_placement(engine) for engine in frame["engine"]]
    if "processes" not in frame.columns:
        frame["processes"] = [0 if p == "thread" else 1 for p in frame["placement"]]
    for metric in ADDED_METRICS:
        if metric not in frame.columns:
            frame[metric] = math.nan
    for column, value in ADDED_COLUMNS.items():
        if column not in frame.columns:
            frame[column] = value
    frame["processes"] = frame["processes"].astype(int)
    return with_pool_processes(frame)


def with_pool_processes(frame: pd.DataFrame) -> pd.DataFrame:
    """A CSV made before ``processes`` counted the peers' pool processes
    (``schema.POOL_COUNTED_SINCE``) gave Celery's prefork children and RQ's
    workers as ``workers`` of one worker command: read as what they were,
    that many processes of one task each, as a sweep counts them now, so
    that its rows line up with a new sweep's."""
    if POOL_COUNTED_SINCE in frame.columns:
        return frame
    frame = frame.copy()
    pooled = frame["engine"].map(lambda e: _pool(e) == "processes") & (frame["placement"] == "process")
    frame.loc[pooled, "processes"] = frame.loc[pooled, "processes"] * frame.loc[pooled, "workers"]
    frame.loc[pooled, "workers"] = 1
    return frame


def _pool(engine: str) -> str:
    info = ENGINES.get(adapter_of(engine))
    return info.pool if info is not None else "threads"


def _only_placement(engine: str) -> str:
    info = ENGINES.get(adapter_of(engine))
    return info.placements[0] if info is not None and len(info.placements) == 1 else "thread"


def where(engine: str, placement: str, processes: int, short: bool = False) -> str:
    """Where a row's workers ran, in words: "threads in the measuring
    process" or, say, "2 processes, `celery worker --pool=prefork`" (the
    processes that ran tasks, and the command that started them);
    ``short``: "threads", "2 processes"."""
    plural = "" if processes == 1 else "es"
    if placement == "thread":
        return "threads" if short else PLACEMENTS["thread"]
    if short:
        return f"{processes} process{plural}"
    info = ENGINES.get(adapter_of(engine))
    command = info.worker_command if info is not None and info.worker_command else "worker"
    return f"{processes} process{plural}, `{command}`"


def placements_vary(*summaries: pd.DataFrame) -> bool:
    """Whether the rows' workers ran in more than one kind of place."""
    places = set()
    for summary in summaries:
        index = summary.index
        places |= set(
            zip(index.get_level_values("placement"), index.get_level_values("processes"), strict=True)
        )
    return len(places) > 1


def _measured(metrics: Sequence[str], *summaries: pd.DataFrame) -> list[str]:
    """``metrics`` less the added ones that no row of the summaries has."""
    return [
        m
        for m in metrics
        if m not in ADDED_METRICS or any(s[f"{m}:median"].notna().any() for s in summaries if len(s))
    ]


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per cell (KEY): median, min and max of every metric over its
    ok repetitions, ``runs`` (ok repetitions) and ``problems`` (the others)."""
    # Engines that were skipped measured nothing: left out here, listed by problems().
    frame = frame[frame["status"] != "skipped"]
    ok = frame[frame["status"] == "ok"]
    stats = ok.groupby(KEY)[list(METRICS)].agg(list(STATS))
    stats.columns = [f"{metric}:{stat}" for metric, stat in stats.columns]
    counts = frame.assign(ok=frame["status"] == "ok").groupby(KEY)["ok"].agg(runs="sum", total="count")
    summary = counts.join(stats, how="left")
    summary["problems"] = summary["total"] - summary["runs"]
    return summary.drop(columns="total").sort_index(key=_sort_key)


def _sort_key(index: pd.Index) -> pd.Index:
    # Engines, task kinds and DB modes in their registries' order (taskito
    # first, NAME@LABEL copies after their engine), workers as numbers.
    if index.name == "engine":
        engines = {name: i for i, name in enumerate(ENGINES)}
        return index.map(lambda v: (engines.get(adapter_of(v), len(engines)), v))
    if index.name == "task":
        tasks = {name: i for i, name in enumerate(KINDS)}
        return index.map(lambda v: tasks.get(v, len(tasks)))
    if index.name == "db":
        modes = {name: i for i, name in enumerate(DB_MODES)}
        return index.map(lambda v: modes.get(v, len(modes)))
    if index.name == "placement":
        placements = {name: i for i, name in enumerate(PLACEMENTS)}
        return index.map(lambda v: placements.get(v, len(placements)))
    return index


def fmt(value: float, metric: str) -> str:
    """A metric's value the way a person reads it."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    unit = METRICS[metric].unit
    if unit == "jobs/s" or unit == "jobs":
        return f"{value:,.0f}"
    if unit == "MiB":
        return f"{value:,.1f}"
    return f"{value:,.3f}" if value < 10 else f"{value:,.1f}"


def _spread(row: pd.Series, metric: str) -> str:
    median, low, high = (row[f"{metric}:{stat}"] for stat in STATS)
    text = fmt(median, metric)
    if row["runs"] > 1 and text != "-":
        text += f" ({fmt(low, metric)}–{fmt(high, metric)})"
    if row["problems"]:
        text += f" [{int(row['problems'])} not ok]"
    return text


def _markdown(table: pd.DataFrame, left: int) -> str:
    """GitHub markdown; the first ``left`` columns left-aligned, the rest right."""
    align = ["left"] * left + ["right"] * (len(table.columns) - left)
    text: str = table.to_markdown(index=False, colalign=align, disable_numparse=True)
    return text


def _workers(count: int) -> str:
    return f"{count} worker" + ("" if count == 1 else "s")


def pivot(summary: pd.DataFrame, task: str, metric: str, labelled: bool = True) -> str:
    """Engine, DB mode and, if ``labelled``, where the workers ran down;
    workers across: median (min–max)."""
    part = summary.xs(task, level="task")
    workers = sorted(part.index.get_level_values("workers").unique())
    rows = []
    down = ["engine", "db", "placement", "processes"]
    for (engine, db, placement, processes), group in part.groupby(level=down, sort=False):
        cells = {key[-1]: _spread(r, metric) for key, r in group.iterrows()}
        row = {"engine": engine, "db": db}
        if labelled:
            row[WHERE] = where(engine, placement, processes)
        rows.append({**row, **{_workers(w): cells.get(w, "") for w in workers}})
    return _markdown(pd.DataFrame(rows), len(rows[0]) - len(workers))


def overview(summary: pd.DataFrame, task: str, metrics: Sequence[str] = SUMMARY_METRICS) -> str:
    """Every cell of one task with the medians of several metrics, each
    saying where its workers ran."""
    part = summary.xs(task, level="task")
    metrics = _measured(metrics, part)
    rows = []
    for (engine, db, placement, processes, workers), r in part.iterrows():
        rows.append(
            {
                "engine": engine,
                "db": db,
                WHERE: where(engine, placement, processes),
                "workers": str(workers),
                "runs": f"{int(r['runs'])}/{int(r['runs'] + r['problems'])}",
                **{SHORT[m]: fmt(r[f"{m}:median"], m) for m in metrics},
            }
        )
    return _markdown(pd.DataFrame(rows), 3)


def provenance(frame: pd.DataFrame) -> str:
    """One line on where and how a sweep ran."""
    first = frame.iloc[0]
    # Rows of a taskito from elsewhere have no commit: take one that has.
    stamped = frame[frame["git_commit"].notna()] if "git_commit" in frame else frame.iloc[:0]
    tree = stamped.iloc[0] if len(stamped) else first
    dirty = str(tree.get("git_dirty")) == "True"
    commit = str(tree.get("git_commit", "unknown"))[:10] + (" (dirty)" if dirty else "")
    loads = pd.to_numeric(frame["load_avg_1m"], errors="coerce").dropna()
    load = f"; load average {loads.min():.1f}–{loads.max():.1f}" if len(loads) else ""
    pythons = ", ".join(sorted(frame["python_version"].dropna().astype(str).unique())) or "?"
    return (
        f"Started {first['sweep_id']}; commit {commit}; {first['cpu_model']} x {first['cpu_count']} CPUs; "
        f"{first['os']}; Python {pythons}{load}"
    )


def problems(frame: pd.DataFrame) -> str:
    """The cells that did not finish, one line each, skipped engines once."""
    lines = []
    bad = frame[frame["status"] != "ok"]
    skipped = bad[bad["status"] == "skipped"]
    for engine, reason in skipped.groupby(["engine", "error"], sort=False).size().index:
        lines.append(f"- {engine}: skipped: {reason}")
    for _, r in bad[bad["status"] != "skipped"].iterrows():
        error = str(r["error"]).strip().splitlines()[-1] if isinstance(r["error"], str) else ""
        placed = f" processes={r['processes']}" if r["placement"] == "process" else ""
        lines.append(
            f"- {r['engine']} {r['db']}{placed} workers={r['workers']} {r['task']} rep {r['repetition']}: "
            f"{r['status']}: {error}"
        )
    return "\n".join(lines)


def render(frame: pd.DataFrame, metrics: Sequence[str] = DEFAULT_METRICS, heading: str = "##") -> str:
    """The tables for one sweep, per task: each metric pivoted, then an overview."""
    summary = summarize(frame)
    if summary["runs"].sum() == 0:
        return "No cell finished.\n" + problems(frame) + "\n"
    runs = int(frame["repetition"].max())
    labelled = placements_vary(summary)
    parts = []
    for task in summary.index.get_level_values("task").unique():
        for metric in _measured(metrics, summary):
            m = METRICS[metric]
            parts.append(
                f"{heading} {task}: {m.label} ({m.unit}), median of {runs} (min–max)\n\n"
                + ("" if labelled else f"Workers ran as {_everywhere(summary)} in every row.\n\n")
                + pivot(summary, task, metric, labelled)
            )
        parts.append(f"{heading} {task}: all metrics, medians\n\n" + overview(summary, task))
    if (frame["status"] != "ok").any():
        parts.append(f"{heading} Cells that did not finish\n\n" + problems(frame))
    return "\n\n".join(parts) + "\n"


def _everywhere(summary: pd.DataFrame) -> str:
    """Where every row's workers ran, in words: the command too when it was
    the same for every engine (peers each run their own)."""
    engine, _, _, placement, processes, _ = summary.index[0]
    said = {where(e, placement, processes) for e in summary.index.get_level_values("engine").unique()}
    return (
        where(engine, placement, processes) if len(said) == 1 else where(engine, placement, processes, True)
    )


def judge(metric: str, a: pd.Series, b: pd.Series, threshold: float) -> str:
    """Flags "REGRESSION" when B is worse than A by more than ``threshold`` (0.10:
    10%) and B's best repetition is worse than A's worst, so that noise within
    the ranges is not flagged; "improved" likewise; "" otherwise."""
    med_a, min_a, max_a = (a[f"{metric}:{s}"] for s in STATS)
    med_b, min_b, max_b = (b[f"{metric}:{s}"] for s in STATS)
    if any(pd.isna(v) for v in (med_a, med_b)):
        return ""
    higher = METRICS[metric].higher_is_better
    if med_a == 0:  # failures going from none to some
        return "REGRESSION" if (med_b < 0 if higher else med_b > 0) else ""
    ratio = med_b / med_a
    if higher:
        worse = ratio < 1 - threshold and max_b < min_a
        better = ratio > 1 + threshold and min_b > max_a
    else:
        worse = ratio > 1 + threshold and min_b > max_a
        better = ratio < 1 - threshold and max_b < min_a
    return "REGRESSION" if worse else "improved" if better else ""


def diff(a: pd.DataFrame, b: pd.DataFrame, metric: str, threshold: float) -> tuple[str, int]:
    """B against A for one metric, per cell: medians, B/A and a flag (see
    ``judge``). Returns the markdown table and how many regressions it flags."""
    sa, sb = summarize(a), summarize(b)
    labelled = placements_vary(sa, sb)
    rows = []
    regressions = 0
    keys = pd.DataFrame(index=sa.index.union(sb.index)).sort_index(key=_sort_key).index
    for key in keys:
        in_a, in_b = key in sa.index, key in sb.index
        ra = sa.loc[key] if in_a else None
        rb = sb.loc[key] if in_b else None
        med_a = ra[f"{metric}:median"] if ra is not None else math.nan
        med_b = rb[f"{metric}:median"] if rb is not None else math.nan
        flag = judge(metric, ra, rb, threshold) if ra is not None and rb is not None else ""
        regressions += flag == "REGRESSION"
        ratio = med_b / med_a if not pd.isna(med_a) and not pd.isna(med_b) and med_a != 0 else math.nan
        engine, task, db, placement, processes, workers = key
        rows.append(
            {
                "engine": engine,
                "task": task,
                "db": db,
                "workers": str(workers),
                **({WHERE: where(engine, placement, processes)} if labelled else {}),
                "A": fmt(med_a, metric) if in_a else "(not in A)",
                "B": fmt(med_b, metric) if in_b else "(not in B)",
                "B/A": "-" if pd.isna(ratio) else f"{ratio:.2f}",
                "flag": flag,
            }
        )
    return _markdown(pd.DataFrame(rows), 5 if labelled else 4), regressions


def render_diff(
    a: pd.DataFrame, b: pd.DataFrame, metrics: Sequence[str], threshold: float, heading: str = "##"
) -> tuple[str, int]:
    """The B/A tables for several metrics; returns them and the regressions flagged."""
    parts = []
    total = 0
    for metric in _measured(metrics, summarize(a), summarize(b)):
        m = METRICS[metric]
        direction = "higher" if m.higher_is_better else "lower"
        table, flagged = diff(a, b, metric, threshold)
        total += flagged
        parts.append(f"{heading} B/A: {m.label} ({m.unit}, {direction} is better)\n\n{table}")
    parts.append(
        f"{total} regression(s) flagged: worse by more than {threshold:.0%} "
        "with the repetitions' ranges not overlapping."
    )
    return "\n\n".join(parts) + "\n", total
