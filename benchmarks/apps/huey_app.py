"""The app of ``huey_consumer benchmarks.apps.huey_app.huey -k process``
in a cell's worker process: the ``SqliteHuey`` and task the cell declared,
from the settings in its environment (``SETTINGS_ENV``), with the hook that
notes when each job finished.

Huey stores no completion times: each process worker (a fork of the
consumer) appends ``TASK_ID UNIX_TIME ok|error`` to a file of its own,
``huey-finished-<pid>.txt`` in the cell's folder, its working directory, as
each task finishes (one unbuffered write, after the result is stored, as
the in-process consumer's hook notes it), which the cell reads once the
workers have stopped.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import huey as huey_package
from huey import SqliteHuey

from benchmarks.tasks import task_of

SETTINGS_ENV = "BENCH_HUEY_SETTINGS"  # JSON: filename, fsync, task
FINISHED_FILES = "huey-finished-"


def declare(filename: str, fsync: bool, kind: str) -> tuple[SqliteHuey, Any]:
    """The SqliteHuey and its one task, without retries, named by kind."""
    queue = SqliteHuey("bench", filename=filename, fsync=fsync)
    task = queue.task(retries=0, name=kind)(task_of(kind))
    return queue, task


class FinishNotes:
    """Appends each finished task's id, time and outcome to this process's
    file; opened on first use, so that each forked worker has its own."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self.pid = 0

    def note(self, task: Any, outcome: str) -> None:
        at = time.time()
        if self.fd is None or self.pid != os.getpid():
            self.pid = os.getpid()
            self.fd = os.open(f"{FINISHED_FILES}{self.pid}.txt", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.write(self.fd, f"{task.id} {at!r} {outcome}\n".encode())


def _app() -> tuple[SqliteHuey, Any]:
    settings = json.loads(os.environ[SETTINGS_ENV])
    queue, task = declare(settings["filename"], settings["fsync"], settings["task"])
    notes = FinishNotes()
    queue.signal(huey_package.signals.SIGNAL_COMPLETE)(lambda signal, task, *args: notes.note(task, "ok"))
    queue.signal(huey_package.signals.SIGNAL_ERROR)(lambda signal, task, *args: notes.note(task, "error"))
    return queue, task


if SETTINGS_ENV in os.environ:  # imported by the consumer, not by the cell
    huey, task = _app()
