"""The broker of ``taskiq worker benchmarks.apps.taskiq_app:broker`` in a
cell's worker process, and of the cell: a ``ListQueueBroker`` on the cell's
Redis database, results in the other (``RedisAsyncResultBackend``), and the
kind's coroutine function as its one task, named by kind (``declare``). The
worker's comes from the settings the cell puts in its environment
(``SETTINGS_ENV``).

taskiq stores no completion times: in the worker processes, a middleware
(``FinishNotes``) appends ``TASK_ID UNIX_TIME ok|error`` to a file of its
own, ``taskiq-finished-<pid>.txt`` in the cell's folder (the worker's
working directory), once each result is stored (one unbuffered write),
which the cell reads once the workers have stopped.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult
from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend

from benchmarks.tasks import ASYNC_TASKS

SETTINGS_ENV = "BENCH_TASKIQ_SETTINGS"  # JSON: broker_url, results_url, task
FINISHED_FILES = "taskiq-finished-"
QUEUE = "bench"


class FinishNotes(TaskiqMiddleware):  # type: ignore[misc]  # taskiq is skipped by mypy
    """Notes when each task's result was stored, in this worker process's file."""

    def __init__(self) -> None:
        super().__init__()
        self.fd: int | None = None

    def post_save(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        at = time.time()
        if self.fd is None:
            name = f"{FINISHED_FILES}{os.getpid()}.txt"
            self.fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        outcome = "error" if result.is_err else "ok"
        os.write(self.fd, f"{message.task_id} {at!r} {outcome}\n".encode())


def declare(broker_url: str, results_url: str, kind: str) -> tuple[ListQueueBroker, Any]:
    """The broker, with its result backend and FinishNotes, and its task."""
    backend = RedisAsyncResultBackend(results_url)
    broker = ListQueueBroker(broker_url, queue_name=QUEUE).with_result_backend(backend)
    broker.add_middlewares(FinishNotes())
    task = broker.task(task_name=kind)(ASYNC_TASKS[kind])
    return broker, task


if SETTINGS_ENV in os.environ:  # imported by the worker, not by the cell
    _settings = json.loads(os.environ[SETTINGS_ENV])
    broker, task = declare(_settings["broker_url"], _settings["results_url"], _settings["task"])
