"""SAQ on Redis, an async task queue: tasks are coroutine functions, and
``saq SETTINGS --workers N`` runs N worker processes, each one event loop
running up to ``concurrency`` jobs at once (the cell's async_concurrency;
see ``benchmarks.apps.saq_app``). It runs async kinds only.

Through its documented API: ``Queue.from_url``, ``await queue.enqueue(name,
x=...)`` per job (its batch call, ``map``, also waits for the results: the
batch here is the enqueues of one ``asyncio.gather``), ``await
job.refresh(until_complete=...)`` for a round trip, and each job's
``completed`` (Unix milliseconds, set by the worker as the job finishes)
for the drain. Its count of finished jobs is the jobs enqueued less its
``incomplete`` count. The producer's calls run on an event loop of this
process, one ``asyncio.Runner`` call each.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import saq

from benchmarks.apps import saq_app
from benchmarks.engines import base
from benchmarks.grid import Cell
from benchmarks.tasks import is_async


class SaqAdapter(base.RedisWorkerAdapter):
    package = saq
    worker_name = "saq"

    def __init__(self, cell: Cell, workdir: Path) -> None:
        super().__init__(cell, workdir)
        url = base.broker_url(cell.redis_url)
        self.runner = asyncio.Runner()
        self.queue, _ = saq_app.declare(url, cell.task, cell.async_concurrency)
        self.runner.run(self.queue.connect())
        self.enqueued = 0
        settings = {"url": url, "task": cell.task, "concurrency": cell.async_concurrency}
        self.worker_env[saq_app.SETTINGS_ENV] = json.dumps(settings)
        self.processes = 1  # one `saq` command starts them all
        self.argv = [
            sys.executable,
            "-m",
            "saq",
            "benchmarks.apps.saq_app.settings",
            f"--workers={cell.processes}",
            "--quiet",
        ]

    @classmethod
    def cannot_run(cls, cell: Cell) -> str | None:
        if not is_async(cell.task):
            return "SAQ runs coroutine functions only: it runs the async kinds"
        return None

    def describe(self) -> dict[str, str]:
        return {
            "engine_version": saq.__version__,
            "engine_setup": f"saq --workers={self.cell.processes}, concurrency={self.cell.async_concurrency}",
            **base.redis_describe(self.cell.redis_url),
        }

    def enqueue_one(self, arg: int) -> Any:
        job = self.runner.run(self.queue.enqueue(self.cell.task, x=arg))
        self.enqueued += 1
        return job

    def enqueue_many(self, args: Sequence[int]) -> list[Any]:
        async def batch() -> list[Any]:
            return list(await asyncio.gather(*(self.queue.enqueue(self.cell.task, x=arg) for arg in args)))

        jobs = self.runner.run(batch())
        self.enqueued += len(jobs)
        return jobs

    def finished(self) -> int:
        return self.enqueued - int(self.runner.run(self.queue.count("incomplete")))

    def result(self, handle: Any, timeout: float) -> Any:
        return base.wait_checking(lambda seconds: self.wait(handle, seconds), self.check, timeout)

    def wait(self, handle: Any, timeout: float) -> Any:
        self.runner.run(handle.refresh(until_complete=timeout))
        if handle.status != saq.job.Status.COMPLETE:
            if handle.completed:
                raise RuntimeError(f"SAQ job {handle.key} ended {handle.status}: {handle.error}")
            raise TimeoutError(f"no result for SAQ job {handle.key} within {timeout}s")
        return handle.result

    def refreshed(self, handles: list[Any]) -> list[Any]:
        async def read() -> None:
            await asyncio.gather(*(job.refresh() for job in handles))

        self.runner.run(read())
        return handles

    def finished_at(self, handles: list[Any]) -> list[float | None]:
        return [job.completed / 1e3 if job.completed else None for job in self.refreshed(handles)]

    def stored_latencies(self, handles: list[Any]) -> list[float]:
        return [(job.completed - job.queued) / 1e3 for job in self.refreshed(handles) if job.completed]

    def failures(self, handles: list[Any]) -> int:
        failed = (saq.job.Status.FAILED, saq.job.Status.ABORTED)
        return sum(job.status in failed for job in self.refreshed(handles))

    def close_clients(self) -> None:
        try:
            self.runner.run(self.queue.disconnect())
        finally:
            self.runner.close()


ADAPTER = SaqAdapter
