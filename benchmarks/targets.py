"""The engine's speed targets, each beside baselines measured in the same run.

    python -m benchmarks.targets [--jobs 10000] [--latency-samples 1000] [--repeat 3]
                                 [--cross-samples 200] [--idle-samples 30] [--idle-gap 0.5]

Runs sweep cells (``benchmarks/cell.py``: the protocol, engine adapters and
definitions of ``python -m benchmarks``), each in a fresh process, on noop
tasks: taskito on ``:memory:`` and on a WAL file with the default workers
(one per CPU) and with 8, a plain ``ThreadPoolExecutor(2)`` running the same
callables and, when installed, Huey's ``SqliteHuey`` with 2 workers. Then
across processes, the deployed shape: the cell enqueues and waits on the WAL
file while the default workers run in one ``taskito worker`` process (its
round trips, ``--cross-samples`` back to back and ``--idle-samples`` after
``--idle-gap`` seconds of nothing each), and in two (their drain, against
the same workers as threads of the measuring process). Shown per
configuration, the median of the repetitions of:

- enqueue: one ``map()`` call of half the jobs (the other half are
  enqueued one ``delay()`` each, untimed here);
- process: the drain of all the jobs, first to last completion, and
  start-up: workers started to first completion;
- the ``delay().result()`` round trip, p50 and p99, back to back and, for
  the cross-process configuration, after idle gaps.

Each target is printed with the value measured and PASS or MISS. Machines
here are shared and noisy: read the ratios, not the absolutes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from dataclasses import dataclass
from typing import Any

from benchmarks.argtypes import comma_list, seconds, whole_number
from benchmarks.grid import Cell
from benchmarks.sweep import Progress, probe, run_cell

TARGETS = {
    "enqueue_per_s": 250_000,
    "process_per_s": 50_000,
    "eight_vs_default": 0.90,
    "p50_ms": 0.3,
    "p99_ms": 1.5,
    # Across processes: the producer here, the workers in `taskito worker`.
    "cross_p50_ms": 0.3,
    "cross_p99_ms": 1.0,
    "two_processes_vs_threads": 1.0,
}
# Which targets a run measures (--groups).
GROUPS = {
    "engine": "the engine's own, in the cell's process",
    "cross": "across processes, with `taskito worker`",
    "issue13": "worker processes and async tasks (benchmarks/pool_targets.py)",
}
# The cell's columns shown here.
SHOWN = (
    "enqueue_map_per_s",
    "drain_per_s",
    "first_completion_s",
    "latency_rtt_p50_ms",
    "latency_rtt_p99_ms",
    "latency_rtt_idle_p50_ms",
    "latency_rtt_idle_p99_ms",
)
NOTES = """\
process: jobs after the first over the time from the first completion to the last; start-up:
  from starting the workers to the first completion (both defined in benchmarks/cell.py).
ThreadPoolExecutor(2): it has no queue to pre-load, so its jobs are submitted when it starts:
  its process figure includes a submit() per job, and it has no enqueue figure.
