"""One cell, measured in a process of its own.

    python -m benchmarks.cell run CELL_JSON WORKDIR
    python -m benchmarks.cell probe CELL_JSON
    python -m benchmarks.cell cleanup CELL_JSON WORKDIR

``run`` measures the cell (see ``measure``) with its database in WORKDIR;
``probe`` checks that the cell's engine is installed and its service
reachable; ``cleanup`` drops the PostgreSQL schemas a cell that died left
behind in its server (``engines.pgcell``). Each prints one line,
``BENCH-RESULT`` and a JSON object, as its last line of output; the sweep
adds the provenance and writes the CSV row. Engines may print what they
like before it.

The drain, the same for every engine: the backlog's jobs are enqueued with
the workers stopped, then the workers are started. Each job's completion
time is the engine's own where it stores one (taskito ``finished_at``, RQ
``ended_at``, Celery ``date_done``), else taken by a hook the engine calls
as each job finishes (Huey's ``SIGNAL_COMPLETE``, a Dramatiq middleware,
the thread pool's done callback); all in Unix time, one clock for every
process. The moment differs a little between engines: taskito's and RQ's
are taken as the task returns, before the outcome is stored (taskito
commits outcomes in batches), Celery's as the result is stored, Huey's,
Dramatiq's and the pool's just after. From those times:

- ``first_completion_s``: from the call that starts the workers to the
  first completion: start-up (processes, imports, connections, first claim);
- ``drain_per_s``: the jobs after the first divided by the time from the
  first completion to the last: how fast running workers get through a
  backlog, whatever their start-up took.

The ``chain`` kind (``tasks.CHAIN_LENGTH`` steps per chain): ``jobs`` are
the steps, so ``jobs / CHAIN_LENGTH`` chains are enqueued (half one call
each, the other half by the engine's batch call where it has one for
chains, else one call each) and drained. Each step counts as a job: the
chain's ``drain_per_s`` is every step of every chain after the first
completion, divided by the time from the first completion (of any step) to
the last, which is comparable with noop's: the same jobs per second, with
the engine passing each result on and starting the next step in between.
Enqueue rates are not measured for chains (what an engine stores when a
chain is enqueued differs: every step, the first, one message), and a
round trip is one chain's: enqueued to its last step's value.

Polling the engine's count of finished jobs only tells the cell that the
drain is over; it does not time it. The thread pool has no queue to hold a
backlog: its jobs are submitted when it starts, so its drain includes the
``submit()`` of each job.

Wherever the workers run (``Cell.placement``: threads of this process, or
worker processes it starts beside it), this process enqueues, waits for
results and reads the counts: with worker processes, every round trip
crosses processes, and their start-up (Python's included) is part of
``first_completion_s``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import engines, procs
from benchmarks.engines.base import CHECK_EVERY, Adapter, Unavailable
from benchmarks.grid import Cell
from benchmarks.tasks import CHAIN_LENGTH, KINDS

MARK = "BENCH-RESULT "
# How often the cell reads the engine's count of finished jobs to learn that
# a backlog is done. The reads time nothing (completion times do) but cost
# the engine something (a SQLite count, a Redis DBSIZE), so not too often.
POLL = 0.005
# Worker processes are checked every CHECK_EVERY seconds between polls: one
# that died is an error now, not a timeout later.
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


def wait_finished(adapter: Adapter, base: int, total: int) -> None:
    """Returns once ``total`` jobs beyond ``base`` have finished, by the
    engine's count; raises as soon as a worker process is found dead."""
    next_check = time.perf_counter() + CHECK_EVERY
    while adapter.finished() - base < total:
        now = time.perf_counter()
        if now >= next_check:
            adapter.check()
            next_check = now + CHECK_EVERY
        time.sleep(POLL)


