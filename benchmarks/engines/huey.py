"""Huey, the closest embedded peer: a consumer with worker threads in the
cell's process, storing in SQLite (``SqliteHuey``) or memory (``MemoryHuey``).

The consumer's idle polling starts at 1 ms and backs off to 50 ms instead of
its defaults (0.1 s to 10 s), and ``result.get()`` polls at 0.5 ms, so that
round trips measure Huey rather than its sleep settings. ``SqliteHuey`` has
no setting equal to taskito's ``synchronous=NORMAL``: "file" runs with
``fsync=False`` (``synchronous=OFF``, as fast and less durable), "file-full"
with ``fsync=True``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import huey
from huey import MemoryHuey, SqliteHuey
from huey.consumer import Consumer

from benchmarks.engines.base import Adapter
from benchmarks.grid import Cell


class HueyAdapter(Adapter):
    package = huey

    def __init__(self, cell: Cell, workdir: Path) -> None:
        super().__init__(cell, workdir)
        if cell.db == "memory":
            self.huey: huey.Huey = MemoryHuey("bench")
            self.durability = "memory"
        else:
            fsync = cell.db == "file-full"
            self.huey = SqliteHuey("bench", filename=str(workdir / "huey.db"), fsync=fsync)
            self.durability = "full" if fsync else "off"
        self.task = self.huey.task(retries=0, name=cell.task)(self.fn)
        self.errors = 0
        self.lock = threading.Lock()
        # Huey stores no completion times: its consumer thread reports each
        # job done through a signal, right after storing the result (or, for
        # an error, right before).
        self.done_at: dict[str, float] = {}
        self.huey.signal(huey.signals.SIGNAL_COMPLETE)(self._note_done)
        self.huey.signal(huey.signals.SIGNAL_ERROR)(self._count_error)
        self.consumer: Consumer | None = None

    def _note_done(self, signal: str, task: Any, *args: Any) -> None:
        self.done_at[task.id] = time.time()

    def _count_error(self, signal: str, task: Any, exc: BaseException | None = None) -> None:
        self.done_at[task.id] = time.time()
        with self.lock:
            self.errors += 1

    def describe(self) -> dict[str, str]:
        kind = "MemoryHuey" if self.cell.db == "memory" else "SqliteHuey"
        return {
            "engine_version": huey.__version__,
            "engine_setup": f"{kind}, consumer with {self.cell.workers} worker threads in process",
            "durability": self.durability,
            "store_version": "" if self.cell.db == "memory" else f"sqlite {sqlite3.sqlite_version}",
        }

    def start_workers(self) -> None:
        self.consumer = self.huey.create_consumer(
            workers=self.cell.workers,
            worker_type="thread",
            initial_delay=0.001,
            max_delay=0.05,
            periodic=False,
        )
        self.consumer.start()

    def stop_workers(self) -> None:
        if self.consumer is not None:
            self.consumer.stop(graceful=True)
            self.consumer = None

    def enqueue_one(self, arg: int) -> Any:
        return self.task(arg)

    def enqueue_many(self, args: Any) -> list[Any]:
        return list(self.task.map(args))

    def finished(self) -> int:
        return int(self.huey.result_count())

    def result(self, handle: Any, timeout: float) -> Any:
        return handle.get(blocking=True, timeout=timeout, backoff=1.0, max_delay=0.0005, preserve=True)

    def finished_at(self, handles: list[Any]) -> list[float | None]:
        return [self.done_at.get(handle.id) for handle in handles]

    def failures(self, handles: list[Any]) -> int:
        return self.errors

    def close(self) -> None:
        self.stop_workers()
        self.huey.storage.close()


ADAPTER = HueyAdapter
