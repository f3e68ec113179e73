"""Teardown that cannot hang: stop within the timeout, then name what is stuck.

A task cannot be killed, and its executor thread is not a ``threading``
thread, but its Python frames are visible through ``sys._current_frames()``:
that is how a stuck task is found, named (the job id is a local of
``Queue._execute``) and shown where it is stuck.

When the grace period of ``Queue.shutdown()`` ends, the engine raises
``taskito.TaskInterrupted`` in every task still running, so that one looping
in Python ends and frees its thread. A task blocked outside Python (a lock,
``time.sleep``, I/O) only notices once that call returns; until then its
thread stays behind. The stacks are therefore taken before the worker stops,
and again after, for the tasks that could not be interrupted.
"""

from __future__ import annotations

import sys
import time
import traceback
from dataclasses import dataclass
from types import FrameType
from typing import Any

from pytest_taskito._jobs import SLICE_MAX, SLICE_MIN, job_line, running_snapshot, scan, wait_on
from taskito import Queue

# How long an interrupted task gets to unwind out of its thread.
_UNWIND_LIMIT = 0.5
_UNWIND_POLL = 0.005


@dataclass(frozen=True)
class RunningTask:
    job_id: str
    thread: int
    stack: str


def running_tasks(queue: Queue) -> dict[str, RunningTask]:
    """The tasks of ``queue`` inside a thread right now, by job id."""
    execute = Queue._execute.__code__
    found: dict[str, RunningTask] = {}
    for ident, top in sys._current_frames().items():
        frames: list[tuple[FrameType, int]] = []
        for frame, lineno in traceback.walk_stack(top):
            if frame.f_code is execute:
                if frame.f_locals.get("self") is queue:
                    job_id = str(frame.f_locals.get("job_id"))
                    summary = traceback.StackSummary.extract(reversed(frames))
                    found[job_id] = RunningTask(job_id, ident, "".join(summary.format()).rstrip())
                break
            frames.append((frame, lineno))
    return found


def wait_unwound(queue: Queue, job_ids: set[str]) -> set[str]:
    """Returns the job ids among ``job_ids`` whose tasks left their thread
    within _UNWIND_LIMIT (polled, with a deadline)."""
    deadline = time.monotonic() + _UNWIND_LIMIT
    while True:
        left = job_ids - set(running_tasks(queue))
        if left == job_ids or time.monotonic() >= deadline:
            return left
        time.sleep(_UNWIND_POLL)


def report(
    queue: Queue,
    what: str,
    count: int,
    timeout: float,
    snapshot: dict[str, dict[str, Any]],
    tasks: dict[str, RunningTask],
    interrupted: set[str] | None,
) -> str:
    """Names each stuck job, its task, how long it ran and where its thread is."""
    now = time.time()
    ids = list(dict.fromkeys([*tasks, *snapshot]))
    lines = [f"{what}: {count} task(s) still running after {timeout:g}s (--taskito-timeout):"]
    if not ids:
        lines.append("  - none is inside a thread any more: they returned just after the limit")
    for job_id in ids:
        data = snapshot.get(job_id)
        if data is None:
            # Started after the snapshot: only its thread's frames named it.
            job = queue.get_job(job_id)
            data = None if job is None else job.to_dict()
        lines.append("  - " + (job_line(data, now) if data else f"job {job_id}"))
        task = tasks.get(job_id)
        if task is not None:
            lines.append(f"    in thread {task.thread}, at:")
            lines += ["      " + line for line in task.stack.splitlines()]
        if interrupted is not None:
            if job_id in interrupted:
                lines.append("    -> interrupted: taskito.TaskInterrupted was raised in it and it returned")
            elif task is not None:
                lines.append("    -> blocked outside Python: cannot be interrupted; its thread stays behind")
    return "\n".join(lines)


def stop_worker(queue: Queue, timeout: float, what: str) -> str | None:
    """Stops the queue's worker, letting running tasks finish within
    ``timeout``. Returns None, or a report naming the tasks that did not
    (snapshotted first: the engine hands their jobs back to the queue)."""
    if queue.closed:
        return None
    snapshot = running_snapshot(queue)
    before = running_tasks(queue)
    left = queue.shutdown(timeout=timeout)
    if not left:
        return None
    after = running_tasks(queue)
    unwound = wait_unwound(queue, set(after))
    # The tasks still running when the time ran out are those still in a
    # thread, and those the engine's interrupt has unwound since: their jobs
    # were handed back to the queue, which leaves them pending with no start
    # time (a job that finished or failed in time keeps its start time).
    abandoned = {job_id for job_id in {*before, *after} if job_id in after or _handed_back(queue, job_id)}
    blocked = set(after) - unwound
    interrupted = abandoned - blocked
    # Where each was: now if still there, else when the teardown began.
    tasks = {job_id: before[job_id] for job_id in interrupted if job_id in before}
    tasks.update({job_id: after[job_id] for job_id in blocked})
    snapshot = {job_id: data for job_id, data in snapshot.items() if job_id in abandoned}
    text = report(queue, what, left, timeout, snapshot, tasks, interrupted)
    return (
        text
        + "\nTheir jobs were handed back to the queue. Make the task return in time, or raise its timeout."
    )


def _handed_back(queue: Queue, job_id: str) -> bool:
    job = queue.get_job(job_id)
    if job is None:
        return False
    data = job.to_dict()
    return data["status"] == "pending" and data["started_at"] is None


def drain(queue: Queue, since: str | None, timeout: float, what: str) -> str | None:
    """For a worker shared between tests: leaves no job after ``since`` that
    could still run, by cancelling those not started and letting running
    ones finish within ``timeout``. Returns None, or a report of the stuck
    ones (not interrupted: the worker goes on, and an exception raised late
    could land in the next job of that thread)."""
    deadline = time.monotonic() + timeout
    slice_ = SLICE_MIN
    while True:
        # What runs is read first, then everything not started is cancelled,
        # so nothing new starts while the running ones finish; again every
        # round, for jobs those enqueue or that fail into a retry meanwhile.
        # Done after a round that began with nothing running and then found
        # nothing to cancel: from such a state nothing of the test can start.
        running = list(scan(queue, "running", since))
        found = 0
        for status in ("pending", "failed"):
            for job in scan(queue, status, since):
                found += 1
                queue.cancel_job(job.id)
        if not running:
            if not found:
                return None
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            snapshot = {job.id: job.to_dict() for job in running}
            tasks = {job_id: task for job_id, task in running_tasks(queue).items() if job_id in snapshot}
            text = report(queue, what, len(snapshot), timeout, snapshot, tasks, None)
            return text + (
                "\nEach keeps one thread of the session worker for the rest of the session. "
                "Make the task return in time, or raise its timeout."
            )
        wait_on(running[0], min(slice_, remaining))
        slice_ = min(slice_ * 2, SLICE_MAX)
