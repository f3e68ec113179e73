"""One cell, measured in a process of its own.

    python -m benchmarks.cell run CELL_JSON WORKDIR
    python -m benchmarks.cell probe CELL_JSON

``run`` measures the cell (see ``measure``) with its database in WORKDIR;
``probe`` checks that the cell's engine is installed and its service
reachable. Either prints one line, ``BENCH-RESULT`` and a JSON object, as
its last line of output; the sweep adds the provenance and writes the CSV
row. Engines may print what they like before it.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import engines, procs
from benchmarks.engines.base import Adapter, Unavailable
from benchmarks.grid import Cell

MARK = "BENCH-RESULT "
# How often the drain reads the engine's count of finished jobs. Each read
# costs the engine something, so not too often; at 100,000 jobs/s a 2 ms
# step still resolves a 10,000-job drain to 2%.
POLL = 0.002
# Checked between polls: a worker process that died is an error now, not a
# timeout later.
CHECK_EVERY = 0.5
RESULT_TIMEOUT = 60.0
# Untimed round trips before the timed ones, after the warm-up and the drain.
SETTLE = 10


def percentile(samples: Sequence[float], percent: int) -> float:
    """The nearest-rank percentile: the smallest sample that at least
    ``percent``% of the samples are less than or equal to. p99 of 100
    samples is the 99th smallest, not the largest; p50 of 4 is the 2nd.
    The rank, ceil(n * percent / 100), is computed in integers so that no
    float rounding can move it."""
    if not samples:
        raise ValueError("no samples")
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in (0, 100], got {percent}")
    ordered = sorted(samples)
    rank = -(-len(ordered) * percent // 100)  # 1-based
    return ordered[rank - 1]


def percentiles(samples: Sequence[float]) -> tuple[float, float, float] | None:
    """p50, p95 and p99 of samples in seconds, in milliseconds; None without samples."""
    if not samples:
        return None
    p50, p95, p99 = (percentile(samples, p) * 1e3 for p in (50, 95, 99))
    return p50, p95, p99


def wait_finished(adapter: Adapter, base: int, total: int) -> tuple[float, int, float]:
    """Polls until ``total`` jobs beyond ``base`` have finished. Returns the
    time of the first poll that saw any finished, how many it saw, and the
    time of the poll that saw them all."""
    if total <= 0:
        now = time.perf_counter()
        return now, 0, now
    first: tuple[float, int] | None = None
    next_check = time.perf_counter() + CHECK_EVERY
    while True:
        done = adapter.finished() - base
        now = time.perf_counter()
        if first is None and done > 0:
            first = (now, done)
        if done >= total:
            assert first is not None
            return first[0], first[1], now
        if now >= next_check:
            adapter.check()
            next_check = now + CHECK_EVERY
        time.sleep(POLL)


def drain_rate(jobs: int, start: float, first_at: float, first_done: int, end: float) -> float:
    """Jobs per second of a drain, timed from the first completion seen to
    the last, so that a worker process's start-up (reported apart as
    ``first_completion_s``) does not count against its throughput.

    When the first poll already saw most of the backlog done, the few jobs
    left over one poll interval say nothing about the rate (1 job in 2 ms
    reads as 500/s), so such a drain is timed from the workers' start."""
    if first_done <= jobs // 2 and end > first_at:
        return (jobs - first_done) / (end - first_at)
    return jobs / (end - start)


def settle(adapter: Adapter, cell: Cell) -> list[Any]:
    """A few round trips, untimed."""
    jobs = []
    for i in range(min(cell.samples, SETTLE)):
        job = adapter.enqueue_one(i)
        adapter.result(job, RESULT_TIMEOUT)
        jobs.append(job)
    return jobs


