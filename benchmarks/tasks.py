"""The task bodies every engine runs, by kind.

Plain module-level functions, so that engines whose workers live in other
processes (Celery, RQ, Dramatiq) import them by name. Each returns a value
that is not None: some engines store no result for None, and the drain is
counted by stored results.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def noop(x: int) -> int:
    """The engine's own overhead: nothing but the call."""
    return x


def cpu_light(x: int) -> str:
    """A little Python work that holds the GIL, as in the engine issue's reference benchmark."""
    return f"processed-{x}-{'x' * 100}"


def io_sleep(x: int) -> int:
    """Waiting on I/O without the GIL: what concurrency is for."""
    time.sleep(0.005)
    return x


TASKS: dict[str, Callable[[int], object]] = {
    "noop": noop,
    "cpu_light": cpu_light,
    "io_sleep": io_sleep,
}
