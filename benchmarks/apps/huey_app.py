"""The app of ``huey_consumer benchmarks.apps.huey_app.huey -k process``
in a cell's worker process: the ``SqliteHuey`` and task the cell declared,
from the settings in its environment (``SETTINGS_ENV``), with the hook that
notes when each job finished.

Huey stores no completion times: each process worker (a fork of the
consumer) notes them in ``huey-finished-<pid>.txt`` (``finish_notes``), as
each task finishes, after its result is stored, as the in-process
consumer's hook notes it.
"""

from __future__ import annotations

import json
import os
from typing import Any

import huey as huey_package
from huey import SqliteHuey

from benchmarks.apps.finish_notes import FinishNotes
from benchmarks.tasks import task_of

SETTINGS_ENV = "BENCH_HUEY_SETTINGS"  # JSON: filename, fsync, task
FINISHED_FILES = "huey-finished-"


def declare(filename: str, fsync: bool, kind: str) -> tuple[SqliteHuey, Any]:
    """The SqliteHuey and its one task, without retries, named by kind."""
    queue = SqliteHuey("bench", filename=filename, fsync=fsync)
    task = queue.task(retries=0, name=kind)(task_of(kind))
    return queue, task


def _app() -> tuple[SqliteHuey, Any]:
    settings = json.loads(os.environ[SETTINGS_ENV])
    queue, task = declare(settings["filename"], settings["fsync"], settings["task"])
    notes = FinishNotes(FINISHED_FILES)
    queue.signal(huey_package.signals.SIGNAL_COMPLETE)(lambda signal, task, *args: notes.note(task.id, "ok"))
    queue.signal(huey_package.signals.SIGNAL_ERROR)(lambda signal, task, *args: notes.note(task.id, "error"))
    return queue, task


if SETTINGS_ENV in os.environ:  # imported by the consumer, not by the cell
    huey, task = _app()
