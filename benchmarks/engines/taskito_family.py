"""What this tree's taskito and the PyPI reference it re-implements share:
one Queue and task declared from ``AppSettings`` (``benchmarks.apps``),
the same calls to enqueue and count, and two placements of the workers:

- ``thread``: threads of the cell's process, the Queue's own in-process
  worker;
- ``process``: ``taskito worker --app benchmarks.apps.taskito_app:queue``
  processes, the deployed shape: the cell only enqueues, waits and counts,
  through the same database. How ``cell.processes`` of them are started is
  the engine's (``worker_commands``): one command with ``--processes N``
  where the CLI has it, else N copies. The worker commands run under the
  cell's interpreter (``--python``), each logs to ``taskito-worker[-N].log``
  in the cell's folder, and one that exits fails the cell (``check``)
  instead of leaving it waiting.
"""

from __future__ import annotations

import sys
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.apps import AppSettings, build
from benchmarks.engines import base
from benchmarks.grid import Cell, placement_conflict

APP = "benchmarks.apps.taskito_app:queue"
# The ``taskito`` console script's entry point, which both packages declare
# (taskito = taskito.cli:main), run by the cell's interpreter itself rather
# than by whichever ``taskito`` script is first on PATH.
CLI = "import sys; from taskito.cli import main; sys.argv[0] = 'taskito'; sys.exit(main())"


class TaskitoFamilyAdapter(base.ProcessWorkerAdapter):
    worker_name = "taskito-worker"
    #: The engine's Queue class.
    queue_class: Any

    def __init__(self, cell: Cell, workdir: Path) -> None:
        super().__init__(cell, workdir)
        conflict = placement_conflict(cell)
        if conflict:  # the sweep skips such cells; a caller that did not is told why
            raise ValueError(conflict)
        if cell.placement == "process" and cell.processes < 1:
            raise ValueError(f"placement=process needs at least one worker process, got {cell.processes}")
        self.settings = self.app_settings()
        self.queue, self.task = build(self.queue_class, self.settings)
        self.processes = self.worker_commands()
        self.worker_env.update(self.settings.to_env())
        self.argv = [sys.executable, "-c", CLI, "worker", "--app", APP, *self.worker_options()]

    def worker_commands(self) -> int:
        """How many ``taskito worker`` commands start ``cell.processes``
        worker processes: that many copies, where the CLI cannot start
        several (``worker_options`` then says nothing of processes)."""
        return self.cell.processes

    @abstractmethod
    def app_settings(self) -> AppSettings:
        """The Queue this cell uses, in its workdir."""

    def worker_options(self) -> list[str]:
        """Options of ``taskito worker`` after ``--app``."""
        return []

    @abstractmethod
    def start_threads(self) -> None:
        """Starts the Queue's in-process worker, ``cell.workers`` threads."""

    @abstractmethod
    def stop_threads(self) -> None:
        """Stops it; jobs not yet run stay queued."""

    def placement_setup(self, threads: str) -> str:
        """engine_setup: ``threads`` (how the in-process worker runs) or the worker command."""
        if self.cell.placement == "thread":
            return threads
        command = " ".join(["taskito worker --app", APP, *self.worker_options()])
        if self.processes == 1 and self.cell.processes > 1:
            return f"`{command}`: a supervisor of {self.cell.processes} worker processes"
        return f"{self.processes} x `{command}`"

    def start_workers(self) -> None:
        if self.cell.placement == "process":
            super().start_workers()
        else:
            self.start_threads()

    def stop_workers(self) -> None:
        if self.cell.placement == "process":
            super().stop_workers()
        else:
            self.stop_threads()

    def enqueue_one(self, arg: int) -> Any:
        return self.task.delay(arg)

    def enqueue_many(self, args: Sequence[int]) -> list[Any]:
        jobs: list[Any] = self.task.map([(arg,) for arg in args])
        return jobs

    def finished(self) -> int:
        stats = self.queue.stats()
        return int(stats["completed"] + stats["dead"])

    def failures(self, handles: list[Any]) -> int:
        return int(self.queue.stats()["dead"])

    def result(self, handle: Any, timeout: float) -> Any:
        return base.wait_checking(lambda seconds: self.wait(handle, seconds), self.check, timeout)

    def wait(self, handle: Any, timeout: float) -> Any:
        """The job's value, by the engine's own wait; TimeoutError after ``timeout``."""
        return handle.result(timeout=timeout)

    def close_clients(self) -> None:
        self.queue.close()
