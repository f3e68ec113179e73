"""What a sweep is made of: database modes, placements and cells.

A cell is one engine, database mode, placement (with its count of worker
processes), worker count, task kind (with, for async kinds, the coroutines
each worker process runs at once) and job count, run once (one
repetition). This module, ``cell``, ``tasks`` and
``engines`` use the standard library only, because a cell may run under
another interpreter (``--python ENGINE=PATH``) that has nothing but its
engine installed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from benchmarks.pg import DEFAULT_PG_URL


@dataclass(frozen=True)
class DbMode:
    name: str
    backend: str  # what holds the jobs: memory, sqlite, redis, postgres


DB_MODES: dict[str, DbMode] = {
    mode.name: mode
    for mode in (
        # In the process's memory: taskito ':memory:', MemoryHuey, a thread pool.
        DbMode("memory", "memory"),
        # A SQLite file in WAL mode, at the engine's default durability.
        DbMode("file", "sqlite"),
        # A SQLite file synced to disk on every commit.
        DbMode("file-full", "sqlite"),
        DbMode("redis", "redis"),
        # A PostgreSQL server (``Cell.pg_url``); each cell keeps its jobs in a
        # schema of its own, dropped when the cell ends (engines/pgcell.py).
        DbMode("postgres", "postgres"),
    )
}

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
# Cells flush these Redis databases before they start; never 0, where other
# programs keep their data. Engines with a result store keep it in the
# second one, so that its size counts finished jobs.
REDIS_BROKER_DB = 15
REDIS_RESULTS_DB = 14


# Where a cell's workers run. The measuring process is the cell's: it
# enqueues, waits for results and reads the engine's counts and times.
PLACEMENTS: dict[str, str] = {
    # Threads of the measuring process (taskito's start_worker(), Huey's
    # thread consumer, a thread pool).
    "thread": "threads in the measuring process",
    # Worker processes beside it, sharing its database: what a deployment
    # runs (``taskito worker``, ``celery worker``, ...).
    "process": "worker processes",
}


def placement_conflict(cell: Cell) -> str | None:
    """Why the cell cannot run as placed, or None."""
    if cell.placement == "process" and DB_MODES[cell.db].backend == "memory":
        return (
            f"{cell.db}: an in-memory database belongs to one process; worker processes "
            "cannot share it (placement=process needs --db file or file-full)"
        )
    return None


def adapter_of(engine: str) -> str:
    """The engine module behind an engine's name in a sweep: NAME@LABEL
    runs NAME again (under another interpreter, say) as a column of its own."""
    return engine.partition("@")[0]


@dataclass(frozen=True)
class Cell:
    """One measurement, sent to the cell subprocess as JSON."""

    engine: str  # an engine's name, or NAME@LABEL for a second copy (other --python)
    db: str
    workers: int
    task: str
    jobs: int
    repetition: int
    samples: int  # delay().result() round trips timed for latency
    warmup: int  # jobs run and waited for before anything is timed
    redis_url: str = DEFAULT_REDIS_URL
    placement: str = "thread"  # a key of PLACEMENTS
    # Processes that run the tasks, besides the measuring one, each running
    # ``workers`` of them at once: taskito's worker processes, the peers'
    # pool processes (see engines.EngineInfo.pool); 0 with placement "thread".
    processes: int = 0
    idle_samples: int = 0  # round trips timed after idle gaps
    idle_gap: float = 0.5  # seconds of nothing before each of those
    pg_url: str = DEFAULT_PG_URL  # the PostgreSQL server of the postgres mode
    # Coroutines each worker process runs at once, for async task kinds
    # (tasks.ASYNC_TASKS); 0 for the others.
    async_concurrency: int = 0

    @property
    def adapter(self) -> str:
        """The engine module that runs this cell."""
        return adapter_of(self.engine)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Cell:
        return cls(**json.loads(text))

    def label(self) -> str:
        where = f" processes={self.processes}" if self.placement == "process" else ""
        coroutines = f" concurrency={self.async_concurrency}" if self.async_concurrency else ""
        return f"{self.engine} {self.db}{where} workers={self.workers} {self.task}{coroutines}"
