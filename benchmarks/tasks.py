"""The task bodies every engine runs, by kind.

Plain module-level functions, so that engines whose workers live in other
processes (Celery, RQ, Dramatiq) import them by name. Each returns a value
that is not None: some engines store no result for None, and the drain is
counted by stored results.

Three kinds are run differently from the others:

- ``async_sleep`` is a coroutine function: only engines that run ``async
  def`` tasks on an event loop run it (the others are skipped, with the
  reason);
- ``chain``: each job of the backlog is a chain of ``CHAIN_LENGTH`` steps,
  each step ``noop`` of the value its parent returned, through the engine's
  own chain (taskito's ``chain``, Huey's pipeline, Celery's ``chain``);
- ``cpu_ms`` holds the GIL for about a millisecond: what worker processes
  are for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

# Steps in each chain of the ``chain`` kind: its jobs are CHAIN_LENGTH times its chains.
CHAIN_LENGTH = 10
# Loop turns of ``cpu_ms``: about 1 ms on the 2-core machine the targets are
# set on (27,000 turns took 1.0 ms in CPython 3.11). A count rather than a
# time, so that every engine does the same work however fast its machine.
CPU_MS_TURNS = 27_000


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


def cpu_ms(x: int) -> int:
    """About 1 ms of pure Python holding the GIL: threads of one process
    take turns; processes use a core each."""
    total = 0
    for i in range(CPU_MS_TURNS):
        total += i * i % 7
    return x + total - total


async def async_sleep(x: int) -> int:
    """5 ms of waiting on an event loop: what coroutines are for."""
    await asyncio.sleep(0.005)
    return x


TASKS: dict[str, Callable[[int], object]] = {
    "noop": noop,
    "cpu_light": cpu_light,
    "io_sleep": io_sleep,
    "cpu_ms": cpu_ms,
    "chain": noop,  # each step of a chain: see CHAIN_LENGTH
}
# Coroutine functions, run only by engines with an event loop for tasks.
ASYNC_TASKS: dict[str, Callable[[int], Awaitable[object]]] = {"async_sleep": async_sleep}
# Every kind, in the order tables list them.
KINDS = [*TASKS, *ASYNC_TASKS]


def is_async(kind: str) -> bool:
    return kind in ASYNC_TASKS


def task_of(kind: str) -> Callable[[int], object]:
    """The function a kind registers: a coroutine function for async kinds."""
    return ASYNC_TASKS[kind] if kind in ASYNC_TASKS else TASKS[kind]
