"""``current_job``: what a running task can ask about the job it is running."""

from __future__ import annotations

import contextvars
import json
import time
from typing import Any, Protocol

from taskito.exceptions import InvalidArgumentError, JobCancelledError, TaskTimeoutError


class CancelProbe(Protocol):
    def cancel_requested(self, job_id: str) -> bool: ...


class JobEngine(CancelProbe, Protocol):
    """What a running job's context reads and reports through (the native queue)."""

    def get_job(self, job_id: str) -> dict[str, Any] | None: ...
    def report_progress(self, job_id: str, value: int) -> None: ...


class JobContext:
    """What ``current_job`` knows about the attempt running in this context.

    ``probe`` answers whether the job's cancellation was requested: the
    engine (a storage read) for a task on a thread, the attempt itself (from
    memory) for a coroutine, whose event loop must not wait for storage."""

    __slots__ = (
        "_metadata",
        "attempt",
        "engine",
        "id",
        "max_retries",
        "probe",
        "queue",
        "soft_timeout",
        "started",
        "task_name",
    )

    def __init__(
        self,
        id: str,
        task_name: str,
        queue: str,
        attempt: int,
        max_retries: int,
        soft_timeout: float | None,
        engine: JobEngine,
    ) -> None:
        self.id = id
        self.task_name = task_name
        self.queue = queue
        self.attempt = attempt
        self.max_retries = max_retries
        self.soft_timeout = soft_timeout
        self.started = time.monotonic()
        self.probe: CancelProbe = engine
        self.engine = engine
        self._metadata: dict[str, Any] | None = None

    def cancel_requested(self) -> bool:
        return self.probe.cancel_requested(self.id)

    def metadata(self) -> dict[str, Any]:
        """The job's metadata, read from storage on first use: claims do not
        carry it, so that jobs without metadata cost nothing for it."""
        if self._metadata is None:
            record = self.engine.get_job(self.id) or {}
            text = record.get("metadata")
            self._metadata = {} if text is None else dict(json.loads(text))
        return self._metadata

    def __repr__(self) -> str:
        return f"<JobContext {self.id} {self.task_name} attempt={self.attempt}>"


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
    def queue_name(self) -> str:
        """``queue``, by the name the reference project uses."""
        return self._get().queue

    @property
    def attempt(self) -> int:
        """Which run this is, counting from 1."""
        return self._get().attempt

    @property
    def retry_count(self) -> int:
        """How many times this job ran before this attempt (``attempt - 1``),
        as the reference project counts."""
        return self._get().attempt - 1

    @property
    def metadata(self) -> dict[str, Any]:
        """The ``metadata=`` the job was enqueued with (``{}`` without any)."""
        return self._get().metadata()

    def update_progress(self, progress: int) -> None:
        """Reports how far the task got, 0 to 100 (``JobResult.progress``).
        Cheap: the worker keeps the latest value in memory and writes it with
        its next batch of writes (at the latest with the job's outcome), never
        one write per call."""
        ctx = self._get()
        if type(progress) is not int:
            raise InvalidArgumentError(
                f"progress must be an int from 0 to 100, got {type(progress).__name__}"
            )
        if not 0 <= progress <= 100:
            raise InvalidArgumentError(f"progress must be from 0 to 100, got {progress}")
        ctx.engine.report_progress(ctx.id, progress)

    @property
    def max_retries(self) -> int:
        return self._get().max_retries

    @property
    def elapsed(self) -> float:
        """Seconds since this attempt started."""
        return time.monotonic() - self._get().started

    def check_cancelled(self) -> None:
        """Raises ``JobCancelledError`` if ``queue.cancel_running_job()`` was
        called for this job. A task that lets it propagate ends cancelled.

        In a task on a thread it costs one small database read: call it
        between units of work, not in a tight loop. In a coroutine it reads
        nothing (the worker cancels the coroutine when it learns of the
        request, and this answers from what it learned)."""
        ctx = self._get()
        if ctx.cancel_requested():
            raise JobCancelledError(f"job {ctx.id} was asked to stop")

    def check_timeout(self) -> None:
        """Raises ``TaskTimeoutError`` once the task has run longer than its
        ``soft_timeout``. Free to call often."""
        ctx = self._get()
        if ctx.soft_timeout is not None and time.monotonic() - ctx.started > ctx.soft_timeout:
            raise TaskTimeoutError(f"job {ctx.id} ran past its soft timeout of {ctx.soft_timeout:g}s")

    @property
    def active(self) -> bool:
        """True inside a running task."""
        return _current.get() is not None

    def __repr__(self) -> str:
        ctx = _current.get()
        return f"<current_job {ctx!r}>" if ctx else "<current_job (no job running)>"


current_job = _CurrentJob()
