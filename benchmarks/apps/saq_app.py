"""The settings of ``saq benchmarks.apps.saq_app.settings --workers N`` in a
cell's worker process: the Queue on the cell's Redis database and the task
the cell declared, from the settings in its environment (``SETTINGS_ENV``),
with ``concurrency`` coroutines at once per worker process.

SAQ calls a task as ``fn(ctx, **kwargs)``: the kind's coroutine function is
wrapped to take the job's one argument as ``x``. The Queue's Redis client
has a blocking pool of ``concurrency`` + ``SPARE_CONNECTIONS`` connections:
redis-py 8 caps a client at 100 by default and raises past them, which
leaves a worker with more jobs in flight stuck (its upkeep fails).
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from saq.queue.redis import RedisQueue

from benchmarks.tasks import ASYNC_TASKS

SETTINGS_ENV = "BENCH_SAQ_SETTINGS"  # JSON: url, task, concurrency
QUEUE = "bench"
# Connections beyond one per job in flight: the worker's dequeue, upkeep and listeners.
SPARE_CONNECTIONS = 50


def declare(url: str, kind: str, concurrency: int) -> tuple[RedisQueue, Callable[..., Awaitable[object]]]:
    """The Queue and the kind's function as SAQ calls it, named by kind."""
    body = ASYNC_TASKS[kind]

    async def task(ctx: dict[str, Any], *, x: int) -> object:
        return await body(x)

    task.__qualname__ = task.__name__ = kind  # the name jobs are enqueued by
    pool = BlockingConnectionPool.from_url(url, max_connections=concurrency + SPARE_CONNECTIONS)
    return RedisQueue(Redis(connection_pool=pool), name=QUEUE), task


def _settings() -> dict[str, Any]:
    given = json.loads(os.environ[SETTINGS_ENV])
    queue, task = declare(given["url"], given["task"], given["concurrency"])
    return {"queue": queue, "functions": [task], "concurrency": given["concurrency"]}


if SETTINGS_ENV in os.environ:  # imported by the worker, not by the cell
    settings = _settings()
