"""The CSV a sweep writes: one row per cell and repetition, these columns in
this order. ``compare`` and ``report`` read the same names from here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    label: str
    unit: str
    higher_is_better: bool


METRICS: dict[str, Metric] = {
    "enqueue_map_per_s": Metric("enqueue, batch call", "jobs/s", True),
    "enqueue_delay_per_s": Metric("enqueue, one call per job", "jobs/s", True),
    # Both from the jobs' completion times: see benchmarks/cell.py.
    "drain_per_s": Metric("drain of a pre-loaded batch, first to last completion", "jobs/s", True),
    "first_completion_s": Metric("workers started to first completion (start-up)", "s", False),
    "latency_rtt_p50_ms": Metric("delay().result() round trip p50", "ms", False),
    "latency_rtt_p95_ms": Metric("delay().result() round trip p95", "ms", False),
    "latency_rtt_p99_ms": Metric("delay().result() round trip p99", "ms", False),
    # The same after idle gaps (--idle-samples, --idle-gap): see benchmarks/cell.py.
    "latency_rtt_idle_p50_ms": Metric("round trip after an idle gap, p50", "ms", False),
    "latency_rtt_idle_p95_ms": Metric("round trip after an idle gap, p95", "ms", False),
    "latency_rtt_idle_p99_ms": Metric("round trip after an idle gap, p99", "ms", False),
    "latency_stored_p50_ms": Metric("enqueue to finish, stored timestamps, p50", "ms", False),
    "latency_stored_p95_ms": Metric("enqueue to finish, stored timestamps, p95", "ms", False),
    "latency_stored_p99_ms": Metric("enqueue to finish, stored timestamps, p99", "ms", False),
    "failures": Metric("jobs that failed", "jobs", False),
    "peak_pss_mb": Metric("memory of the cell and its workers (largest PSS total read)", "MiB", False),
}

# A cell less its repetition: what repetitions are grouped by.
KEY = ["engine", "task", "db", "placement", "processes", "workers"]
# Whole numbers that every row has: what cells are told apart and grouped
# by. (METRICS hold numbers, or nothing where a cell measured nothing.)
COUNTS = ("workers", "processes", "repetition")

# Columns added after the harness's first CSVs, which a CSV made before
# lacks: compare reads them as these values (placement and processes are
# filled from the engine, see compare.load). Any other missing metric means
# the CSV's numbers were defined otherwise and do not compare.
ADDED_METRICS = ("latency_rtt_idle_p50_ms", "latency_rtt_idle_p95_ms", "latency_rtt_idle_p99_ms")
ADDED_COLUMNS = {"idle_samples": 0, "idle_gap_s": 0.0}
# The column that came with counting the peers' pool processes in
# ``processes``: a CSV without it counted worker commands there, and gave
# Celery's prefork children and RQ's workers as ``workers`` (compare.load
# reads such rows as processes; see compare.with_pool_processes).
POOL_COUNTED_SINCE = "async_concurrency"

STATUSES = ("ok", "timeout", "error", "skipped")

# Every column, with what it holds. The order is the CSV's.
COLUMNS: dict[str, str] = {
    "sweep_id": "when the sweep started (UTC); the same for every row of one sweep",
    "timestamp": "when this cell started (UTC, ISO 8601)",
    "status": "ok, timeout (killed at --cell-timeout), error, or skipped (engine unavailable)",
    "error": "why the cell did not finish: the end of its error output, or why the engine was skipped",
    "engine": "the engine as named in --engines (NAME or NAME@LABEL)",
    "db": "database mode: memory, file, file-full, redis, postgres",
    "backend": "what holds the jobs in that mode: memory, sqlite, redis, postgres",
    "durability": "the durability setting the engine ran with (SQLite synchronous level, Redis AOF, "
    "PostgreSQL fsync and synchronous_commit as the server reports them)",
    "placement": "where the workers ran: thread (threads in the measuring process, the cell's) or "
    "process (worker processes beside it, sharing its database); see processes",
    "processes": "processes that ran the tasks, each running `workers` at once: taskito's worker "
    "processes, Dramatiq's (--processes), Celery's prefork children, RQ's workers, Huey's process "
    "workers, the async peers' worker processes; one for procrastinate and pgqueuer; 0 for placement "
    "thread (see benchmarks/engines/__init__.py, POOLS)",
    "workers": "tasks each of those processes ran at once (its threads; 1 for a process that runs one "
    "task at a time, or an event loop), or threads in the measuring process (placement thread)",
    "task": "task kind: noop, cpu_light, io_sleep, cpu_ms, chain, async_sleep (benchmarks/tasks.py)",
    "async_concurrency": "coroutines each worker process ran at once, for async task kinds; empty for the others",
    "jobs": "jobs enqueued (half one by one, half in a batch) and drained; for chain, every step of "
    "each chain counts",
    "repetition": "1-based repetition of this cell",
    "samples": "round trips timed for latency, back to back",
    "idle_samples": "round trips timed after idle gaps",
    "idle_gap_s": "seconds of nothing before each of those",
    "warmup": "jobs run before anything was timed",
    "cell_seconds": "wall time of the cell's process, start-up included",
    "engine_version": "the engine's version (the Python version for the thread pool)",
    "engine_path": "the folder the cell imported the engine's package from",
    "engine_build": "taskito: its compiled engine's file, sha256 (first 16 hex digits) and mtime",
    "engine_setup": "how the workers ran",
    "store_version": "the database's own version (SQLite library, Redis server, PostgreSQL server)",
    **{name: f"{metric.label} ({metric.unit})" for name, metric in METRICS.items()},
    "latency_samples": "round trips that were timed",
    "python_version": "the interpreter that ran the cell",
    "python_implementation": "CPython, PyPy, ...",
    "python_executable": "path of that interpreter (--python)",
    "git_commit": "commit of this tree (the harness, and taskito's sources); empty on taskito rows "
    "whose taskito was imported from elsewhere (--python): see engine_path and engine_build",
    "git_branch": "its branch",
    "git_dirty": "True if tracked files differed from the commit, empty if unknown",
    "cpu_model": "processor model",
    "cpu_count": "logical CPUs",
    "os": "operating system and kernel",
    "load_avg_1m": "the machine's 1-minute load average when the cell started (noise from other work)",
    "command": "the command that ran the sweep (passwords in URLs replaced by ***)",
}
