"""RQ: ``rq worker-pool -n N``, N worker processes that each fork a work horse
per job (RQ's default ``Worker``), on one Redis database: N is the cell's
processes (each runs one job at a time, see ``engines.POOLS``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis
import rq
from rq.job import Job
from rq.results import Result

from benchmarks.engines import base
from benchmarks.grid import Cell
from benchmarks.tasks import is_async

QUEUE = "bench"


class RQAdapter(base.RedisWorkerAdapter):
    package = rq
    worker_name = "rq"

    def __init__(self, cell: Cell, workdir: Path) -> None:
        super().__init__(cell, workdir)
        self.redis = redis.Redis.from_url(base.broker_url(cell.redis_url))
        self.queue = rq.Queue(QUEUE, connection=self.redis)
        self.argv = [
            sys.executable,
            "-m",
            "rq.cli",
            "worker-pool",
            f"--num-workers={cell.processes}",
            f"--url={base.broker_url(cell.redis_url)}",
            "--logging-level=WARNING",
            QUEUE,
        ]

    @classmethod
    def cannot_run(cls, cell: Cell) -> str | None:
        if is_async(cell.task):
            return "RQ runs a coroutine to its end in the job's own work horse: no event loop shared by jobs"
        if cell.task == "chain":
            return "RQ has no chain: its depends_on does not pass a job's result to the next"
        return None

    def describe(self) -> dict[str, str]:
        return {
            "engine_version": rq.__version__,
            "engine_setup": f"rq worker-pool --num-workers={self.cell.processes} (a forked work horse per job)",
            **base.redis_describe(self.cell.redis_url),
        }

    def enqueue_one(self, arg: int) -> Job:
        return self.queue.enqueue(self.fn, arg)

    def enqueue_many(self, args: Sequence[int]) -> list[Job]:
        return list(self.queue.enqueue_many([rq.Queue.prepare_data(self.fn, (arg,)) for arg in args]))

    def finished(self) -> int:
        return int(self.queue.finished_job_registry.count + self.queue.failed_job_registry.count)

    def result(self, handle: Any, timeout: float) -> Any:
        result = handle.latest_result(timeout=max(1, round(timeout)))
        if result is None:
            raise TimeoutError(f"no result for RQ job {handle.id} within {timeout}s")
        if result.type != Result.Type.SUCCESSFUL:
            raise RuntimeError(f"RQ job {handle.id} failed: {result.exc_string}")
        return result.return_value

    def finished_at(self, handles: list[Any]) -> list[float | None]:
        # ended_at: set by the work horse as the job returns, stored to the microsecond.
        times = []
        for job in handles:
            job.refresh()
            times.append(base.unix_time(job.ended_at))
        return times

    def failures(self, handles: list[Any]) -> int:
        return int(self.queue.failed_job_registry.count)

    def stored_latencies(self, handles: list[Any]) -> list[float]:
        latencies = []
        for job in handles:
            job.refresh()
            if job.ended_at is not None and job.enqueued_at is not None:
                latencies.append((job.ended_at - job.enqueued_at).total_seconds())
        return latencies

    def close_clients(self) -> None:
        self.redis.close()


ADAPTER = RQAdapter
