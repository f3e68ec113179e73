"""The engine's speed targets, each beside baselines measured in the same run.

    python -m benchmarks.targets [--jobs 10000] [--latency-samples 1000] [--repeat 3]

Runs sweep cells (``benchmarks/cell.py``: the protocol, engine adapters and
definitions of ``python -m benchmarks``), each in a fresh process, on noop
tasks: taskito on ``:memory:`` and on a WAL file with the default workers
(one per CPU) and with 8, a plain ``ThreadPoolExecutor(2)`` running the same
callables and, when installed, Huey's ``SqliteHuey`` with 2 workers. Shown
per configuration, the median of the repetitions of:

- enqueue: one ``map()`` call of half the jobs (the other half are
  enqueued one ``delay()`` each, untimed here);
- process: the drain of all the jobs, first to last completion, and
  start-up: workers started to first completion;
- the ``delay().result()`` round trip, p50 and p99.

Machines here are shared and noisy: read the ratios, not the absolutes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from dataclasses import dataclass
from typing import Any

from benchmarks.grid import Cell
from benchmarks.sweep import Progress, probe, run_cell

TARGETS = {
    "enqueue_per_s": 250_000,
    "process_per_s": 50_000,
    "eight_vs_default": 0.90,
    "p50_ms": 0.3,
    "p99_ms": 1.5,
}
# The cell's columns shown here.
SHOWN = ("enqueue_map_per_s", "drain_per_s", "first_completion_s", "latency_rtt_p50_ms", "latency_rtt_p99_ms")
NOTES = """\
process: jobs after the first over the time from the first completion to the last; start-up:
  from starting the workers to the first completion (both defined in benchmarks/cell.py).
ThreadPoolExecutor(2): it has no queue to pre-load, so its jobs are submitted when it starts:
  its process figure includes a submit() per job, and it has no enqueue figure.
Huey: its map() calls enqueue once per job (one SQLite commit each)."""


@dataclass(frozen=True)
class Config:
    label: str
    engine: str
    db: str
    workers: int


def configs(default_workers: int) -> list[Config]:
    """taskito's four, then the two baselines."""
    found = [
        Config(f"taskito {name} workers={workers}", "taskito", db, workers)
        for db, name in (("memory", ":memory:"), ("file", "file"))
        for workers in dict.fromkeys((default_workers, 8))  # one config if there are 8 CPUs
    ]
    return [
        *found,
        Config("ThreadPoolExecutor(2)", "threadpool", "memory", 2),
        Config("huey SqliteHuey workers=2", "huey", "file", 2),
    ]


def median(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    """The median of each shown metric over the repetitions that have it."""
    medians: dict[str, float | None] = {}
    for metric in SHOWN:
        values = [float(run[metric]) for run in runs if run.get(metric) is not None]
        medians[metric] = statistics.median(values) if values else None
    return medians


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:,.3f} ms" if unit == "ms" else f"{value:,.0f}/s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.targets",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs per run (default: %(default)s)")
    parser.add_argument("--latency-samples", type=int, default=1000, help="round trips per run")
    parser.add_argument("--warmup", type=int, default=500, help="jobs run before timing, per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per configuration; the median is shown")
    parser.add_argument("--cell-timeout", type=float, default=300.0, metavar="SECONDS")
    args = parser.parse_args(argv)
    if args.jobs < 2 or args.repeat < 1 or args.latency_samples < 1:
        parser.error("--jobs must be at least 2, --repeat and --latency-samples at least 1")
    default_workers = os.cpu_count() or 1

    def cell(config: Config, repetition: int) -> Cell:
        return Cell(
            config.engine,
            config.db,
            config.workers,
            "noop",
            args.jobs,
            repetition,
            args.latency_samples,
            args.warmup,
        )

    available: list[Config] = []
    skipped: dict[str, str] = {}
    for config in configs(default_workers):
        answer = probe(cell(config, 1), sys.executable)
        if answer["available"]:
            available.append(config)
        elif config.engine == "huey":
            skipped[config.label] = answer["reason"]
        else:
            sys.exit(f"{config.label}: cannot run: {answer['reason']}")

    # Repetitions outermost, as in a sweep: noise spreads over every configuration.
    plan = [(config, cell(config, rep)) for rep in range(1, args.repeat + 1) for config in available]
    progress = Progress([c for _, c in plan], lambda line: print(line, file=sys.stderr, flush=True))
    runs: dict[str, list[dict[str, Any]]] = {config.label: [] for config in available}
    for index, (config, one) in enumerate(plan):
        row = run_cell(one, sys.executable, args.cell_timeout)
        progress.done(index, row)
        if row["status"] != "ok":
            sys.exit(f"{config.label}, run {one.repetition}: {row['status']}: {row['error']}")
        runs[config.label].append(row)
    rows = {label: median(found) for label, found in runs.items()}

    pool = rows["ThreadPoolExecutor(2)"]["drain_per_s"]
    print(
        f"noop tasks, {args.jobs:,} jobs per run ({args.jobs - args.jobs // 2:,} of them by one map() call), "
        f"median of {args.repeat}, {default_workers} CPUs\n"
    )
    print(
        f"{'engine':<28} {'enqueue map()':>14} {'process':>11} {'start-up':>10} {'vs pool':>8} "
        f"{'p50':>10} {'p99':>10}"
    )
    for label, r in rows.items():
        process = r["drain_per_s"]
        ratio = f"{process / pool:.2f}x" if process is not None and pool else "-"
        startup = None if r["first_completion_s"] is None else r["first_completion_s"] * 1e3
        print(
            f"{label:<28} {fmt(r['enqueue_map_per_s'], '/s'):>14} {fmt(process, '/s'):>11} "
            f"{fmt(startup, 'ms'):>10} {ratio:>8} {fmt(r['latency_rtt_p50_ms'], 'ms'):>10} "
            f"{fmt(r['latency_rtt_p99_ms'], 'ms'):>10}"
        )
    for label, reason in skipped.items():
        print(f"{label}: skipped: {reason}")
    print(f"\n{NOTES}")

    print("\ntargets (2 cores): enqueue >= 250,000/s, process >= 50,000/s, 8 workers >= 90% of default,")
    print("p50 < 0.3 ms, p99 < 1.5 ms")
    for db in (":memory:", "file"):
        default = rows[f"taskito {db} workers={default_workers}"]
        eight = rows[f"taskito {db} workers=8"]
        checks = [
            ("enqueue", at_least(default["enqueue_map_per_s"], TARGETS["enqueue_per_s"])),
            ("process", at_least(default["drain_per_s"], TARGETS["process_per_s"])),
            ("8 workers", at_least(ratio_of(eight, default), TARGETS["eight_vs_default"])),
            ("p50", below(default["latency_rtt_p50_ms"], TARGETS["p50_ms"])),
            ("p99", below(default["latency_rtt_p99_ms"], TARGETS["p99_ms"])),
        ]
        verdict = ", ".join(f"{name} {result}" for name, result in checks)
        eight_text = "-" if (r8 := ratio_of(eight, default)) is None else f"{r8:.2f}"
        print(f"  {db:<9} {verdict} (8/default = {eight_text})")
    return 0


def ratio_of(eight: dict[str, float | None], default: dict[str, float | None]) -> float | None:
    a, b = eight["drain_per_s"], default["drain_per_s"]
    return None if a is None or not b else a / b


def at_least(value: float | None, target: float) -> str:
    return "not measured" if value is None else "met" if value >= target else "MISSED"


def below(value: float | None, target: float) -> str:
    return "not measured" if value is None else "met" if value < target else "MISSED"


if __name__ == "__main__":
    sys.exit(main())
