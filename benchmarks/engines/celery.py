"""Celery on Redis: broker in one database, results in another (whose size
counts finished jobs), and ``celery worker`` with its default prefork pool of
``--concurrency N`` processes, started as its documentation shows: N is the
cell's processes (each prefork child runs one task at a time, see
``engines.POOLS``). Chains are Celery's ``chain(task.s(i), task.s(), ...)``,
the steps found back from the last through ``AsyncResult.parent``. No async
tasks: Celery runs coroutine functions nowhere.

    python -m benchmarks.engines.celery REDIS_URL worker [celery worker options]

is that worker command, with this module's app and tasks.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import celery
import redis
from celery import Celery, chain, group
from celery.result import AsyncResult, ResultSet

from benchmarks.engines import base
from benchmarks.grid import Cell
from benchmarks.tasks import CHAIN_LENGTH, TASKS, is_async


def make_app(server: str) -> Celery:
    app = Celery(
        "bench", broker=base.broker_url(server), backend=base.results_url(server), set_as_current=True
    )
    app.conf.broker_connection_retry_on_startup = True
    for name, fn in TASKS.items():
        app.task(name=name)(fn)
    return app


class CeleryAdapter(base.RedisWorkerAdapter):
    package = celery
    worker_name = "celery"

    def __init__(self, cell: Cell, workdir: Path) -> None:
        super().__init__(cell, workdir)
        self.app = make_app(cell.redis_url)
        self.task = self.app.tasks[cell.task]
        self.results = redis.Redis.from_url(base.results_url(cell.redis_url))
        self.argv = [
            sys.executable,
            "-m",
            __name__,
            cell.redis_url,
            "worker",
            "--pool=prefork",
            f"--concurrency={cell.processes}",
            "--loglevel=WARNING",
            # Cluster chatter between workers, useless with one worker.
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]

    @classmethod
    def cannot_run(cls, cell: Cell) -> str | None:
        if is_async(cell.task):
            return "Celery has no async tasks: it runs no coroutine function"
        return None

    def describe(self) -> dict[str, str]:
        return {
            "engine_version": celery.__version__,
            "engine_setup": f"celery worker --pool=prefork --concurrency={self.cell.processes}",
            **base.redis_describe(self.cell.redis_url),
        }

    def enqueue_one(self, arg: int) -> AsyncResult:
        if self.cell.task == "chain":
            return self.chain(arg)
        return self.task.delay(arg)

    def enqueue_many(self, args: Sequence[int]) -> list[Any]:
        if self.cell.task == "chain":
            return list(group(self.chain_of(arg) for arg in args).apply_async().results)
        return list(group(self.task.s(arg) for arg in args).apply_async().results)

    def chain_of(self, arg: int) -> Any:
        return chain(self.task.s(arg), *(self.task.s() for _ in range(CHAIN_LENGTH - 1)))

    def chain(self, arg: int) -> AsyncResult:
        """A chain of CHAIN_LENGTH steps; its last step's result."""
        last: AsyncResult = self.chain_of(arg).apply_async()
        return last

    def steps(self, handles: list[Any]) -> list[Any]:
        """For chains, each last step and its parents, back to the first."""
        if self.cell.task != "chain":
            return handles
        found = []
        for last in handles:
            step = last
            while step is not None:
                found.append(step)
                step = step.parent
        return found

    def finished(self) -> int:
        return int(self.results.dbsize())

    def result(self, handle: Any, timeout: float) -> Any:
        return handle.get(timeout=timeout)

    def finished_at(self, handles: list[Any]) -> list[float | None]:
        # date_done: set by the worker as it stores the result, to the microsecond.
        return [base.unix_time(handle.date_done) for handle in handles]

    def failures(self, handles: list[Any]) -> int:
        values = ResultSet(handles).join_native(propagate=False, timeout=60)
        return sum(isinstance(value, BaseException) for value in values)

    def close_clients(self) -> None:
        self.results.close()
        self.app.close()


ADAPTER = CeleryAdapter

if __name__ == "__main__":
    make_app(sys.argv[1]).worker_main(sys.argv[2:])
