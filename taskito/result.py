"""``JobResult``: a handle on one enqueued job."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, overload

from taskito.exceptions import (
    JobCancelledError,
    JobNotFoundError,
    JobTimeoutError,
    TaskFailedError,
)

if TYPE_CHECKING:
    from taskito._client import Client
    from taskito.app import Queue

Outcome = tuple[str, bytes | None, dict[str, Any] | None]
T = TypeVar("T")


class JobCounts(dict[str, int]):
    """What ``Queue.stats()`` returns: job counts by status, keyed by the
    names ``job.status`` uses (pending, claimed, running, complete, failed,
    dead, cancelled, expired).

    ``counts["completed"]`` (and ``get``) still answers, with the count of
    ``complete``: the name the reference project's ``stats()`` uses, kept so
    that code written for it works. It is an alias, not an entry: iterating,
    ``len`` and ``sum(counts.values())`` see each job once."""

    ALIASES: ClassVar[dict[str, str]] = {"completed": "complete"}

    def __missing__(self, key: str) -> int:
        alias = self.ALIASES.get(key)
        if alias is None or alias not in self:
            raise KeyError(key)
        return self[alias]

    @overload
    def get(self, key: str, default: None = None, /) -> int | None: ...
    @overload
    def get(self, key: str, default: int, /) -> int: ...
    @overload
    def get(self, key: str, default: T, /) -> int | T: ...
    def get(self, key: str, default: object = None, /) -> object:
        return super().get(key, super().get(self.ALIASES.get(key, key), default))


class JobResult:
    """A job's id plus the means to look at it and wait for it.

    ``status``, ``error`` and ``to_dict()`` always read the job's current
    state; ``refresh()`` reloads the snapshot the other attributes read.
    """

    __slots__ = ("_client", "_data", "id")

    def __init__(self, queue: Queue, job_id: str, data: dict[str, Any] | None = None) -> None:
        """The job ``job_id`` of ``queue``'s database (its current one, if
        ``queue`` is redirected)."""
        self._client = queue._client
        self.id = job_id
        self._data = data

    @classmethod
    def _bound(cls, client: Client, job_id: str, data: dict[str, Any] | None = None) -> JobResult:
        """A handle reading through ``client``: how a Client returns the jobs it wrote or read."""
        job = cls.__new__(cls)
        job._client = client
        job.id = job_id
        job._data = data
        return job

    def refresh(self) -> JobResult:
        data = self._client.engine.get_job(self.id)
        if data is None:
            raise JobNotFoundError(f"no job with id {self.id}")
        self._data = data
        return self

    def _snapshot(self) -> dict[str, Any]:
        if self._data is None:
            self.refresh()
        assert self._data is not None
        return self._data

    @property
    def status(self) -> str:
        """pending, running, complete, failed (a retry is scheduled), dead, cancelled or expired."""
        return str(self.refresh()._snapshot()["status"])

    @property
    def error(self) -> str | None:
        """The last failed attempt's ``"Type: message"``, if any attempt failed."""
        error = self.refresh()._snapshot()["error"]
        return None if error is None else str(error)

    @property
    def errors(self) -> list[dict[str, Any]]:
        """Every failed attempt: attempt, type, message, traceback, failed_at."""
        return list(self._client.engine.job_errors(self.id))

    @property
    def task_name(self) -> str:
        return str(self._snapshot()["task_name"])

    @property
    def progress(self) -> int | None:
        """The last progress the task reported (``current_job.update_progress``),
        0 to 100, or None. Written in the worker's next batch of writes, and
        at the latest with the job's outcome."""
        progress = self.refresh()._snapshot()["progress"]
        return None if progress is None else int(progress)

    @property
    def metadata(self) -> dict[str, Any]:
        """The ``metadata=`` the job was enqueued with (``{}`` without any)."""
        return _metadata(self._snapshot())

    @property
    def dependencies(self) -> list[str]:
        """The ids of the jobs this one depends on, in dependency order."""
        return self._client.engine.links(self.id)[0]

    @property
    def dependents(self) -> list[str]:
        """The ids of the jobs that depend on this one, in enqueue order."""
        return self._client.engine.links(self.id)[1]

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.refresh()._snapshot())
        data["metadata"] = _metadata(data)
        data["dependencies"], data["dependents"] = self._client.engine.links(self.id)
        return data

    def result(
        self,
        timeout: float | None = 30.0,
        poll_interval: float = 0.05,
        max_poll_interval: float = 0.5,
    ) -> Any:
        """Waits for the job and returns the task's return value.

        Raises ``TaskFailedError`` if the job failed for good,
        ``JobCancelledError`` if it was cancelled and ``JobTimeoutError`` (a
        ``TimeoutError``) if ``timeout`` seconds pass first (``None``: wait
        as long as it takes). In a process running a worker, completion
        wakes the wait at once; otherwise the database is polled every
        ``poll_interval`` seconds, backing off to ``max_poll_interval``.
        """
        outcome = self._client.engine.wait(self.id, timeout, poll_interval, max_poll_interval)
        return self._unpack(outcome)

    async def aresult(
        self,
        timeout: float | None = 30.0,
        poll_interval: float = 0.05,
        max_poll_interval: float = 0.5,
    ) -> Any:
        """``result()`` for asyncio: the same outcomes and errors, and the wait
        never blocks the event loop. Completion wakes it at once, in this
        process or another that shares the database's wake-ups; it also looks
        at the database itself (from a worker thread, never the loop's)
        every ``poll_interval`` seconds, backing off to ``max_poll_interval``,
        in case a wake-up cannot reach it."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        interval = poll_interval
        watch = self._client.engine.watch(self.id)
        try:
            # The job may have finished already: one look at the database.
            outcome = await asyncio.to_thread(watch.check)
            while outcome is None:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    raise JobTimeoutError(f"job {self.id} did not finish within {timeout}s")
                ready = loop.create_future()
                loop.add_reader(watch.fileno(), _settle, ready)
                try:
                    wait = interval if remaining is None else min(interval, remaining)
                    await asyncio.wait_for(ready, wait)
                    outcome = watch.peek()
                except TimeoutError:
                    outcome = await asyncio.to_thread(watch.check)
                    interval = min(interval * 2, max(max_poll_interval, poll_interval))
                finally:
                    loop.remove_reader(watch.fileno())
        finally:
            watch.close()
        if outcome[0] not in ("complete", "cancelled"):
            # The failure names the task: read it off the loop's thread.
            await asyncio.to_thread(self._snapshot)
        return self._unpack(outcome)

    def _unpack(self, outcome: Outcome) -> Any:
        status, value, error = outcome
        if status == "complete":
            assert value is not None
            return self._client.load_result(self.id, value)
        if status == "cancelled":
            if error is not None and error.get("type") == DEPENDENCY_FAILED:
                raise dependency_failed(self.id, self._snapshot().get("task_name", "?"), error)
            raise JobCancelledError(f"job {self.id} was cancelled")
        if status == "expired":
            raise JobCancelledError(f"job {self.id} expired before it started")
        raise task_failed(self.id, self._snapshot().get("task_name", "?"), error)

    def __repr__(self) -> str:
        return f"<JobResult {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)


def _metadata(record: dict[str, Any]) -> dict[str, Any]:
    text = record.get("metadata")
    return {} if text is None else dict(json.loads(text))


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


# The error a job cancelled because a dependency failed carries (engine's
# storage::common::DEPENDENCY_FAILED).
DEPENDENCY_FAILED = "DependencyFailed"


def dependency_failed(job_id: str, task_name: str, error: dict[str, Any]) -> TaskFailedError:
    """The exception for a job that never ran because a step it depends on
    failed: it names that step (its job id and task)."""
    message = str(error.get("message", ""))
    exc = TaskFailedError(f"job {job_id} ({task_name}) was cancelled: {message}")
    exc.job_id = job_id
    exc.task_name = task_name
    exc.exc_type = DEPENDENCY_FAILED
    exc.exc_message = message
    exc.traceback = ""
    exc.attempt = None
    return exc


def task_failed(job_id: str, task_name: str, error: dict[str, Any] | None) -> TaskFailedError:
    """The exception for a job that failed for good, carrying the remote traceback."""
    error = error or {}
    exc_type = error.get("type", "Error")
    message = error.get("message", "")
    traceback = error.get("traceback", "")
    text = f"job {job_id} ({task_name}) failed after {error.get('attempt', '?')} attempt(s): "
    text += f"{exc_type}: {message}" if message else exc_type
    if traceback:
        text += "\n\nTraceback from the worker:\n" + traceback.rstrip()
    exc = TaskFailedError(text)
    exc.job_id = job_id
    exc.task_name = task_name
    exc.exc_type = exc_type
    exc.exc_message = message
    exc.traceback = traceback
    exc.attempt = error.get("attempt")
    return exc
