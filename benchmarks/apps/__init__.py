"""Apps for worker commands: modules that ``taskito worker --app
MODULE:queue`` imports in a worker process, built from settings the cell
passes in an environment variable, so that the producer (the cell) and its
worker processes declare the same Queue and tasks.

Standard library only, besides the engine the app is for: they run under
the cell's interpreter (``--python``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks.tasks import task_of

# The environment variable that carries ``AppSettings`` as JSON.
SETTINGS_ENV = "BENCH_APP_SETTINGS"


@dataclass(frozen=True)
class AppSettings:
    db_path: str  # "" for a Queue on a server, which queue_options name
    workers: int
    task: str  # a kind in benchmarks.tasks, registered under that name (a coroutine function for async kinds)
    # More keyword arguments of the engine's Queue (durability, polling; the
    # backend, db_url and schema of a Queue on PostgreSQL).
    queue_options: dict[str, Any] = field(default_factory=dict)

    def to_env(self) -> dict[str, str]:
        return {SETTINGS_ENV: json.dumps(asdict(self))}

    @classmethod
    def from_env(cls) -> AppSettings:
        try:
            text = os.environ[SETTINGS_ENV]
        except KeyError:
            raise RuntimeError(
                f"{SETTINGS_ENV} is not set: this app is started by a benchmark cell"
            ) from None
        return cls(**json.loads(text))


def build(queue_class: Any, settings: AppSettings) -> tuple[Any, Any]:
    """A Queue of ``queue_class`` (taskito's or a look-alike's) and its one
    task, without retries, as every engine here runs (a failure counts at
    once)."""
    where = {"db_path": settings.db_path} if settings.db_path else {}
    queue = queue_class(**where, workers=settings.workers, default_retry=0, **settings.queue_options)
    task = queue.task(name=settings.task, max_retries=0)(task_of(settings.task))
    return queue, task
