"""``current_job``: what a running task can ask about the job it is running."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass


@dataclass(frozen=True)
class JobContext:
    id: str
    task_name: str
    queue: str
    attempt: int
    max_retries: int


_current: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar(
    "taskito_current_job", default=None
)


class _CurrentJob:
    """Proxy to the job the calling task is running (``from taskito import current_job``)."""

    def _get(self) -> JobContext:
        ctx = _current.get()
        if ctx is None:
            raise RuntimeError("current_job is only available inside a running task")
        return ctx

    @property
    def id(self) -> str:
        return self._get().id

    @property
    def task_name(self) -> str:
        return self._get().task_name

    @property
    def queue(self) -> str:
        return self._get().queue

    @property
    def attempt(self) -> int:
        """Which run this is, counting from 1."""
        return self._get().attempt

    @property
    def max_retries(self) -> int:
        return self._get().max_retries

    @property
    def active(self) -> bool:
        """True inside a running task."""
        return _current.get() is not None

    def __repr__(self) -> str:
        ctx = _current.get()
        return f"<current_job {ctx!r}>" if ctx else "<current_job (no job running)>"


current_job = _CurrentJob()
