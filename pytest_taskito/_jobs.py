"""Reading a queue's jobs for the plugin: listing, waiting on one, describing."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from taskito import JobCancelledError, JobResult, JobTimeoutError, Queue, TaskFailedError

FINAL = ("complete", "dead", "cancelled")
# Bounds of the slice a wait spends on one job before looking at the whole
# queue again: how late a failure elsewhere, or a retry falling due, is seen.
SLICE_MIN = 0.002
SLICE_MAX = 0.05
_PAGE = 200
# Most jobs named in one message, per kind.
SHOWN = 5


def scan(queue: Queue, status: str | None, since: str | None) -> Iterator[JobResult]:
    """Jobs with ``status`` enqueued after the job ``since`` (all when None),
    newest first. Job ids are fixed-width and time-ordered, so string order
    is enqueue order."""
    offset = 0
    while True:
        page = queue.list_jobs(status=status, limit=_PAGE, offset=offset)
        for job in page:
            if since is not None and job.id <= since:
                return
            yield job
        if len(page) < _PAGE:
            return
        offset += _PAGE


def newest_job_id(queue: Queue) -> str | None:
    newest = queue.list_jobs(limit=1)
    return newest[0].id if newest else None


def running_snapshot(queue: Queue, since: str | None = None) -> dict[str, dict[str, Any]]:
    return {job.id: job.to_dict() for job in scan(queue, "running", since)}


def wait_on(job: JobResult, seconds: float) -> None:
    """Waits up to ``seconds`` for ``job`` to be final, whatever its outcome.
    In the worker's process the wait ends the moment the job does."""
    with contextlib.suppress(TaskFailedError, JobCancelledError, JobTimeoutError):
        job.result(timeout=seconds)


def is_final(job: JobResult) -> bool:
    return job.status in FINAL


def job_line(data: dict[str, Any], now: float) -> str:
    """``job <id> (<task>)`` and what it is doing, from ``JobResult.to_dict()``."""
    text = f"job {data['id']} ({data['task_name']})"
    status = data["status"]
    if status == "running" and data.get("started_at"):
        text += f", running for {now - data['started_at']:.1f}s"
    elif status == "failed":
        text += f", attempt {data['attempt']} failed ({data['error']}); retry in {data['scheduled_at'] - now:.1f}s"
    elif status == "pending" and data["scheduled_at"] > now:
        text += f", delayed: due in {data['scheduled_at'] - now:.1f}s"
    elif status == "pending":
        text += ", due and waiting to run"
    return text


def job_lines(items: list[dict[str, Any]], now: float) -> list[str]:
    lines = [f"  - {job_line(data, now)}" for data in items[:SHOWN]]
    if len(items) > SHOWN:
        lines.append(f"  - and {len(items) - SHOWN} more")
    return lines
