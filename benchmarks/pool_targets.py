"""Issue 13's targets for ``python -m benchmarks.targets``: worker processes
for CPU-bound tasks, async tasks on the worker's event loop, and what
processes cost noop jobs, each beside its baseline in the same run.

- ``cpu_ms`` (about 1 ms of pure Python per job), ``--cpu-jobs`` jobs:
  taskito's 2 worker processes of 1 thread drain at least 1.8 times as
  fast as 1 process of 2 threads, and at least as fast as Celery's prefork
  pool of 2 processes;
- ``async_sleep`` (5 ms ``asyncio.sleep``), ``--async-jobs`` jobs,
  ``--async-concurrency`` coroutines at once: taskito drains at least
  20,000 jobs/s and ahead of SAQ's and taskiq's (each one worker process);
- noop, ``--jobs``: 2 processes of 1 thread drain no slower than 1
  process of 2 threads.

Every configuration is a sweep cell with its workers in worker processes
(taskito's on a WAL file, the peers' on Redis): ``--processes``-style
cells, as ``python -m benchmarks sweep --placement process`` runs them.
"""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.targets import Config, at_least, fmt

TARGETS = {
    "cpu_two_processes_vs_threads": 1.8,
    "cpu_vs_celery_prefork": 1.0,
    "async_per_s": 20_000,
    "async_vs_peer": 1.0,
    "noop_two_processes_vs_threads": 1.0,
}
CPU_PROCESSES = "taskito cpu_ms 2 processes x 1 thread"
CPU_THREADS = "taskito cpu_ms 1 process x 2 threads"
CPU_CELERY = "celery cpu_ms prefork 2 processes"
ASYNC_TASKITO = "taskito async_sleep 1 process"
ASYNC_PEERS = {"saq": "saq async_sleep 1 process", "taskiq": "taskiq async_sleep 1 process"}
NOOP_PROCESSES = "taskito noop 2 processes x 1 thread"
NOOP_THREADS = "taskito noop 1 process x 2 threads"
NOTES = """\
issue 13 rows: every one runs its workers in worker processes beside this one (taskito's
  `taskito worker [--processes N]` on a WAL file; the peers' own worker commands on Redis), and
  `x T threads` is --workers T; cpu_ms is about 1 ms of pure Python, async_sleep 5 ms of
  asyncio.sleep on the worker's event loop (benchmarks/tasks.py)."""


def configs(samples: int, cpu_jobs: int, async_jobs: int, async_concurrency: int) -> list[Config]:
    """The configurations behind the targets, ``samples`` round trips each."""

    def placed(label: str, engine: str, processes: int, workers: int, task: str, jobs: int | None) -> Config:
        db = "file" if engine == "taskito" else "redis"
        coroutines = async_concurrency if task == "async_sleep" else 0
        return Config(
            label, engine, db, workers, "process", processes, samples, task=task, jobs=jobs,
            async_concurrency=coroutines, optional=engine != "taskito",
        )  # fmt: skip

    return [
        placed(CPU_PROCESSES, "taskito", 2, 1, "cpu_ms", cpu_jobs),
        placed(CPU_THREADS, "taskito", 1, 2, "cpu_ms", cpu_jobs),
        placed(CPU_CELERY, "celery", 2, 1, "cpu_ms", cpu_jobs),
        placed(ASYNC_TASKITO, "taskito", 1, 2, "async_sleep", async_jobs),
        *(placed(label, engine, 1, 1, "async_sleep", async_jobs) for engine, label in ASYNC_PEERS.items()),
        placed(NOOP_PROCESSES, "taskito", 2, 1, "noop", None),
        placed(NOOP_THREADS, "taskito", 1, 2, "noop", None),
    ]


Rows = dict[str, dict[str, float | None]]


def verdicts(
    rows: Rows, skipped: dict[str, str], async_concurrency: int, write: Callable[[str], None]
) -> None:
    """Each target with the values measured and PASS or MISS, or why it was not measured."""

    def drain(label: str) -> float | None:
        return rows[label]["drain_per_s"] if label in rows else None

    def versus(name: str, label: str, baseline: str, target: float) -> None:
        if baseline in skipped:
            write(f"  {name:<58} not measured: {baseline}: {skipped[baseline]}")
            return
        ours, theirs = drain(label), drain(baseline)
        ratio = None if ours is None or not theirs else ours / theirs
        write(f"  {name:<58} {at_least(ratio, target, 'x')} ({fmt(ours, '/s')} / {fmt(theirs, '/s')})")

    write(
        "\nissue 13 targets (worker processes and async tasks; drains, first to last completion):\n"
        "cpu_ms: 2 processes >= 1.8x 1 process of 2 threads, and >= Celery prefork with 2 processes;\n"
        f"async_sleep, concurrency {async_concurrency}: >= 20,000/s and ahead of SAQ and taskiq; "
        "noop: 2 processes >= 1 process of 2 threads"
    )
    versus("cpu_ms, 2 processes x 1 / 1 process x 2 threads", CPU_PROCESSES, CPU_THREADS,
           TARGETS["cpu_two_processes_vs_threads"])  # fmt: skip
    versus("cpu_ms, 2 processes x 1 / Celery prefork, 2 processes", CPU_PROCESSES, CPU_CELERY,
           TARGETS["cpu_vs_celery_prefork"])  # fmt: skip
    write(f"  {'async_sleep, 1 taskito worker process':<58} "
          f"{at_least(drain(ASYNC_TASKITO), TARGETS['async_per_s'], '/s')}")  # fmt: skip
    for engine, label in ASYNC_PEERS.items():
        versus(
            f"async_sleep, taskito / {engine} (1 process each)",
            ASYNC_TASKITO,
            label,
            TARGETS["async_vs_peer"],
        )
    versus("noop, 2 processes x 1 / 1 process x 2 threads", NOOP_PROCESSES, NOOP_THREADS,
           TARGETS["noop_two_processes_vs_threads"])  # fmt: skip