Huey: its map() calls enqueue once per job (one SQLite commit each).
N process(es): the workers run in N `taskito worker --workers W` processes; this process
  enqueues and waits through the same file. Their start-up includes starting Python."""


@dataclass(frozen=True)
class Config:
    label: str
    engine: str
    db: str
    workers: int
    placement: str = "thread"
    processes: int = 0
    # Round trips back to back and after idle gaps: None for --latency-samples
    # and none after idle gaps.
    samples: int | None = None
    idle: bool = False
    task: str = "noop"
    jobs: int | None = None  # None: --jobs
    async_concurrency: int = 0
    # Only a baseline: a run without it prints the reason, and its targets "not measured".
    optional: bool = False


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
        Config("huey SqliteHuey workers=2", "huey", "file", 2, optional=True),
    ]


def cross_configs(default_workers: int, samples: int) -> list[Config]:
    """The default workers in one `taskito worker` process (round trips,
    also after idle gaps) and in two (the drain), each with ``samples``
    back-to-back round trips."""
    return [
        Config(
            f"taskito file workers={default_workers}, {count} process{'' if count == 1 else 'es'}",
            "taskito",
            "file",
            default_workers,
            "process",
            count,
            samples,
            idle=count == 1,
        )
        for count in (1, 2)
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
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:,.3f} ms" if unit == "ms" else f"{value:,.0f}/s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.targets",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--jobs", type=whole_number(2), default=10_000, help="jobs per run (default: %(default)s)"
    )
    parser.add_argument(
        "--latency-samples",
        type=whole_number(1),
        default=1000,
        help="round trips per run (default: %(default)s)",
    )
    parser.add_argument(
        "--cross-samples",
        type=whole_number(1),
        default=200,
        help="back-to-back round trips per run with `taskito worker` processes (default: %(default)s)",
    )
    parser.add_argument(
        "--idle-samples",
        type=whole_number(1),
        default=30,
        help="round trips after idle gaps, with one `taskito worker` process (default: %(default)s)",
    )
    parser.add_argument(
        "--idle-gap", type=seconds, default=0.5, metavar="SECONDS", help="each gap (default: %(default)s)"
    )
    parser.add_argument(
        "--warmup",
        type=whole_number(0),
        default=500,
        help="jobs run before timing, per run (default: %(default)s)",
    )
    parser.add_argument(
        "--repeat",
        type=whole_number(1),
        default=3,
        help="runs per configuration; the median is shown (default: %(default)s)",
    )
    parser.add_argument(
        "--cell-timeout",
        type=seconds,
        default=300.0,
        metavar="SECONDS",
        help="kill a run after this long (default: %(default)s)",
    )
    parser.add_argument(
        "--groups",
        type=comma_list(list(GROUPS)),
        default=",".join(GROUPS),
        metavar="LIST",
        help="which targets: "
        + "; ".join(f"{name}: {what}" for name, what in GROUPS.items())
        + " (default: all)",
    )
    parser.add_argument(
        "--cpu-jobs",
        type=whole_number(2),
        default=2000,
        help="cpu_ms jobs per run, issue 13's targets (default: %(default)s)",
    )
    parser.add_argument(
        "--async-jobs",
        type=whole_number(2),
        default=10_000,
        help="async_sleep jobs per run, issue 13's targets (default: %(default)s)",
    )
    parser.add_argument(
        "--async-concurrency",
        type=whole_number(1),
        default=1000,
        metavar="N",
        help="coroutines at once per worker process for async_sleep (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    default_workers = os.cpu_count() or 1
    from benchmarks import pool_targets  # it builds on this module's Config

    def cell(config: Config, repetition: int) -> Cell:
        return Cell(
            config.engine,
            config.db,
            config.workers,
            config.task,
            config.jobs or args.jobs,
            repetition,
            args.latency_samples if config.samples is None else config.samples,
            args.warmup,
            placement=config.placement,
            processes=config.processes,
            idle_samples=args.idle_samples if config.idle else 0,
            idle_gap=args.idle_gap,
            async_concurrency=config.async_concurrency,
        )

    # The cross-process drain is set against the in-process one of the engine's configurations.
    in_process = [c for c in configs(default_workers) if c.label == f"taskito file workers={default_workers}"]
    chosen = {
        "engine": configs(default_workers),
        "cross": cross_configs(default_workers, args.cross_samples)
        + ([] if "engine" in args.groups else in_process),
        "issue13": pool_targets.configs(
            args.cross_samples, args.cpu_jobs, args.async_jobs, args.async_concurrency
        ),
    }
    available: list[Config] = []
    skipped: dict[str, str] = {}
    for config in (c for group in args.groups for c in chosen[group]):
        answer = probe(cell(config, 1), sys.executable)
        reason = answer["reason"] if not answer["available"] else answer["skipped_tasks"].get(config.task)
        if reason is None:
            available.append(config)
        elif config.optional:
            skipped[config.label] = reason
        else:
            sys.exit(f"{config.label}: cannot run: {reason}")

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

    pool = rows.get("ThreadPoolExecutor(2)", {}).get("drain_per_s")
    tasks = {config.label: config.task for config in available}
    print(
        f"noop tasks unless named, {args.jobs:,} jobs per run ({args.jobs - args.jobs // 2:,} of them by one "
        f"map() call), median of {args.repeat}, {default_workers} CPUs\n"
    )
    print(
        f"{'engine':<38} {'enqueue map()':>14} {'process':>11} {'start-up':>10} {'vs pool':>8} "
        f"{'p50':>10} {'p99':>10} {'idle p50':>10} {'idle p99':>10}"
    )
    for label, r in rows.items():
        process = r["drain_per_s"]
        ratio = f"{process / pool:.2f}x" if process is not None and pool and tasks[label] == "noop" else "-"
        startup = None if r["first_completion_s"] is None else r["first_completion_s"] * 1e3
        print(
            f"{label:<38} {fmt(r['enqueue_map_per_s'], '/s'):>14} {fmt(process, '/s'):>11} "
            f"{fmt(startup, 'ms'):>10} {ratio:>8} {fmt(r['latency_rtt_p50_ms'], 'ms'):>10} "
            f"{fmt(r['latency_rtt_p99_ms'], 'ms'):>10} {fmt(r['latency_rtt_idle_p50_ms'], 'ms'):>10} "
            f"{fmt(r['latency_rtt_idle_p99_ms'], 'ms'):>10}"
        )
    for label, reason in skipped.items():
        print(f"{label}: skipped: {reason}")
    print(f"\n{NOTES}")
    if "issue13" in args.groups:
        print(pool_targets.NOTES)
    if "engine" in args.groups:
        engine_verdicts(rows, default_workers)
    if "cross" in args.groups:
        cross_verdicts(rows, default_workers, args)
    if "issue13" in args.groups:
        pool_targets.verdicts(rows, skipped, args.async_concurrency, print)
    return 0


def engine_verdicts(rows: dict[str, dict[str, float | None]], default_workers: int) -> None:
    print("\ntargets (2 cores): enqueue >= 250,000/s, process >= 50,000/s, 8 workers >= 90% of default,")
    print("p50 < 0.3 ms, p99 < 1.5 ms")
    for db in (":memory:", "file"):
        default = rows[f"taskito {db} workers={default_workers}"]
        eight = rows[f"taskito {db} workers=8"]
        checks = [
            ("enqueue", at_least(default["enqueue_map_per_s"], TARGETS["enqueue_per_s"], "/s")),
            ("process", at_least(default["drain_per_s"], TARGETS["process_per_s"], "/s")),
            ("8 workers", at_least(ratio_of(eight, default), TARGETS["eight_vs_default"], "x")),
            ("p50", below(default["latency_rtt_p50_ms"], TARGETS["p50_ms"])),
            ("p99", below(default["latency_rtt_p99_ms"], TARGETS["p99_ms"])),
        ]
        verdict = ", ".join(f"{name} {result}" for name, result in checks)
        print(f"  {db:<9} {verdict}")


def cross_verdicts(
    rows: dict[str, dict[str, float | None]], default_workers: int, args: argparse.Namespace
) -> None:
    single, double = (rows[c.label] for c in cross_configs(default_workers, args.cross_samples))
    threads = rows[f"taskito file workers={default_workers}"]
    print(
        f"\ncross-process targets (file, {default_workers} workers per process; this process enqueues "
        "and waits):\nround trip p50 <= 0.3 ms and p99 <= 1 ms, back to back and after idle gaps; "
        "drain in 2 processes >= in-process drain"
    )
    gap = f"after {args.idle_gap:g} s idle"
    print(f"  {'round trip, back to back':<30} " + latency(single, "latency_rtt"))
    print(f"  {'round trip, ' + gap:<30} " + latency(single, "latency_rtt_idle"))
    drains = f"{fmt(double['drain_per_s'], '/s')} / {fmt(threads['drain_per_s'], '/s')}"
    print(
        f"  {'drain, 2 processes / threads':<30} "
        f"{at_least(ratio_of(double, threads), TARGETS['two_processes_vs_threads'], 'x')} ({drains})"
    )


def latency(row: dict[str, float | None], prefix: str) -> str:
    return (
        f"p50 {at_most(row[f'{prefix}_p50_ms'], TARGETS['cross_p50_ms'])}, "
        f"p99 {at_most(row[f'{prefix}_p99_ms'], TARGETS['cross_p99_ms'])}"
    )


def ratio_of(eight: dict[str, float | None], default: dict[str, float | None]) -> float | None:
    a, b = eight["drain_per_s"], default["drain_per_s"]
    return None if a is None or not b else a / b


def at_least(value: float | None, target: float, unit: str) -> str:
    if value is None:
        return "not measured"
    return f"{fmt(value, unit)} {'PASS' if value >= target else 'MISS'}"


def below(value: float | None, target: float) -> str:
    if value is None:
        return "not measured"
    return f"{fmt(value, 'ms')} {'PASS' if value < target else 'MISS'}"


def at_most(value: float | None, target: float) -> str:
    if value is None:
        return "not measured"
    return f"{fmt(value, 'ms')} {'PASS' if value <= target else 'MISS'}"


if __name__ == "__main__":
    sys.exit(main())
