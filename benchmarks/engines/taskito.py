"""taskito: workers are threads of the cell's process, as with ``start_worker()``."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import taskito
import taskito._native
from benchmarks.engines.base import Adapter
from benchmarks.grid import Cell
from taskito import JobResult, Queue
from taskito._native import SQLITE_VERSION

# The database each mode opens, and its durability setting.
DATABASES = {
    "memory": (":memory:", "normal"),
    "file": ("taskito.db", "normal"),
    "file-full": ("taskito.db", "full"),
}


class TaskitoAdapter(Adapter):
    package = taskito

    @classmethod
    def build(cls) -> dict[str, str]:
        """Adds the compiled engine's file, hash and mtime: an extension
        module is git-ignored, so the tree's commit cannot vouch for it (it
        may be older than the sources, or built from other ones)."""
        assert taskito._native.__file__ is not None
        native = Path(taskito._native.__file__).resolve()
        digest = hashlib.sha256(native.read_bytes()).hexdigest()[:16]
        mtime = datetime.fromtimestamp(native.stat().st_mtime, UTC).isoformat(timespec="seconds")
        return {**super().build(), "engine_build": f"{native.name} sha256:{digest} mtime {mtime}"}

    def __init__(self, cell: Cell, workdir: Path) -> None:
        super().__init__(cell, workdir)
        path, self.durability = DATABASES[cell.db]
        db_path = path if path == ":memory:" else str(workdir / path)
        # No retries, as for every engine here: a failure counts at once.
        self.queue = Queue(db_path, workers=cell.workers, default_retry=0, durability=self.durability)
        self.task = self.queue.task(name=cell.task)(self.fn)

    def describe(self) -> dict[str, str]:
        return {
            "engine_version": taskito.__version__,
            "engine_setup": f"start_worker(), {self.cell.workers} executor threads",
            "durability": "memory" if self.cell.db == "memory" else self.durability,
            "store_version": f"sqlite {SQLITE_VERSION}",
        }

    def start_workers(self) -> None:
        self.queue.start_worker()

    def stop_workers(self) -> None:
        self.queue.shutdown()

    def enqueue_one(self, arg: int) -> JobResult:
        return self.task.delay(arg)

    def enqueue_many(self, args: Sequence[int]) -> list[JobResult]:
        return self.task.map([(arg,) for arg in args])

    def finished(self) -> int:
        stats = self.queue.stats()
        return stats["completed"] + stats["dead"]

    def result(self, handle: Any, timeout: float) -> Any:
        return handle.result(timeout=timeout)

    def finished_at(self, handles: list[Any]) -> list[float | None]:
        # Taken by the worker as each task returns (microseconds); the
        # outcomes are committed in batches right after.
        return [handle.to_dict()["finished_at"] for handle in handles]

    def failures(self, handles: list[Any]) -> int:
        return self.queue.stats()["dead"]

    def stored_latencies(self, handles: list[Any]) -> list[float]:
        latencies = []
        for handle in handles:
            data = handle.to_dict()
            if data["finished_at"] is not None:
                latencies.append(data["finished_at"] - data["created_at"])
        return latencies

    def close(self) -> None:
        self.queue.close()


ADAPTER = TaskitoAdapter
