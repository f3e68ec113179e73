"""The engines a sweep can measure, one module each.

Adding one: write ``benchmarks/engines/NAME.py`` (a ``-`` in NAME is a
``_`` in the module's name) with a subclass of ``base.Adapter`` assigned to
``ADAPTER`` (see ``huey.py`` for an in-process engine, ``rq.py`` for one
with worker processes, ``taskito.py`` for one that runs either way,
``procrastinate.py`` for one on PostgreSQL, with ``pgcell.py``), and add
a line to ``ENGINES`` saying where its workers can run. The registry is separate from the modules because the sweep
process reads it without importing the engines' packages, which may be
installed only under another interpreter, or not at all.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmarks.engines.base import Adapter


# What the worker processes of an engine's process placement run tasks on,
# which says what a cell's ``processes`` and ``workers`` mean for it:
POOLS = {
    # ``workers`` threads in each of ``processes`` processes (taskito,
    # Dramatiq): any count of either.
    "threads": "worker threads in each process",
    # Each process runs one task at a time (Celery's prefork children, RQ's
    # workers, Huey's process workers): a cell asked for N processes of T
    # workers runs N x T processes, as many tasks at once, and its row says
    # so (processes N x T, workers 1).
    "processes": "one task at a time in each process",
    # One event loop per process, running the cell's ``async_concurrency``
    # coroutines at once, and no worker threads: its rows have workers 1.
    "event loop": "coroutines on one event loop per process",
}


@dataclass(frozen=True)
class EngineInfo:
    name: str
    modes: tuple[str, ...]  # the database modes (grid.DB_MODES) it runs in
    # Where its workers can run (grid.PLACEMENTS). An engine with one runs
    # there whatever --placement says; the others run in each one asked for.
    placements: tuple[str, ...]
    # The command that runs its worker processes, as its users type it.
    worker_command: str = ""
    # What its worker processes run tasks on (a key of POOLS).
    pool: str = "threads"
    # Set for an engine this tree's interpreter cannot run: how to give it
    # an interpreter of its own (--python).
    needs_python: str = ""

    @property
    def module(self) -> str:
        return self.name.replace("-", "_")


# The engine whose source is this tree: the tree's commit describes it only
# when it was imported from here (see provenance.vouches_for).
TREE_ENGINE = "taskito"

BOTH = ("thread", "process")
ENGINES: dict[str, EngineInfo] = {
    info.name: info
    for info in (
        # Its worker processes: `taskito worker`, or `taskito worker --processes N` (see taskito.py).
        EngineInfo("taskito", ("memory", "file", "file-full", "postgres"), BOTH, "taskito worker"),
        # The project this one re-implements: the ``taskito`` on PyPI.
        EngineInfo(
            "taskito-ref",
            ("file",),
            BOTH,
            "taskito worker",
            needs_python="it is the taskito package from PyPI, which this tree's interpreter "
            "must not import (its taskito is this tree's); install it in a venv of its own "
            "(python -m venv ref && ref/bin/pip install taskito) and pass "
            "--python taskito-ref=ref/bin/python",
        ),
        EngineInfo("threadpool", ("memory",), ("thread",)),
        EngineInfo("huey", ("memory", "file", "file-full"), BOTH, "huey_consumer -k process", "processes"),
        EngineInfo("celery", ("redis",), ("process",), "celery worker --pool=prefork", "processes"),
        EngineInfo("rq", ("redis",), ("process",), "rq worker-pool", "processes"),
        EngineInfo("dramatiq", ("redis",), ("process",), "dramatiq --processes"),
        EngineInfo("procrastinate", ("postgres",), ("process",), "procrastinate worker"),
        # Its ``pgq run`` fails with recent typer: the worker calls pgqueuer.run() (see pgqueuer.py).
        EngineInfo("pgqueuer", ("postgres",), ("process",), "pgqueuer.run()"),
        # Async task queues on Redis: they run only async tasks (async_sleep).
        EngineInfo("saq", ("redis",), ("process",), "saq", "event loop"),
        EngineInfo("taskiq", ("redis",), ("process",), "taskiq worker", "event loop"),
    )
}


def load(name: str) -> type[Adapter]:
    """The adapter class of an engine; imports the engine's package."""
    module = importlib.import_module(f"benchmarks.engines.{ENGINES[name].module}")
    adapter: type[Adapter] = module.ADAPTER
    return adapter
