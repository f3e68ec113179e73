"""Huey, the closest embedded peer, storing in SQLite (``SqliteHuey``) or
memory (``MemoryHuey``), its consumer placed two ways:

- ``thread``: a consumer with worker threads in the cell's process;
- ``process``: ``huey_consumer benchmarks.apps.huey_app.huey -k process -w
  N``, the consumer command its documentation gives for CPU-bound tasks: N
  forked worker processes (the cell's processes), each running one task at
  a time, on the same SQLite file (see ``benchmarks.apps.huey_app``).

The consumer's idle polling starts at 1 ms and backs off to 50 ms instead of
its defaults (0.1 s to 10 s), and ``result.get()`` polls at 0.5 ms, so that
round trips measure Huey rather than its sleep settings. ``SqliteHuey`` has
no setting equal to taskito's ``synchronous=NORMAL``: "file" runs with
``fsync=False`` (``synchronous=OFF``, as fast and less durable), "file-full"
with ``fsync=True``.

Chains are Huey's pipelines (``task.s(i).then(task)...``), whose enqueue
returns every step's result handle. No async kinds: Huey refuses coroutine
functions.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

import huey
from huey import MemoryHuey
from huey.consumer import Consumer

from benchmarks.apps import finish_notes, huey_app
from benchmarks.engines import base
from benchmarks.grid import Cell, placement_conflict
from benchmarks.tasks import CHAIN_LENGTH, is_async, task_of

DB_FILE = "huey.db"
# The consumer's polling: first and longest sleep when the queue is empty.
INITIAL_DELAY, MAX_DELAY = 0.001, 0.05


class HueyAdapter(base.ProcessWorkerAdapter):
    package = huey
    worker_name = "huey"

    def __init__(self, cell: Cell, workdir: Path) -> None:
        super().__init__(cell, workdir)
        conflict = placement_conflict(cell)
        if conflict:  # the sweep skips such cells; a caller that did not is told why
            raise ValueError(conflict)
        if cell.db == "memory":
            self.huey: huey.Huey = MemoryHuey("bench")
            self.task = self.huey.task(retries=0, name=cell.task)(task_of(cell.task))
            self.durability = "memory"
        else:
            fsync = cell.db == "file-full"
            filename = str(workdir / DB_FILE)
            self.huey, self.task = huey_app.declare(filename, fsync, cell.task)
            self.durability = "full" if fsync else "off"
            settings = {"filename": filename, "fsync": fsync, "task": cell.task}
            self.worker_env[huey_app.SETTINGS_ENV] = json.dumps(settings)
        self.errors = 0
        self.lock = threading.Lock()
        # Huey stores no completion times: its consumer thread reports each
        # job done through a signal, right after storing the result (or, for
        # an error, right before). Worker processes note theirs in files.
        self.done_at: dict[str, float] = {}
        self.huey.signal(huey.signals.SIGNAL_COMPLETE)(self._note_done)
        self.huey.signal(huey.signals.SIGNAL_ERROR)(self._count_error)
        self.consumer: Consumer | None = None
        self.argv = [
            sys.executable,
            "-m",
            "huey.bin.huey_consumer",
            "benchmarks.apps.huey_app.huey",
            *self.consumer_options(),
        ]

    @classmethod
    def cannot_run(cls, cell: Cell) -> str | None:
        if is_async(cell.task):
            return "Huey refuses coroutine functions (its error says to wrap them in asyncio.run())"
        return None

    def consumer_options(self) -> list[str]:
        """Of ``huey_consumer``: process workers, its polling, SIGTERM for a graceful stop, no
        periodic tasks."""
        return [
            "--worker-type=process",
            f"--workers={self.cell.processes}",
            f"--delay={INITIAL_DELAY}",
            f"--max-delay={MAX_DELAY}",
            "--graceful-signal=TERM",
            "--no-periodic",
            "--quiet",
        ]

    def _note_done(self, signal: str, task: Any, *args: Any) -> None:
        self.done_at[task.id] = time.time()

    def _count_error(self, signal: str, task: Any, exc: BaseException | None = None) -> None:
        self.done_at[task.id] = time.time()
        with self.lock:
            self.errors += 1

    def describe(self) -> dict[str, str]:
        kind = "MemoryHuey" if self.cell.db == "memory" else "SqliteHuey"
        if self.cell.placement == "process":
            setup = f"{kind}, `huey_consumer ... {' '.join(self.consumer_options())}`"
        else:
            setup = f"{kind}, consumer with {self.cell.workers} worker threads in process"
        return {
            "engine_version": huey.__version__,
            "engine_setup": setup,
            "durability": self.durability,
            "store_version": "" if self.cell.db == "memory" else f"sqlite {sqlite3.sqlite_version}",
        }

    def start_workers(self) -> None:
        if self.cell.placement == "process":
            super().start_workers()
            return
        self.consumer = self.huey.create_consumer(
            workers=self.cell.workers,
            worker_type="thread",
            initial_delay=INITIAL_DELAY,
            max_delay=MAX_DELAY,
            periodic=False,
        )
        self.consumer.start()

    def stop_workers(self) -> None:
        if self.cell.placement == "process":
            super().stop_workers()
        elif self.consumer is not None:
            self.consumer.stop(graceful=True)
            self.consumer = None

    def enqueue_one(self, arg: int) -> Any:
        if self.cell.task == "chain":
            return self.chain(arg)
        return self.task(arg)

    def enqueue_many(self, args: Any) -> list[Any]:
        if self.cell.task == "chain":  # no batch call for pipelines
            return [self.chain(arg) for arg in args]
        return list(self.task.map(args))

    def chain(self, arg: int) -> Any:
        """A pipeline of CHAIN_LENGTH steps; the handles of all its steps' results."""
        pipeline = self.task.s(arg)
        for _ in range(CHAIN_LENGTH - 1):
            pipeline = pipeline.then(self.task)
        return self.huey.enqueue(pipeline)

    def steps(self, handles: list[Any]) -> list[Any]:
        if self.cell.task != "chain":
            return handles
        return [result for group in handles for result in group]

    def finished(self) -> int:
        return int(self.huey.result_count())

    def result(self, handle: Any, timeout: float) -> Any:
        last = list(handle)[-1] if self.cell.task == "chain" else handle
        return base.wait_checking(lambda seconds: self.wait(last, seconds), self.check, timeout)

    def wait(self, handle: Any, timeout: float) -> Any:
        try:
            return handle.get(blocking=True, timeout=timeout, backoff=1.0, max_delay=0.0005, preserve=True)
        except huey.exceptions.ResultTimeout:
            raise TimeoutError(f"no result for Huey task {handle.id} within {timeout}s") from None

    def finished_at(self, handles: list[Any]) -> list[float | None]:
        done_at = self.done_at if self.cell.placement == "thread" else self.noted()[0]
        return [done_at.get(handle.id) for handle in handles]

    def noted(self) -> tuple[dict[str, float], int]:
        """What the worker processes noted: when each task finished, and how many failed."""
        return finish_notes.read(self.workdir, huey_app.FINISHED_FILES)

    def failures(self, handles: list[Any]) -> int:
        return self.errors if self.cell.placement == "thread" else self.noted()[1]

    def close_clients(self) -> None:
        self.huey.storage.close()


ADAPTER = HueyAdapter