def drain(finished: Sequence[float | None], start: float, read_at: float) -> tuple[float, float | None]:
    """``first_completion_s`` and ``drain_per_s`` (see the module's
    docstring) from the completion times of the backlog's jobs (Unix time,
    in any order), ``start`` (Unix time just before the workers were
    started) and ``read_at`` (when the times were read, after the workers
    stopped). The rate is None if every job finished at the same recorded
    instant: no interval to divide by.

    A time before ``start`` or after ``read_at`` means the clocks or the
    jobs got mixed up: an error, not a number."""
    missing = sum(t is None for t in finished)
    if missing:
        raise RuntimeError(f"{missing} of the drain's {len(finished)} jobs have no completion time")
    times = [t for t in finished if t is not None]
    if len(times) < 2:
        raise ValueError(f"a drain rate needs at least 2 jobs, got {len(times)}")
    first, last = min(times), max(times)
    if first < start or last > read_at:
        raise RuntimeError(
            f"completion times {first:.6f}..{last:.6f} fall outside the drain, "
            f"{start:.6f}..{read_at:.6f} (Unix time)"
        )
    rate = (len(times) - 1) / (last - first) if last > first else None
    return first - start, rate


def settle(adapter: Adapter, cell: Cell) -> list[Any]:
    """A few round trips, untimed."""
    jobs = []
    for i in range(min(cell.samples, SETTLE)):
        job = adapter.enqueue_one(i)
        adapter.result(job, RESULT_TIMEOUT)
        jobs.append(job)
    return jobs


def round_trip(adapter: Adapter, arg: int) -> tuple[float, Any]:
    """Seconds from enqueueing one job to having its value, and the job."""
    t0 = time.perf_counter()
    job = adapter.enqueue_one(arg)
    adapter.result(job, RESULT_TIMEOUT)
    return time.perf_counter() - t0, job


def after_idle_gaps(adapter: Adapter, cell: Cell) -> tuple[list[float], list[Any]]:
    """``cell.idle_samples`` round trips, each after ``cell.idle_gap``
    seconds with nothing to do: what a job meets when workers and waiters
    have gone idle (backed off, asleep), not what a stream of jobs keeps
    awake. The gap is a plain sleep of this process, which polls nothing
    meanwhile; dead workers are checked after it."""
    seconds, jobs = [], []
    for i in range(cell.idle_samples):
        time.sleep(cell.idle_gap)
        adapter.check()
        took, job = round_trip(adapter, i)
        seconds.append(took)
        jobs.append(job)
    return seconds, jobs


