"""Dramatiq on Redis with its Results middleware (results in their own
database, whose size counts finished jobs): ``dramatiq MODULE --processes N
--threads T``, the cell's processes and workers. Chains are its
``pipeline`` of messages, each passing its result to the next. No async
kinds: its async actors (the AsyncIO middleware) each hold a worker thread
while they await, so no more run at once than there are threads.

Dramatiq stores no completion times: a middleware in the worker process
(``FinishTimes``) notes them and writes them to a file at shutdown.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend
from dramatiq.results.errors import ResultFailure, ResultMissing

from benchmarks.engines import base
from benchmarks.grid import Cell
from benchmarks.tasks import CHAIN_LENGTH, TASKS, is_async

# How the worker processes learn the server: ``setup`` takes no arguments.
URL_ENV = "BENCH_DRAMATIQ_REDIS"
# FinishTimes's files, one per worker process, in the worker's working
# directory: the cell's folder (see base.WorkerProcess).
FINISH_TIMES = "dramatiq-finished-"


def declare(server: str) -> tuple[RedisBroker, RedisBackend, dict[str, Any]]:
    """The broker, the result backend and one actor per task kind."""
    broker = RedisBroker(url=base.broker_url(server))
    backend = RedisBackend(url=base.results_url(server))
    broker.add_middleware(Results(backend=backend))
    dramatiq.set_broker(broker)
    actors = {
        name: dramatiq.actor(fn, actor_name=name, broker=broker, store_results=True, max_retries=0)
        for name, fn in TASKS.items()
    }
    return broker, backend, actors


class FinishTimes(dramatiq.Middleware):  # type: ignore[misc]  # dramatiq is untyped
    """Notes the Unix time each message finished, in the worker process, and
    writes the notes to ``FINISH_TIMES<pid>.json`` when the worker shuts down:
    a dictionary lookup per job, no I/O while jobs run."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        self.times[message.message_id] = time.time()

    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        Path(f"{FINISH_TIMES}{os.getpid()}.json").write_text(json.dumps(self.times))


def setup() -> None:
    """Run by ``dramatiq benchmarks.engines.dramatiq:setup`` in each worker process."""
    broker, _, _ = declare(os.environ[URL_ENV])
    # Before Results: "after" hooks run in reverse order, so the time is
    # taken once the result is stored, as Huey's and Celery's are.
    broker.add_middleware(FinishTimes(), before=Results)


class DramatiqAdapter(base.RedisWorkerAdapter):
    package = dramatiq
    worker_name = "dramatiq"

    def __init__(self, cell: Cell, workdir: Path) -> None:
        super().__init__(cell, workdir)
        self.broker, self.backend, actors = declare(cell.redis_url)
        self.actor = actors[cell.task]
        self.results = redis.Redis.from_url(base.results_url(cell.redis_url))
        self.worker_env[URL_ENV] = cell.redis_url
        self.argv = [
            sys.executable,
            "-m",
            "dramatiq",
            f"{__name__}:setup",
            f"--processes={cell.processes}",
            f"--threads={cell.workers}",
        ]

    @classmethod
    def cannot_run(cls, cell: Cell) -> str | None:
        if is_async(cell.task):
            return (
                "Dramatiq's async actors (AsyncIO middleware) each hold a worker thread while they "
                "await: no more at once than threads"
            )
        return None

    def describe(self) -> dict[str, str]:
        return {
            "engine_version": dramatiq.__version__,
            "engine_setup": f"dramatiq --processes={self.cell.processes} --threads={self.cell.workers}",
            **base.redis_describe(self.cell.redis_url),
        }

    def enqueue_one(self, arg: int) -> Any:
        if self.cell.task == "chain":
            return self.chain(arg)
        return self.actor.send(arg)

    def enqueue_many(self, args: Sequence[int]) -> list[Any]:
        if self.cell.task == "chain":  # no batch call for pipelines
            return [self.chain(arg) for arg in args]
        batch = dramatiq.group(self.actor.message(arg) for arg in args).run()
        return list(batch.children)

    def chain(self, arg: int) -> Any:
        """A pipeline of CHAIN_LENGTH messages, each passing its result on."""
        steps = [self.actor.message(arg), *(self.actor.message() for _ in range(CHAIN_LENGTH - 1))]
        return dramatiq.pipeline(steps, broker=self.broker).run()

    def steps(self, handles: list[Any]) -> list[Any]:
        if self.cell.task != "chain":
            return handles
        return [message for pipe in handles for message in pipe.messages]

    def finished(self) -> int:
        return int(self.results.dbsize())

    def result(self, handle: Any, timeout: float) -> Any:
        if isinstance(handle, dramatiq.pipeline):  # its last message's result
            return handle.get_result(block=True, timeout=int(timeout * 1000))
        return handle.get_result(backend=self.backend, block=True, timeout=int(timeout * 1000))

    def finished_at(self, handles: list[Any]) -> list[float | None]:
        times: dict[str, float] = {}
        for notes in self.workdir.glob(f"{FINISH_TIMES}*.json"):
            times.update(json.loads(notes.read_text()))
        return [times.get(message.message_id) for message in handles]

    def failures(self, handles: list[Any]) -> int:
        if self.cell.task == "chain":
            # Only a pipeline's last result is kept (each step's is piped on):
            # one that is missing means a step before it failed.
            lasts = [pipe.messages[-1] for pipe in handles]
            return sum(not self.has_result(message, ResultFailure, ResultMissing) for message in lasts)
        return sum(not self.has_result(message, ResultFailure) for message in handles)

    def has_result(self, message: Any, *failures: type[Exception]) -> bool:
        try:
            message.get_result(backend=self.backend)
        except failures:
            return False
        return True

    def close_clients(self) -> None:
        self.results.close()
        self.broker.close()


ADAPTER = DramatiqAdapter
