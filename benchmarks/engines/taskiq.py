"""taskiq on Redis (taskiq-redis), an async task queue: ``taskiq worker
benchmarks.apps.taskiq_app:broker --workers N --max-async-tasks C``, N
worker processes, each one event loop running up to C tasks at once (the
cell's async_concurrency). It runs async kinds only (see
``benchmarks.apps.taskiq_app``).

Through its documented API: ``await task.kiq(x)`` per job (no batch call:
the batch here is the kicks of one ``asyncio.gather``), ``await
handle.wait_result(timeout=...)`` for a round trip; results in their own
database, whose size counts finished jobs. The drain's completion times
are noted by a middleware in the workers as each result is stored. The
producer's calls run on an event loop of this process, one
``asyncio.Runner`` call each.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import redis
import taskiq
from taskiq.exceptions import TaskiqResultTimeoutError

from benchmarks.apps import finish_notes, taskiq_app
from benchmarks.engines import base
from benchmarks.grid import Cell
from benchmarks.tasks import is_async

APP = "benchmarks.apps.taskiq_app:broker"


class TaskiqAdapter(base.RedisWorkerAdapter):
    package = taskiq
    worker_name = "taskiq"

    def __init__(self, cell: Cell, workdir: Path) -> None:
        super().__init__(cell, workdir)
        settings = {
            "broker_url": base.broker_url(cell.redis_url),
            "results_url": base.results_url(cell.redis_url),
            "task": cell.task,
        }
        self.worker_env[taskiq_app.SETTINGS_ENV] = json.dumps(settings)
        self.broker, self.task = taskiq_app.declare(
            settings["broker_url"], settings["results_url"], cell.task
        )
        self.results = redis.Redis.from_url(settings["results_url"])
        self.runner = asyncio.Runner()
        self.runner.run(self.broker.startup())
        self.processes = 1  # one `taskiq worker` command starts them all
        self.argv = [
            sys.executable,
            "-m",
            "taskiq",
            "worker",
            APP,
            f"--workers={cell.processes}",
            f"--max-async-tasks={cell.async_concurrency}",
            "--log-level=WARNING",
        ]

    @classmethod
    def cannot_run(cls, cell: Cell) -> str | None:
        if not is_async(cell.task):
            return "taskiq is run here on coroutine functions only: it runs the async kinds"
        return None

    def describe(self) -> dict[str, str]:
        return {
            "engine_version": version("taskiq"),
            "engine_setup": f"taskiq worker --workers={self.cell.processes} "
            f"--max-async-tasks={self.cell.async_concurrency} (ListQueueBroker, RedisAsyncResultBackend)",
            **base.redis_describe(self.cell.redis_url),
        }

    def enqueue_one(self, arg: int) -> Any:
        return self.runner.run(self.task.kiq(arg))

    def enqueue_many(self, args: Sequence[int]) -> list[Any]:
        async def batch() -> list[Any]:
            return list(await asyncio.gather(*(self.task.kiq(arg) for arg in args)))

        handles: list[Any] = self.runner.run(batch())
        return handles

    def finished(self) -> int:
        return int(self.results.dbsize())

    def result(self, handle: Any, timeout: float) -> Any:
        return base.wait_checking(lambda seconds: self.wait(handle, seconds), self.check, timeout)

    def wait(self, handle: Any, timeout: float) -> Any:
        try:
            outcome = self.runner.run(handle.wait_result(check_interval=0.0005, timeout=timeout))
        except TaskiqResultTimeoutError:
            raise TimeoutError(f"no result for taskiq task {handle.task_id} within {timeout}s") from None
        if outcome.is_err:
            raise RuntimeError(f"taskiq task {handle.task_id} failed: {outcome.error!r}")
        return outcome.return_value

    def noted(self) -> tuple[dict[str, float], int]:
        """What the worker processes noted: when each task finished, and how many failed."""
        return finish_notes.read(self.workdir, taskiq_app.FINISHED_FILES)

    def finished_at(self, handles: list[Any]) -> list[float | None]:
        done_at = self.noted()[0]
        return [done_at.get(handle.task_id) for handle in handles]

    def failures(self, handles: list[Any]) -> int:
        return self.noted()[1]

    def close_clients(self) -> None:
        try:
            self.runner.run(self.broker.shutdown())
        finally:
            self.runner.close()
            self.results.close()


ADAPTER = TaskiqAdapter