def measure(adapter: Adapter, cell: Cell) -> dict[str, Any]:
    """The cell's measurements, in this order:

    1. warm-up: ``cell.warmup`` jobs and a few round trips through running
       workers, none timed (imports, connections, caches, first claims);
    2. with the workers stopped, half the jobs enqueued by single calls and
       the other half by the engine's batch call, each timed;
    3. the workers started and the backlog drained (see ``drain``);
    4. ``cell.samples`` enqueue-and-wait round trips, one at a time, after
       a few untimed ones: work the drain left behind (Celery's client
       reading the notifications of the results it holds: half a second
       after 1,000 jobs) belongs to the drain, not to the round trip;
    5. ``cell.idle_samples`` round trips after idle gaps (``after_idle_gaps``).

    Wherever the workers run (``cell.placement``), this process is the
    producer: it enqueues, waits for results and reads the counts.

    Memory (``peak_pss_mb``) is the PSS of this process and all below it
    (``procs.tree_pss_bytes``), read at the end of each step, outside the
    timed parts: the largest of those reads, not a peak between them.
    """
    handles: list[Any] = []
    memory: list[int | None] = []
    per_unit = jobs_per_unit(cell)
    units = cell.jobs // per_unit  # jobs, or chains
    adapter.start_workers()
    if cell.warmup:
        warmup = max(1, cell.warmup // per_unit)
        handles += adapter.enqueue_many(range(warmup))
        wait_finished(adapter, 0, warmup * per_unit)
    handles += settle(adapter, cell)
    memory.append(procs.tree_pss_bytes(os.getpid()))
    adapter.stop_workers()

    base = adapter.finished()
    half = units // 2
    t0 = time.perf_counter()
    backlog = [adapter.enqueue_one(i) for i in range(half)]
    delay_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    backlog += adapter.enqueue_many(range(half, units))
    map_s = time.perf_counter() - t0
    handles += backlog
    memory.append(procs.tree_pss_bytes(os.getpid()))
    # Enqueue rates of single jobs only (see the module's docstring on chains).
    timed_enqueue = adapter.stores_jobs and per_unit == 1

    start = time.time()  # Unix time: the clock of the completion times
    adapter.start_workers()
    wait_finished(adapter, base, cell.jobs)
    memory.append(procs.tree_pss_bytes(os.getpid()))

    handles += settle(adapter, cell)
    round_trips = []
    timed = []
    for i in range(cell.samples):
        took, job = round_trip(adapter, i)
        round_trips.append(took)
        timed.append(job)
    handles += timed
    idle_round_trips, idle_jobs = after_idle_gaps(adapter, cell)
    handles += idle_jobs
    memory.append(procs.tree_pss_bytes(os.getpid()))
    adapter.stop_workers()

    read_at = time.time()
    steps = adapter.steps(backlog)
    if len(steps) != cell.jobs:
        raise RuntimeError(f"the backlog's {units} enqueue calls made {len(steps)} jobs, not {cell.jobs}")
    first_completion_s, drain_per_s = drain(adapter.finished_at(steps), start, read_at)
    stored = adapter.stored_latencies(timed)
    result: dict[str, Any] = {
        "enqueue_delay_per_s": half / delay_s if timed_enqueue and delay_s > 0 else None,
        "enqueue_map_per_s": (units - half) / map_s if timed_enqueue and map_s > 0 else None,
        "drain_per_s": drain_per_s,
        "first_completion_s": first_completion_s,
        "latency_samples": len(round_trips),
        "failures": adapter.failures(handles),
        "peak_pss_mb": max(read) / 2**20 if (read := [m for m in memory if m is not None]) else None,
    }
    for kind, samples in (("rtt", round_trips), ("rtt_idle", idle_round_trips), ("stored", stored or [])):
        values = percentiles(samples)
        for name, value in zip(("p50", "p95", "p99"), values or (None, None, None), strict=True):
            result[f"latency_{kind}_{name}_ms"] = value
    return result


def jobs_per_unit(cell: Cell) -> int:
    """Jobs each enqueue call makes: CHAIN_LENGTH for chains, else 1.
    Raises if the cell's jobs are not whole chains."""
    if cell.task != "chain":
        return 1
    if cell.jobs % CHAIN_LENGTH or cell.jobs < CHAIN_LENGTH:
        raise ValueError(f"chain cells run whole chains of {CHAIN_LENGTH} jobs: got {cell.jobs} jobs")
    return CHAIN_LENGTH


def interpreter() -> dict[str, str]:
    return {
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
    }


def run(cell: Cell, workdir: Path) -> dict[str, Any]:
    adapter = engines.load(cell.adapter)(cell, workdir)
    try:
        return {**interpreter(), **adapter.build(), **adapter.describe(), **measure(adapter, cell)}
    finally:
        adapter.close()


def probe(cell: Cell) -> dict[str, Any]:
    """Also says which interpreter and engine build would run, so that a
    row whose cell dies early still says it."""
    try:
        adapter = engines.load(cell.adapter)
        adapter.probe(cell)
    except ModuleNotFoundError as exc:
        reason = f"package {exc.name!r} is not installed for {sys.executable} (pip install '.[bench]')"
        return {"available": False, "reason": reason}
    except Unavailable as exc:
        return {"available": False, "reason": str(exc)}
    # The kinds it cannot run, each with the reason: their cells are skipped.
    kinds = {kind: adapter.cannot_run(dataclasses.replace(cell, task=kind)) for kind in KINDS}
    skipped = {kind: reason for kind, reason in kinds.items() if reason is not None}
    return {"available": True, "reason": "", "skipped_tasks": skipped, **interpreter(), **adapter.build()}


def cleanup(cell: Cell, workdir: Path) -> dict[str, Any]:
    """Drops the schemas the cell that ran in ``workdir`` listed and did not drop."""
    from benchmarks.engines import pgcell  # only cells of the postgres mode list any

    return {"dropped": pgcell.drop_listed(cell.pg_url, workdir)}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 3 and args[0] == "run":
        output = run(Cell.from_json(args[1]), Path(args[2]))
    elif len(args) == 2 and args[0] == "probe":
        output = probe(Cell.from_json(args[1]))
    elif len(args) == 3 and args[0] == "cleanup":
        output = cleanup(Cell.from_json(args[1]), Path(args[2]))
    else:
        sys.exit(
            "usage: python -m benchmarks.cell run CELL_JSON WORKDIR | probe CELL_JSON "
            f"| cleanup CELL_JSON WORKDIR (got {args})"
        )
    sys.stdout.flush()
    print(MARK + json.dumps(output), flush=True)


if __name__ == "__main__":
    main()
