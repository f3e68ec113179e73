"""taskito, this tree's (or another build of it, under ``--python``): workers
as threads of the cell's process (``start_worker()``) or as ``taskito
worker`` processes beside it (see ``taskito_family``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import taskito
import taskito._native
from benchmarks.apps import AppSettings
from benchmarks.engines import base
from benchmarks.engines.taskito_family import TaskitoFamilyAdapter
from taskito import Queue
from taskito._native import SQLITE_VERSION

# The database each mode opens, and its durability setting.
DATABASES = {
    "memory": (":memory:", "normal"),
    "file": ("taskito.db", "normal"),
    "file-full": ("taskito.db", "full"),
}


class TaskitoAdapter(TaskitoFamilyAdapter):
    package = taskito
    queue_class = Queue

    @classmethod
    def build(cls) -> dict[str, str]:
        """Adds the compiled engine's file, hash and mtime: an extension
        module is git-ignored, so the tree's commit cannot vouch for it (it
        may be older than the sources, or built from other ones)."""
        assert taskito._native.__file__ is not None
        return {**super().build(), "engine_build": base.compiled_build(Path(taskito._native.__file__))}

    def app_settings(self) -> AppSettings:
        path, durability = DATABASES[self.cell.db]
        db_path = path if path == ":memory:" else str(self.workdir / path)
        return AppSettings(db_path, self.cell.workers, self.cell.task, {"durability": durability})

    def worker_options(self) -> list[str]:
        return ["--workers", str(self.cell.workers), "--log-level", "WARNING"]

    def describe(self) -> dict[str, str]:
        return {
            "engine_version": taskito.__version__,
            "engine_setup": self.placement_setup(f"start_worker(), {self.cell.workers} executor threads"),
            "durability": "memory" if self.cell.db == "memory" else DATABASES[self.cell.db][1],
            "store_version": f"sqlite {SQLITE_VERSION}",
        }

    def start_threads(self) -> None:
        self.queue.start_worker()

    def stop_threads(self) -> None:
        self.queue.shutdown()

    def finished_at(self, handles: list[Any]) -> list[float | None]:
        # Taken by the worker as each task returns (microseconds); the
        # outcomes are committed in batches right after.
        return [handle.to_dict()["finished_at"] for handle in handles]

    def stored_latencies(self, handles: list[Any]) -> list[float]:
        latencies = []
        for handle in handles:
            data = handle.to_dict()
            if data["finished_at"] is not None:
                latencies.append(data["finished_at"] - data["created_at"])
        return latencies


ADAPTER = TaskitoAdapter
