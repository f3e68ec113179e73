"""taskito-ref: the ``taskito`` package on PyPI, the project this tree
re-implements, driven through its public API. It needs an interpreter of
its own (``--python taskito-ref=/path/to/venv/bin/python``): this tree's
interpreter imports this tree's taskito under the same name.

Its Queue on a WAL file (it sets ``synchronous=NORMAL`` itself and has no
setting for it); workers as a ``run_worker()`` thread in the cell's process,
stopped by ``shutdown()``, or as ``taskito worker`` processes (its CLI takes
the same ``--app``; the worker count comes from the Queue). Run as Huey is,
with its polling set so that the figures measure the engine rather than its
sleep settings: the scheduler polls every 1 ms (``scheduler_poll_interval_ms``,
default 50) and ``result()`` every 0.5 ms (default 50 ms, backing off to
0.5 s). Logs at WARNING (``TASKITO_LOG_LEVEL``), as the peers' workers run:
at its default INFO it logs two lines per job. Its timestamps are integer
milliseconds, which bounds the resolution of its drain and stored latencies.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

from benchmarks import provenance
from benchmarks.apps import AppSettings
from benchmarks.engines import base
from benchmarks.engines.taskito_family import TaskitoFamilyAdapter
from benchmarks.grid import Cell
from benchmarks.tasks import is_async

# Untyped on purpose: to mypy, ``taskito`` is this tree's package.
taskito: ModuleType = importlib.import_module("taskito")

DB_FILE = "taskito-ref.db"
QUEUE_OPTIONS = {"scheduler_poll_interval_ms": 1}
RESULT_POLL = 0.0005  # seconds, first and longest
LOG_LEVEL = {"TASKITO_LOG_LEVEL": "WARNING"}
STOP_TIMEOUT = 30.0
# This tree (through the link cells import benchmarks by): its taskito is not the reference.
TREE = Path(__file__).resolve().parent.parent.parent


class TaskitoRefAdapter(TaskitoFamilyAdapter):
    package = taskito
    queue_class = taskito.Queue

    @classmethod
    def probe(cls, cell: Cell) -> None:
        where = base.package_path(taskito)
        if provenance.vouches_for(TREE, where):
            raise base.Unavailable(
                f"the taskito this interpreter imports is this tree's ({where}), not the one on PyPI: "
                "pass --python taskito-ref=PATH with the python of a venv where it is installed"
            )
        if not hasattr(taskito.Queue, "enqueue_many"):
            raise base.Unavailable(f"the taskito at {where} is not the PyPI project (no Queue.enqueue_many)")

    @classmethod
    def cannot_run(cls, cell: Cell) -> str | None:
        if cell.task == "chain":
            return (
                "taskito-ref's chain.apply() enqueues each step only once the client has waited for the "
                "step before: no chain that workers drain from a backlog"
            )
        if is_async(cell.task):
            return "taskito-ref's async tasks are not wired into this harness"
        return None

    @classmethod
    def build(cls) -> dict[str, str]:
        """Adds its compiled extension's file, hash and mtime, as for this tree's."""
        spec = importlib.util.find_spec("taskito._taskito")
        native = "" if spec is None or spec.origin is None else base.compiled_build(Path(spec.origin))
        return {**super().build(), "engine_build": native}

    def __init__(self, cell: Cell, workdir: Path) -> None:
        # Read as the Queue's worker starts: in this process for threads,
        # from worker_env in worker processes.
        os.environ.update(LOG_LEVEL)
        super().__init__(cell, workdir)
        self.worker_env.update(LOG_LEVEL)
        self.thread: threading.Thread | None = None

    def app_settings(self) -> AppSettings:
        return AppSettings(str(self.workdir / DB_FILE), self.cell.workers, self.cell.task, QUEUE_OPTIONS)

    def describe(self) -> dict[str, str]:
        polling = f"scheduler_poll_interval_ms={QUEUE_OPTIONS['scheduler_poll_interval_ms']}"
        return {
            "engine_version": str(taskito.__version__),
            "engine_setup": self.placement_setup(f"run_worker() in a thread, {self.cell.workers} workers")
            + f", {polling}",
            "durability": "normal",
            "store_version": sqlite_header_version(Path(self.settings.db_path)),
        }

    def start_threads(self) -> None:
        self.thread = threading.Thread(target=self.queue.run_worker, name="taskito-ref-worker", daemon=True)
        self.thread.start()

    def stop_threads(self) -> None:
        """``shutdown()`` is lost if it comes before the worker runs:
        repeated until the thread has ended."""
        if self.thread is None:
            return
        thread, self.thread = self.thread, None
        for _ in range(int(STOP_TIMEOUT / 0.1)):
            self.queue.shutdown()
            thread.join(0.1)
            if not thread.is_alive():
                return
        raise RuntimeError(f"taskito-ref's worker thread did not stop within {STOP_TIMEOUT:g}s")

    def wait(self, handle: Any, timeout: float) -> Any:
        return handle.result(timeout=timeout, poll_interval=RESULT_POLL, max_poll_interval=RESULT_POLL)

    def finished_at(self, handles: list[Any]) -> list[float | None]:
        # completed_at: Unix milliseconds, set as the job's outcome is stored.
        return [_seconds(handle.to_dict()["completed_at"]) for handle in handles]

    def stored_latencies(self, handles: list[Any]) -> list[float]:
        latencies = []
        for handle in handles:
            data = handle.to_dict()
            if data["completed_at"] is not None:
                latencies.append((data["completed_at"] - data["created_at"]) / 1e3)
        return latencies


def _seconds(milliseconds: int | None) -> float | None:
    return None if milliseconds is None else milliseconds / 1e3


def sqlite_header_version(path: Path) -> str:
    """The SQLite library that last wrote the database's header (bytes
    96-99, its SQLITE_VERSION_NUMBER): the reference does not say which
    SQLite it bundles."""
    try:
        with path.open("rb") as f:
            f.seek(96)
            number = int.from_bytes(f.read(4), "big")
    except OSError:
        return ""
    if not number:
        return ""
    return f"sqlite {number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


ADAPTER = TaskitoRefAdapter
