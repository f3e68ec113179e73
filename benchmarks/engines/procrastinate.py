"""procrastinate 3 on PostgreSQL, through its documented API: an ``App`` on a
``PsycopgConnector``, opened synchronously in the cell (``app.open()``,
``schema_manager.apply_schema()``), ``task.defer()`` one by one and
``task.batch_defer()`` for a batch, and one worker process started as its
documentation shows: ``procrastinate --app=... worker --concurrency=N``
(N jobs at once; a sync task runs in a thread of the worker's event loop).

Its tables live in the cell's schema (``pgcell.CellSchema``, made here: its
``apply_schema`` installs into the connection's schema), reached by every
connection through ``search_path``.

procrastinate stores no results and sends no completion signal: a job's
round trip is polled, ``job_manager.get_job_status(id)`` every millisecond
until the job has finished (as its documentation says to learn whether a
job is done), and the "result" is that status. It stores when each job
finished, in ``procrastinate_events`` (a trigger inserts a row at each
status change, ``at`` = the transaction's ``now()``): the drain's and the
stored latencies' times are read from there (``succeeded`` minus
``deferred``). Its count of finished jobs is ``job_manager.list_queues()``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import procrastinate
from procrastinate import App, PsycopgConnector
from procrastinate.jobs import Status
from psycopg import sql

from benchmarks.engines import base, pgcell
from benchmarks.grid import Cell
from benchmarks.tasks import TASKS, is_async

SETTINGS_ENV = "BENCH_PROCRASTINATE"  # JSON: the server's URL and the cell's schema
QUEUE = "bench"
APP = "benchmarks.apps.procrastinate_app.app"
STATUS_POLL = 0.001  # seconds between two reads of a job's status
FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.ABORTED)
# Its event types for those: when a job finished.
FINISH_EVENTS = ["succeeded", "failed", "cancelled", "aborted"]


def make_app(url: str, schema: str) -> Any:
    """The App (not yet open) with one task per kind in ``benchmarks.tasks``,
    named by kind, without retries, its connections in ``schema``."""
    connector = PsycopgConnector(conninfo=url, kwargs={"options": f"-c search_path={schema}"})
    app = App(connector=connector)
    for name, fn in TASKS.items():
        app.task(name=name, queue=QUEUE, retry=False)(fn)
    return app


class ProcrastinateAdapter(base.ProcessWorkerAdapter):
    package = procrastinate
    worker_name = "procrastinate"

    @classmethod
    def cannot_run(cls, cell: Cell) -> str | None:
        if is_async(cell.task):
            return "procrastinate's async tasks are not wired into this harness"
        if cell.task == "chain":
            return "procrastinate has no chain that passes a job's result to the next"
        return None

    @classmethod
    def probe(cls, cell: Cell) -> None:
        pgcell.connect(cell.pg_url).close()

    def __init__(self, cell: Cell, workdir: Path) -> None:
        super().__init__(cell, workdir)
        self.schema = pgcell.CellSchema(cell.pg_url, workdir, "procrastinate", create=True)
        self.app: Any = None
        try:
            self.app = make_app(cell.pg_url, self.schema.name).open()
            self.app.schema_manager.apply_schema()
        except BaseException:
            self.close()
            raise
        self.task = self.app.tasks[cell.task]
        self.worker_env[SETTINGS_ENV] = json.dumps({"url": cell.pg_url, "schema": self.schema.name})
        self.argv = [
            sys.executable,
            "-m",
            "procrastinate",
            "--log-level=warning",
            f"--app={APP}",
            "worker",
            f"--concurrency={cell.workers}",
            f"--queues={QUEUE}",
        ]

    def describe(self) -> dict[str, str]:
        return {
            "engine_version": procrastinate.__version__,
            "engine_setup": f"procrastinate worker --concurrency={self.cell.workers}",
            **self.schema.describe(),
        }

    def enqueue_one(self, arg: int) -> int:
        job_id: int = self.task.defer(x=arg)
        return job_id

    def enqueue_many(self, args: Sequence[int]) -> list[int]:
        return list(self.task.batch_defer(*({"x": arg} for arg in args)))

    def _counts(self) -> dict[str, int]:
        totals = {"succeeded": 0, "failed": 0, "cancelled": 0, "aborted": 0}
        for queue in self.app.job_manager.list_queues():
            for status in totals:
                totals[status] += int(queue[status])
        return totals

    def finished(self) -> int:
        return sum(self._counts().values())

    def failures(self, handles: list[Any]) -> int:
        return self._counts()["failed"]

    def result(self, handle: Any, timeout: float) -> Any:
        return base.wait_checking(lambda seconds: self._poll(handle, seconds), self.check, timeout)

    def _poll(self, job_id: int, seconds: float) -> str:
        """The job's status once it has finished; TimeoutError after ``seconds``."""
        deadline = time.monotonic() + seconds
        while (status := self.app.job_manager.get_job_status(job_id)) not in FINISHED:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"procrastinate job {job_id} is still {status.value} after {seconds:g}s")
            time.sleep(STATUS_POLL)
        if status != Status.SUCCEEDED:
            raise RuntimeError(f"procrastinate job {job_id} ended {status.value}")
        return str(status.value)

    def _event_times(self, handles: list[Any], kinds: list[str]) -> dict[int, float]:
        """The latest event of one of ``kinds`` per job, in Unix time."""
        rows = self.schema.conn.execute(
            sql.SQL(
                "SELECT job_id, max(at) FROM {} WHERE job_id = ANY(%s) AND type::text = ANY(%s) GROUP BY job_id"
            ).format(self.schema.table("procrastinate_events")),
            [list(handles), kinds],
        ).fetchall()
        return {job_id: at.timestamp() for job_id, at in rows}

    def finished_at(self, handles: list[Any]) -> list[float | None]:
        times = self._event_times(handles, FINISH_EVENTS)
        return [times.get(job_id) for job_id in handles]

    def stored_latencies(self, handles: list[Any]) -> list[float]:
        deferred = self._event_times(handles, ["deferred"])
        finished = self._event_times(handles, FINISH_EVENTS)
        return [finished[j] - deferred[j] for j in handles if j in finished and j in deferred]

    def close_clients(self) -> None:
        if self.app is not None:
            self.app.close()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.schema.close()


ADAPTER = ProcrastinateAdapter
