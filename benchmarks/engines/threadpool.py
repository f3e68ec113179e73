"""The floor: ``concurrent.futures.ThreadPoolExecutor`` running the task with
no queue, storage or serialization at all. Jobs "enqueued" while it is stopped
wait in a list and are submitted when it starts, so its enqueue rates are
not measured and its drain includes the ``submit()`` of every job."""

from __future__ import annotations

import concurrent.futures
import functools
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.engines.base import Adapter
from benchmarks.grid import Cell
from benchmarks.tasks import is_async


class Pending:
    """A job submitted before the pool started: becomes a Future then."""

    def __init__(self, arg: int) -> None:
        self.arg = arg
        self.future: Future[Any] | None = None
        self.finished_at: float | None = None


class ThreadPoolAdapter(Adapter):
    stores_jobs = False
    package = concurrent.futures

    def __init__(self, cell: Cell, workdir: Path) -> None:
        super().__init__(cell, workdir)
        self.pool: ThreadPoolExecutor | None = None
        self.backlog: list[Pending] = []
        self.count = 0
        self.lock = threading.Lock()

    @classmethod
    def cannot_run(cls, cell: Cell) -> str | None:
        if is_async(cell.task):
            return "a thread pool has no event loop for coroutines"
        if cell.task == "chain":
            return "a thread pool has no chains"
        return None

    def describe(self) -> dict[str, str]:
        return {
            "engine_version": sys.version.split()[0],
            "engine_setup": f"ThreadPoolExecutor({self.cell.workers})",
            "durability": "memory",
            "store_version": "",
        }

    def _on_done(self, job: Pending, future: Future[Any]) -> None:
        # Called by the pool's thread as the job finishes (or by the
        # submitting thread, at once, if it finished before the callback was
        # added). The time first, so that all are set once the count is full.
        job.finished_at = time.time()
        with self.lock:
            self.count += 1

    def _submit(self, job: Pending) -> None:
        assert self.pool is not None
        fn: Callable[[int], object] = self.fn
        job.future = self.pool.submit(fn, job.arg)
        job.future.add_done_callback(functools.partial(self._on_done, job))

    def start_workers(self) -> None:
        self.pool = ThreadPoolExecutor(self.cell.workers)
        backlog, self.backlog = self.backlog, []
        for job in backlog:
            self._submit(job)

    def stop_workers(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None

    def enqueue_one(self, arg: int) -> Pending:
        job = Pending(arg)
        if self.pool is None:
            self.backlog.append(job)
        else:
            self._submit(job)
        return job

    def finished(self) -> int:
        return self.count

    def finished_at(self, handles: list[Any]) -> list[float | None]:
        return [handle.finished_at for handle in handles]

    def result(self, handle: Any, timeout: float) -> Any:
        return handle.future.result(timeout)

    def failures(self, handles: list[Any]) -> int:
        return sum(1 for h in handles if h.future is not None and h.future.exception() is not None)

    def close(self) -> None:
        self.stop_workers()


ADAPTER = ThreadPoolAdapter
