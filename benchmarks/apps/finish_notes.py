"""When each task finished, for peers that store no completion time (Huey,
taskiq): every worker process appends ``TASK_ID UNIX_TIME ok|error`` to a
file of its own, ``<prefix><pid>.txt`` in the cell's folder (its working
directory), with one unbuffered write as each task ends, and the cell reads
them all once the workers have stopped."""

from __future__ import annotations

import os
import time
from pathlib import Path


class FinishNotes:
    """This process's notes file, opened on first use and again in a forked
    child, so that each worker process has its own."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.fd: int | None = None
        self.pid = 0

    def note(self, task_id: str, outcome: str) -> None:
        at = time.time()
        if self.fd is None or self.pid != os.getpid():
            self.pid = os.getpid()
            self.fd = os.open(f"{self.prefix}{self.pid}.txt", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.write(self.fd, f"{task_id} {at!r} {outcome}\n".encode())


def read(folder: Path, prefix: str) -> tuple[dict[str, float], int]:
    """What the worker processes noted in ``folder``: when each task
    finished, and how many failed."""
    done_at: dict[str, float] = {}
    errors = 0
    for notes in folder.glob(f"{prefix}*.txt"):
        for line in notes.read_text().splitlines():
            task_id, at, outcome = line.split()
            done_at[task_id] = float(at)
            errors += outcome == "error"
    return done_at, errors
