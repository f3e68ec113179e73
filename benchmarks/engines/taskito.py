"""taskito, this tree's (or another build of it, under ``--python``): workers
as threads of the cell's process (``start_worker()``) or as ``taskito
worker`` processes beside it (see ``taskito_family``): one process is
``taskito worker --workers T``, N of them ``taskito worker --processes N
--workers T``, the supervisor its README deploys (which starts each as a
new interpreter, and restarts one that dies).

Async kinds (``async_sleep``): the task is the ``async def`` itself, run on
the worker's event loop, with ``Queue(async_concurrency=cell.async_concurrency)``
(the same as ``--async-concurrency``) in the cell and its worker processes.

Chains: ``chain(task.s(i), task.s(), ...).delay()`` (``from taskito import
chain``), whose handle is the last step's ``JobResult``; the steps before it
are found through ``JobResult.dependencies``. A taskito without them
(before issue 12's canvas) skips its chain cells, saying so.

On SQLite (memory, file, file-full) or on PostgreSQL (postgres):
``Queue(backend="postgres", db_url=..., schema=...)`` in a schema of the
cell's own (``pgcell.CellSchema``), which taskito creates on first use and
the cell drops. The probe of a postgres cell opens such a Queue, so a
taskito without a working PostgreSQL backend is skipped with what it raised.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import taskito
import taskito._native
from benchmarks.apps import AppSettings
from benchmarks.engines import base
from benchmarks.engines.taskito_family import TaskitoFamilyAdapter
from benchmarks.grid import Cell
from benchmarks.pg import redact
from benchmarks.tasks import CHAIN_LENGTH, is_async
from taskito import JobResult, Queue
from taskito._native import SQLITE_VERSION

if TYPE_CHECKING:
    from benchmarks.engines.pgcell import CellSchema

# The package as any module, whose canvas (issue 12) may be missing from this
# tree's stubs: ``chain`` is looked up when a chain cell runs (see cannot_run).
CANVAS: ModuleType = taskito

# The SQLite database each mode opens, and its durability setting.
DATABASES = {
    "memory": (":memory:", "normal"),
    "file": ("taskito.db", "normal"),
    "file-full": ("taskito.db", "full"),
}


class TaskitoAdapter(TaskitoFamilyAdapter):
    package = taskito
    queue_class = Queue

    def __init__(self, cell: Cell, workdir: Path) -> None:
        # Named before the Queue is built (in super().__init__), which makes it.
        self.schema = _cell_schema(cell, workdir, "taskito")
        try:
            super().__init__(cell, workdir)
        except BaseException:
            if self.schema is not None:
                self.schema.close()
            raise

    @classmethod
    def probe(cls, cell: Cell) -> None:
        """On postgres: the server answers, and this taskito opens a Queue on it."""
        if cell.db != "postgres":
            return
        with tempfile.TemporaryDirectory(prefix="bench-taskito-probe-") as folder:
            schema = _cell_schema(cell, Path(folder), "taskito_probe")
            assert schema is not None
            try:
                queue = cls.queue_class(**postgres_options(cell.pg_url, schema.name), workers=1)
                queue.stats()
                queue.close()
            except Exception as exc:
                raise base.Unavailable(
                    f"the taskito at {base.package_path(taskito)} has no working PostgreSQL backend: "
                    f"Queue(backend='postgres', db_url='{redact(cell.pg_url)}', schema=...) raised "
                    f"{type(exc).__name__}: {redact(str(exc))}"
                ) from None
            finally:
                schema.close()

    @classmethod
    def cannot_run(cls, cell: Cell) -> str | None:
        if cell.task == "chain" and not (hasattr(taskito, "chain") and hasattr(JobResult, "dependencies")):
            return (
                f"the taskito at {base.package_path(taskito)} has no canvas API yet (`from taskito import "
                "chain` and JobResult.dependencies, issue 12, being built): its chain cells run once it lands"
            )
        return None

    @classmethod
    def build(cls) -> dict[str, str]:
        """Adds the compiled engine's file, hash and mtime: an extension
        module is git-ignored, so the tree's commit cannot vouch for it (it
        may be older than the sources, or built from other ones)."""
        assert taskito._native.__file__ is not None
        return {**super().build(), "engine_build": base.compiled_build(Path(taskito._native.__file__))}

    def app_settings(self) -> AppSettings:
        coroutines = {"async_concurrency": self.cell.async_concurrency} if is_async(self.cell.task) else {}
        if self.schema is not None:
            options = postgres_options(self.cell.pg_url, self.schema.name)
            return AppSettings("", self.cell.workers, self.cell.task, options | coroutines)
        path, durability = DATABASES[self.cell.db]
        db_path = path if path == ":memory:" else str(self.workdir / path)
        options = {"durability": durability} | coroutines
        return AppSettings(db_path, self.cell.workers, self.cell.task, options)

    def worker_commands(self) -> int:
        """One: ``--processes N`` starts N worker processes under it (none for threads)."""
        return min(self.cell.processes, 1)

    def worker_options(self) -> list[str]:
        several = ["--processes", str(self.cell.processes)] if self.cell.processes > 1 else []
        coroutines = (
            ["--async-concurrency", str(self.cell.async_concurrency)] if is_async(self.cell.task) else []
        )
        return [*several, "--workers", str(self.cell.workers), *coroutines, "--log-level", "WARNING"]

    def describe(self) -> dict[str, str]:
        threads = f"start_worker(), {self.cell.workers} executor threads"
        if is_async(self.cell.task):
            threads += f", async_concurrency={self.cell.async_concurrency}"
        setup = {"engine_version": taskito.__version__, "engine_setup": self.placement_setup(threads)}
        if self.schema is not None:
            return {**setup, **self.schema.describe()}
        return {
            **setup,
            "durability": "memory" if self.cell.db == "memory" else DATABASES[self.cell.db][1],
            "store_version": f"sqlite {SQLITE_VERSION}",
        }

    def start_threads(self) -> None:
        self.queue.start_worker()

    def stop_threads(self) -> None:
        self.queue.shutdown()

    def enqueue_one(self, arg: int) -> Any:
        if self.cell.task == "chain":
            return self.chain(arg)
        return super().enqueue_one(arg)

    def enqueue_many(self, args: Sequence[int]) -> list[Any]:
        if self.cell.task == "chain":  # no batch call for chains
            return [self.chain(arg) for arg in args]
        return super().enqueue_many(args)

    def chain(self, arg: int) -> Any:
        """A chain of CHAIN_LENGTH steps, each passing ``arg`` on; its last step's JobResult."""
        steps = [self.task.s(arg), *(self.task.s() for _ in range(CHAIN_LENGTH - 1))]
        return CANVAS.chain(*steps).delay()

    def steps(self, handles: list[Any]) -> list[Any]:
        """For chains, each last step and the steps it depends on, back to the first."""
        if self.cell.task != "chain":
            return handles
        found = []
        for last in handles:
            chain = [last]
            while len(chain) < CHAIN_LENGTH:
                parents = chain[-1].dependencies
                if len(parents) != 1:
                    raise RuntimeError(f"step {chain[-1].id} of a chain depends on {parents}, not one step")
                parent = self.queue.get_job(parents[0])
                if parent is None:
                    raise RuntimeError(f"step {parents[0]} of a chain is gone")
                chain.append(parent)
            found += chain
        return found

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

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.schema is not None:
                self.schema.close()


def postgres_options(url: str, schema: str) -> dict[str, Any]:
    """The Queue's keyword arguments for a PostgreSQL database."""
    return {"backend": "postgres", "db_url": url, "schema": schema}


def _cell_schema(cell: Cell, workdir: Path, name: str) -> CellSchema | None:
    """A ``pgcell.CellSchema`` for a postgres cell (taskito creates it), else
    None. pgcell needs psycopg, imported only for such cells."""
    if cell.db != "postgres":
        return None
    from benchmarks.engines import pgcell

    return pgcell.CellSchema(cell.pg_url, workdir, name, create=False)


ADAPTER = TaskitoAdapter