def measure(adapter: Adapter, cell: Cell) -> dict[str, Any]:
    """The cell's measurements, in this order:

    1. warm-up: ``cell.warmup`` jobs and a few round trips through running
       workers, none timed (imports, connections, caches, first claims);
    2. with the workers stopped, half the jobs enqueued by single calls and
       the other half by the engine's batch call, each timed;
    3. the workers started and the backlog drained (see ``drain_rate``);
    4. ``cell.samples`` enqueue-and-wait round trips, one at a time, after
       a few untimed ones: work the drain left behind (Celery's client
       reading the notifications of the results it holds: half a second
       after 1,000 jobs) belongs to the drain, not to the round trip.
    """
    handles: list[Any] = []
    adapter.start_workers()
    if cell.warmup:
        handles += adapter.enqueue_many(range(cell.warmup))
        wait_finished(adapter, 0, cell.warmup)
    handles += settle(adapter, cell)
    adapter.stop_workers()

    base = adapter.finished()
    half = cell.jobs // 2
    start = time.perf_counter()
    handles += [adapter.enqueue_one(i) for i in range(half)]
    delay_s = time.perf_counter() - start
    start = time.perf_counter()
    handles += adapter.enqueue_many(range(half, cell.jobs))
    map_s = time.perf_counter() - start

    start = time.perf_counter()
    adapter.start_workers()
    first_at, first_done, end = wait_finished(adapter, base, cell.jobs)
    drain_per_s = drain_rate(cell.jobs, start, first_at, first_done, end)

    handles += settle(adapter, cell)
    round_trips = []
    timed = []
    for i in range(cell.samples):
        t0 = time.perf_counter()
        job = adapter.enqueue_one(i)
        adapter.result(job, RESULT_TIMEOUT)
        round_trips.append(time.perf_counter() - t0)
        timed.append(job)
    handles += timed

    # Read before the workers stop; a worker process that is already gone
    # cannot be read and is left out.
    own = procs.peak_rss_bytes(os.getpid())
    workers = [procs.peak_rss_bytes(pid) for pid in adapter.worker_pids()]
    adapter.stop_workers()

    stored = adapter.stored_latencies(timed)
    result: dict[str, Any] = {
        "enqueue_delay_per_s": half / delay_s if adapter.stores_jobs and delay_s > 0 else None,
        "enqueue_map_per_s": (cell.jobs - half) / map_s if adapter.stores_jobs and map_s > 0 else None,
        "drain_per_s": drain_per_s,
        "first_completion_s": first_at - start,
        "latency_samples": len(round_trips),
        "failures": adapter.failures(handles),
        "peak_rss_mb": (own + sum(w for w in workers if w is not None)) / 2**20 if own else None,
    }
    for kind, samples in (("rtt", round_trips), ("stored", stored or [])):
        values = percentiles(samples)
        for name, value in zip(("p50", "p95", "p99"), values or (None, None, None), strict=True):
            result[f"latency_{kind}_{name}_ms"] = value
    return result


def interpreter() -> dict[str, str]:
    return {
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
    }


def run(cell: Cell, workdir: Path) -> dict[str, Any]:
    adapter = engines.load(cell.adapter)(cell, workdir)
    try:
        return {**interpreter(), **adapter.describe(), **measure(adapter, cell)}
    finally:
        adapter.close()


def probe(cell: Cell) -> dict[str, Any]:
    try:
        engines.load(cell.adapter).probe(cell)
    except ModuleNotFoundError as exc:
        reason = f"package {exc.name!r} is not installed for {sys.executable} (pip install '.[bench]')"
        return {"available": False, "reason": reason}
    except Unavailable as exc:
        return {"available": False, "reason": str(exc)}
    return {"available": True, "reason": "", **interpreter()}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 3 and args[0] == "run":
        output = run(Cell.from_json(args[1]), Path(args[2]))
    elif len(args) == 2 and args[0] == "probe":
        output = probe(Cell.from_json(args[1]))
    else:
        sys.exit(f"usage: python -m benchmarks.cell run CELL_JSON WORKDIR | probe CELL_JSON (got {args})")
    sys.stdout.flush()
    print(MARK + json.dumps(output), flush=True)


if __name__ == "__main__":
    main()
