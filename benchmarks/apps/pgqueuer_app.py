"""The worker process of a pgqueuer cell:

    python -m benchmarks.apps.pgqueuer_app

runs ``pgqueuer.run(factory)``, which is what ``pgq run
benchmarks.apps.pgqueuer_app:factory`` runs ("as ``pgq run`` does, without
the CLI", says its docstring): pgqueuer 1.6's ``pgq run`` fails before it
starts with recent typer (its ``--log-level`` option hands the log set-up a
string where it expects an enum). The loop is uvloop's where it is
installed, as ``pgq`` picks it.

``factory`` is an async context manager yielding a ``PgQueuer``, the form
the installed pgqueuer accepts (its documentation still shows a coroutine
returning one, which 1.6 refuses), on one asyncpg connection to the server
the cell names in its environment (``SETTINGS_ENV``), with its tables in the
cell's schema (``PGQUEUER_SCHEMA``, also set by the cell). Entrypoints must
be coroutines: the task runs in a pool of ``workers`` threads, as
pgqueuer's documentation says to run blocking code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import pgqueuer
from pgqueuer import PgQueuer

from benchmarks.tasks import TASKS

# JSON: the server's URL, the task kind and the worker threads.
SETTINGS_ENV = "BENCH_PGQUEUER"


@contextlib.asynccontextmanager
async def factory() -> AsyncIterator[Any]:
    try:
        settings = json.loads(os.environ[SETTINGS_ENV])
    except KeyError:
        raise RuntimeError(f"{SETTINGS_ENV} is not set: this worker is started by a benchmark cell") from None
    fn = TASKS[settings["task"]]
    connection = await asyncpg.connect(settings["url"])
    threads = ThreadPoolExecutor(settings["workers"], thread_name_prefix="pgqueuer-task")
    queue = PgQueuer.from_asyncpg_connection(connection)

    async def run(job: Any) -> None:
        await asyncio.get_running_loop().run_in_executor(threads, fn, int(job.payload))

    queue.entrypoint(settings["task"])(run)
    try:
        yield queue
    finally:
        threads.shutdown()
        await connection.close()


def event_loop_runner() -> Any:
    """``uvloop.run`` where uvloop is installed (pgqueuer's CLI does the same), else ``asyncio.run``."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def main() -> None:
    event_loop_runner()(pgqueuer.run(factory))


if __name__ == "__main__":
    main()
