"""pgqueuer 1.6 on PostgreSQL, through its own API: ``Queries.enqueue`` with
one job, and with lists for a batch (one statement); one worker process
(``benchmarks.apps.pgqueuer_app``: ``pgqueuer.run()`` of a ``PgQueuer``
with its defaults, batches of 10, the task in a pool of N threads); and
round trips waited for by its completion waiter, ``CompletionWatcher``.

Where pgqueuer 1.6's documentation and code differ, this follows the code
that is installed:

- the waiter is ``pgqueuer.core.completion.CompletionWatcher(driver,
  queries=...)``; the documentation imports it from ``pgqueuer.completion``
  (no such module in 1.6) and builds it from the driver alone (``queries``
  is a required keyword);
- the worker factory must be an async context manager (the documentation
  also shows a coroutine returning the ``PgQueuer``, which 1.6 refuses);
- ``pgq run`` fails with recent typer, so the worker calls ``pgqueuer.run()``,
  which does what ``pgq run`` does (see ``benchmarks/apps/pgqueuer_app.py``).

Its tables live in the cell's schema (``PGQUEUER_SCHEMA``, pgqueuer's
setting for that; ``Queries.install()`` makes the schema) and its NOTIFY
channel is the cell's own (``PGQUEUER_CHANNEL``), set in this process and
the worker's. pgqueuer keeps no results: the round trip ends when the
waiter reports the job ``successful``, which is what it returns. The worker
writes outcomes in batches, when 10 are done or 0.1 s after the first, and
the waiter looks 50 ms after a notification (its default ``debounce``): a
round trip waits for both. Each outcome is a row of ``pgqueuer_log``
(``created`` = the transaction's ``now()``), as is each enqueue (status
``queued``): the drain and stored latencies come from there, and so does
the count of finished jobs, read with plain SQL (pgqueuer's statistics
API folds the log into another table as it reads).

The producer's calls run on an event loop of this process (uvloop's where
installed), one ``asyncio.Runner`` call each.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import pgqueuer
from pgqueuer import AsyncpgDriver, Queries
from pgqueuer.core.completion import CompletionWatcher
from pgqueuer.domain.settings import db_settings
from psycopg import sql

from benchmarks.apps.pgqueuer_app import SETTINGS_ENV
from benchmarks.engines import base, pgcell
from benchmarks.grid import Cell
from benchmarks.tasks import is_async

# The log's statuses of a job that will not run again.
FINISHED = ["successful", "exception", "canceled", "deleted", "failed"]


class PgQueuerAdapter(base.ProcessWorkerAdapter):
    package = pgqueuer
    worker_name = "pgqueuer"

    @classmethod
    def cannot_run(cls, cell: Cell) -> str | None:
        if is_async(cell.task):
            return "pgqueuer's async tasks are not wired into this harness"
        if cell.task == "chain":
            return "pgqueuer has no chain that passes a job's result to the next"
        return None

    @classmethod
    def probe(cls, cell: Cell) -> None:
        pgcell.connect(cell.pg_url).close()

    def __init__(self, cell: Cell, workdir: Path) -> None:
        super().__init__(cell, workdir)
        self.schema = pgcell.CellSchema(cell.pg_url, workdir, "pgqueuer", create=False)
        names = {"PGQUEUER_SCHEMA": self.schema.name, "PGQUEUER_CHANNEL": f"ch_{self.schema.name}"}
        os.environ.update(names)
        db_settings.cache_clear()  # read from the environment once, and maybe already read
        self.worker_env.update(names)
        self.worker_env[SETTINGS_ENV] = json.dumps(
            {"url": cell.pg_url, "task": cell.task, "workers": cell.workers}
        )
        self.argv = [sys.executable, "-m", "benchmarks.apps.pgqueuer_app"]
        self.entrypoint = cell.task
        self.runner = asyncio.Runner(loop_factory=_loop_factory())
        self.connection: Any = None
        self.watcher: Any = None
        try:
            self.connection = self.runner.run(asyncpg.connect(cell.pg_url))
            driver = AsyncpgDriver(self.connection)
            self.queries = Queries(driver)
            self.runner.run(self.queries.install())
            watcher = CompletionWatcher(driver, queries=self.queries)
            self.runner.run(watcher.__aenter__())
            self.watcher = watcher  # entered: close_clients leaves it
        except BaseException:
            self.close()
            raise

    def describe(self) -> dict[str, str]:
        return {
            "engine_version": pgqueuer.__version__,
            "engine_setup": f"pgqueuer.run(), 1 PgQueuer, task in {self.cell.workers} threads",
            **self.schema.describe(),
        }

    def enqueue_one(self, arg: int) -> int:
        (job_id,) = self.runner.run(self.queries.enqueue(self.entrypoint, _payload(arg)))
        return int(job_id)

    def enqueue_many(self, args: Sequence[int]) -> list[int]:
        count = len(args)
        ids = self.runner.run(
            self.queries.enqueue([self.entrypoint] * count, [_payload(a) for a in args], [0] * count)
        )
        return [int(job_id) for job_id in ids]

    def _log_count(self, statuses: list[str]) -> int:
        row = self.schema.conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE status::text = ANY(%s)").format(
                self.schema.table("pgqueuer_log")
            ),
            [statuses],
        ).fetchone()
        return int(row[0]) if row else 0

    def finished(self) -> int:
        return self._log_count(FINISHED)

    def failures(self, handles: list[Any]) -> int:
        return self._log_count(["exception", "failed"])

    def result(self, handle: Any, timeout: float) -> Any:
        return base.wait_checking(lambda seconds: self._wait(handle, seconds), self.check, timeout)

    def _wait(self, job_id: int, seconds: float) -> str:
        status: str = self.runner.run(self._final_status(job_id, seconds))
        if status != "successful":
            raise RuntimeError(f"pgqueuer job {job_id} ended {status}")
        return status

    async def _final_status(self, job_id: int, seconds: float) -> str:
        # The waiter's futures belong to the running loop: asked for inside it.
        status: str = await asyncio.wait_for(self.watcher.wait_for(job_id), seconds)
        return status

    def _log_times(self, handles: list[Any], statuses: list[str]) -> dict[int, float]:
        """The latest log row of one of ``statuses`` per job, in Unix time."""
        rows = self.schema.conn.execute(
            sql.SQL(
                "SELECT job_id, max(created) FROM {} WHERE job_id = ANY(%s) AND status::text = ANY(%s) "
                "GROUP BY job_id"
            ).format(self.schema.table("pgqueuer_log")),
            [list(handles), statuses],
        ).fetchall()
        return {job_id: at.timestamp() for job_id, at in rows}

    def finished_at(self, handles: list[Any]) -> list[float | None]:
        times = self._log_times(handles, FINISHED)
        return [times.get(job_id) for job_id in handles]

    def stored_latencies(self, handles: list[Any]) -> list[float]:
        queued = self._log_times(handles, ["queued"])
        finished = self._log_times(handles, FINISHED)
        return [finished[j] - queued[j] for j in handles if j in finished and j in queued]

    def close_clients(self) -> None:
        try:
            if self.watcher is not None:
                self.runner.run(self.watcher.__aexit__(None, None, None))
            if self.connection is not None:
                self.runner.run(self.connection.close())
        finally:
            self.runner.close()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.schema.close()


def _payload(arg: int) -> bytes:
    return str(arg).encode()


def _loop_factory() -> Any:
    """uvloop's event loop where it is installed (pgqueuer's CLI picks it), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


ADAPTER = PgQueuerAdapter
