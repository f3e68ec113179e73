"""What the ``worker`` fixtures hand to a test: waiting helpers that surface
task failures, and a view of what ran.

Nothing here sleeps to synchronise. Waiting means ``JobResult.result()`` on
one outstanding job (it wakes the moment that job finishes, in-process) for
at most a short slice, then looking at the database again, until a deadline.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pytest_taskito._jobs import SHOWN, SLICE_MAX, SLICE_MIN, is_final, job_lines, scan, wait_on
from taskito import JobCancelledError, JobResult, JobTimeoutError, Queue, TaskFailedError


@dataclass
class Outstanding:
    """Work that keeps a worker from being idle."""

    running: list[JobResult] = field(default_factory=list)
    due: list[dict[str, Any]] = field(default_factory=list)
    retrying: list[dict[str, Any]] = field(default_factory=list)
    # Pending jobs whose time has not come (apply_async(delay=...)).
    delayed: list[dict[str, Any]] = field(default_factory=list)
    # The queue changed while it was being read: look again before calling it idle.
    unsettled: bool = False

    @property
    def idle(self) -> bool:
        return not (self.running or self.due or self.retrying or self.delayed or self.unsettled)


def _busy(stats: dict[str, int]) -> int:
    return stats["running"] + stats.get("claimed", 0) + stats["pending"] + stats["failed"]


def outstanding(
    queue: Queue, since: str | None, stats: dict[str, int], *, delayed: bool, every_pending: bool
) -> Outstanding:
    """What is running, due, delayed or waiting to retry among the jobs after ``since``.

    Idle means: no job running or claimed, no job pending (due, or with ``delayed``,
    delayed into the future), and no job waiting to retry ("failed" is not
    final: a retry is scheduled). Pending jobs are read newest first until a
    due one is found (when anything is due, the newest job usually is, so
    this normally reads one row); ``every_pending`` reads them all, to find
    every delayed job."""
    found = Outstanding()
    if _busy(stats) == 0:
        return found
    now = time.time()
    if stats["running"]:
        found.running = list(scan(queue, "running", since))
    if stats.get("claimed", 0):
        # Held by the worker (prefetched), about to start: as good as running.
        found.running += list(scan(queue, "claimed", since))
    if stats["failed"]:
        found.retrying = [job.to_dict() for job in scan(queue, "failed", since)]
    if stats["pending"]:
        for job in scan(queue, "pending", since):
            data = job.to_dict()
            if data["status"] != "pending":
                continue
            if data["scheduled_at"] > now:
                if delayed:
                    found.delayed.append(data)
            elif not found.due:
                found.due.append(data)
                if not every_pending:
                    break
    if found.idle and queue.stats() != stats:
        found.unsettled = True
    return found


def _limit(timeout: float | None, default: float) -> float:
    if timeout is None:
        return default
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"timeout must be a number of seconds or None, got {timeout!r}")
    if not 0 < timeout < float("inf"):
        raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
    return float(timeout)


class TaskitoWorker:
    """A worker running on ``queue`` for a test, with helpers to wait for it.

    ``threads`` is how many tasks it runs at once, ``timeout`` the default
    limit of its waits. Only jobs enqueued after ``since`` (a job id; None:
    every job) belong to this test: a worker shared by a session sees its
    earlier tests' jobs through no helper.
    """

    def __init__(self, queue: Queue, *, threads: int, timeout: float, since: str | None = None) -> None:
        self.queue = queue
        self.threads = threads
        self.timeout = timeout
        self._since = since
        self._reported: set[str] = set()

    def __repr__(self) -> str:
        return f"<TaskitoWorker {self.queue!r} threads={self.threads}>"

    # ── what ran ─────────────────────────────────────────────────────────

    @property
    def completed(self) -> list[JobResult]:
        """This test's jobs that completed, in enqueue order."""
        return self._jobs("complete")

    @property
    def failed(self) -> list[JobResult]:
        """This test's jobs that failed for good (status dead: out of retries,
        or not retryable), in enqueue order. Retries still scheduled are not
        here; ``job.errors`` lists every failed attempt."""
        return self._jobs("dead")

    def _jobs(self, status: str) -> list[JobResult]:
        return list(reversed(list(scan(self.queue, status, self._since))))

    # ── waiting ──────────────────────────────────────────────────────────

    def wait_idle(
        self, timeout: float | None = None, *, fail_fast: bool = True, include_delayed: bool = True
    ) -> None:
        """Returns once no job of this test is running, pending, or waiting to retry.

        A job in retry backoff counts: the wait goes through its retries. So
        does a job delayed into the future (``apply_async(delay=...)``) that
        falls due within ``timeout``: the wait lasts until it has run. With
        ``include_delayed=False``, delayed jobs do not count until they fall
        due. With ``fail_fast`` (the default), the first job that fails for
        good is raised at once as ``TaskFailedError``, carrying the task's
        traceback; each failure is raised once. Raises ``JobTimeoutError`` (a
        ``TimeoutError``) naming what is still outstanding after ``timeout``
        seconds (default: ``--taskito-timeout``), or at once, naming them,
        when a retry or a delayed job falls due after that limit.
        """
        __tracebackhide__ = True
        limit = _limit(timeout, self.timeout)
        deadline = time.monotonic() + limit
        wall_deadline = time.time() + limit
        slice_ = SLICE_MIN
        # The first look reads every pending job, so that one delayed past
        # the limit is named at once; later looks stop at the first due job.
        every_pending = include_delayed
        while True:
            stats = self.queue.stats()
            if fail_fast:
                self._raise_new_failure(stats)
            work = outstanding(
                self.queue, self._since, stats, delayed=include_delayed, every_pending=every_pending
            )
            every_pending = False
            if work.idle:
                return
            remaining = deadline - time.monotonic()
            late = [d for d in work.retrying + work.delayed if d["scheduled_at"] > wall_deadline]
            if remaining <= 0 or late:
                raise JobTimeoutError(self._not_idle_message(work, limit, late))
            target = self._target(work)
            if target is not None:
                wait_on(target, min(slice_, remaining))
            slice_ = min(slice_ * 2, SLICE_MAX)

    def _target(self, work: Outstanding) -> JobResult | None:
        """The job to wait on: the newest running or due job (jobs mostly run
        in enqueue order, so it tends to finish last), else the retry or
        delayed job that falls due first."""
        if work.running:
            return work.running[0]
        waiting = work.retrying + work.delayed
        pick = work.due[0] if work.due else min(waiting, key=lambda d: d["scheduled_at"], default=None)
        return None if pick is None else JobResult(self.queue, pick["id"])

    def _not_idle_message(self, work: Outstanding, limit: float, late: list[dict[str, Any]]) -> str:
        now = time.time()
        if late and all(d["status"] == "failed" for d in late):
            head = f"wait_idle: a retry is scheduled after the wait's limit of {limit:g}s; it cannot become idle in time:"
        elif late:
            head = (
                f"wait_idle: a delayed job falls due after the wait's limit of {limit:g}s; it cannot "
                "become idle in time (wait_idle(include_delayed=False) does not wait for delayed jobs):"
            )
        else:
            head = f"wait_idle: still busy after {limit:g}s:"
        lines = [head]
        running = [job.to_dict() for job in work.running[:SHOWN]]
        lines += job_lines(running, now)
        if len(work.running) > SHOWN:
            lines.append(f"  - and {len(work.running) - SHOWN} more running")
        lines += job_lines(work.due, now)
        lines += job_lines(sorted(work.retrying + work.delayed, key=lambda d: d["scheduled_at"]), now)
        return "\n".join(lines)

    def run_until_complete(
        self, jobs: Iterable[JobResult], timeout: float | None = None, *, fail_fast: bool = True
    ) -> list[Any]:
        """Waits for ``jobs`` (delayed ones included) and returns their results, in order.

        With ``fail_fast`` (the default), raises the first of them to fail
        for good, as soon as it does (``TaskFailedError`` with the task's
        traceback, or ``JobCancelledError``). Without, waits for all and puts
        the exception in place of a failed job's result. Raises
        ``JobTimeoutError`` naming the unfinished jobs after ``timeout``
        seconds (default: ``--taskito-timeout``)."""
        __tracebackhide__ = True
        if isinstance(jobs, JobResult):
            raise TypeError("run_until_complete takes a list of jobs; for one job, pass [job]")
        jobs = list(jobs)
        for job in jobs:
            if not isinstance(job, JobResult):
                raise TypeError(f"run_until_complete takes JobResult objects, got {type(job).__name__}")
        limit = _limit(timeout, self.timeout)
        deadline = time.monotonic() + limit
        ids = {job.id for job in jobs}
        results: list[Any] = []
        slice_ = SLICE_MIN
        for index, job in enumerate(jobs):
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    unfinished = [j.to_dict() for j in jobs[index:] if not is_final(j)]
                    lines = [f"run_until_complete: {len(unfinished)} job(s) unfinished after {limit:g}s:"]
                    raise JobTimeoutError("\n".join(lines + job_lines(unfinished, time.time())))
                try:
                    results.append(job.result(timeout=min(slice_, remaining)))
                    break
                except (TaskFailedError, JobCancelledError) as exc:
                    self._reported.add(job.id)
                    if fail_fast:
                        # Drop taskito's own frames: what matters is the test's
                        # line and the task's traceback in the message.
                        raise exc.with_traceback(None) from None
                    results.append(exc)
                    break
                except JobTimeoutError:
                    # This one is slow; make sure no other one failed meanwhile.
                    slice_ = min(slice_ * 2, SLICE_MAX)
                    if fail_fast:
                        self._raise_new_failure(self.queue.stats(), among=ids)
        return results

    def _raise_new_failure(self, stats: dict[str, int], among: set[str] | None = None) -> None:
        """Raises the earliest job (of this test, or ``among``) that failed for
        good and was not raised before."""
        __tracebackhide__ = True
        if stats["dead"] == 0:
            return
        candidates = [
            job
            for job in scan(self.queue, "dead", self._since)
            if job.id not in self._reported and (among is None or job.id in among)
        ]
        if not candidates:
            return
        first = min(candidates, key=lambda job: job.to_dict()["finished_at"] or 0.0)
        self._reported.add(first.id)
        try:
            first.result(timeout=0)
        except TaskFailedError as exc:
            # The worker's traceback is in the message; taskito's frames are noise.
            raise exc.with_traceback(None) from None
        raise AssertionError(f"job {first.id} is dead but result() did not raise")
