"""The broker of ``taskiq worker benchmarks.apps.taskiq_app:broker`` in a
cell's worker process, and of the cell: a ``ListQueueBroker`` on the cell's
Redis database, results in the other (``RedisAsyncResultBackend``), and the
kind's coroutine function as its one task, named by kind (``declare``). The
worker's comes from the settings the cell puts in its environment
(``SETTINGS_ENV``).

taskiq stores no completion times: in the worker processes, a middleware
(``NoteFinishes``) notes them in ``taskiq-finished-<pid>.txt``
(``finish_notes``), once each result is stored.
"""

from __future__ import annotations

import json
import os
from typing import Any

from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult
from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend

from benchmarks.apps.finish_notes import FinishNotes
from benchmarks.tasks import ASYNC_TASKS

SETTINGS_ENV = "BENCH_TASKIQ_SETTINGS"  # JSON: broker_url, results_url, task
FINISHED_FILES = "taskiq-finished-"
QUEUE = "bench"


class NoteFinishes(TaskiqMiddleware):  # type: ignore[misc]  # taskiq is skipped by mypy
    """Notes when each task's result was stored, in this worker process's file."""

    def __init__(self) -> None:
        super().__init__()
        self.notes = FinishNotes(FINISHED_FILES)

    def post_save(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        self.notes.note(message.task_id, "error" if result.is_err else "ok")


def declare(broker_url: str, results_url: str, kind: str) -> tuple[ListQueueBroker, Any]:
    """The broker, with its result backend and NoteFinishes, and its task."""
    backend = RedisAsyncResultBackend(results_url)
    broker = ListQueueBroker(broker_url, queue_name=QUEUE).with_result_backend(backend)
    broker.add_middlewares(NoteFinishes())
    task = broker.task(task_name=kind)(ASYNC_TASKS[kind])
    return broker, task


if SETTINGS_ENV in os.environ:  # imported by the worker, not by the cell
    _settings = json.loads(os.environ[SETTINGS_ENV])
    broker, task = declare(_settings["broker_url"], _settings["results_url"], _settings["task"])
