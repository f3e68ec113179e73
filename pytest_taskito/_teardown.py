"""Teardown that cannot hang: stop within the timeout, then name what is stuck.

A task cannot be killed, and its executor thread is not a ``threading``
thread, but ``Queue.running_tasks()`` names the thread running each job and
``sys._current_frames()`` shows where that thread is: that is how a stuck
task is found, named and shown where it is stuck. Once the worker has
stopped, ``running_tasks()`` lists nothing: whether a thread is still inside
the task it was running is then told by the thread's own frames.

When the grace period of ``Queue.shutdown()`` ends, the engine raises
``taskito.TaskInterrupted`` in every task still running, so that one looping
in Python ends and frees its thread. A task blocked outside Python (a lock,
``time.sleep``, I/O) only notices once that call returns; until then its
thread stays behind. The stacks are therefore taken before the worker stops,
and again after, for the tasks that could not be interrupted.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from dataclasses import dataclass
from types import FrameType
from typing import Any

import taskito
from pytest_taskito._jobs import SLICE_MAX, SLICE_MIN, job_line, running_snapshot, scan, wait_on
from taskito import Queue

_TASKITO = os.path.dirname(os.path.abspath(taskito.__file__))

# How long an interrupted task gets to unwind out of its thread.
_UNWIND_LIMIT = 0.5
_UNWIND_POLL = 0.005


@dataclass(frozen=True)
class RunningTask:
    job_id: str
    thread: int
    stack: str
    # The thread's outermost Python frame: while the thread's stack still
    # starts with this very frame, the thread is still inside this task.
    root: FrameType


def running_tasks(queue: Queue) -> dict[str, RunningTask]:
    """The tasks of ``queue`` inside a thread right now, by job id."""
    threads = queue.running_tasks()
    frames = sys._current_frames()
    found: dict[str, RunningTask] = {}
    for job_id, ident in threads.items():
        top = frames.get(ident)
        if top is not None:  # else it returned in between: not inside its thread any more
            found[job_id] = RunningTask(job_id, ident, _task_stack(top), _root(top))
    return found


def still_inside(tasks: dict[str, RunningTask]) -> dict[str, RunningTask]:
    """Those of ``tasks`` whose thread is still inside the same task, with
    where it is now. Needs no worker: the threads' frames tell."""
    frames = sys._current_frames()
    found: dict[str, RunningTask] = {}
    for job_id, task in tasks.items():
        top = frames.get(task.thread)
        if top is not None and _root(top) is task.root:
            found[job_id] = RunningTask(job_id, task.thread, _task_stack(top), task.root)
    return found


def _root(top: FrameType) -> FrameType:
    frame = top
    while frame.f_back is not None:
        frame = frame.f_back
    return frame


def _task_stack(top: FrameType) -> str:
    """Where a task's thread is, from the task's own code on: the frames of
    taskito's that call it (the thread starts in taskito) are left out."""
    summary = traceback.extract_stack(top)
    first = 0
    while first < len(summary) - 1 and _in_taskito(summary[first].filename):
        first += 1
    return "".join(traceback.StackSummary.from_list(summary[first:]).format()).rstrip()


def _in_taskito(filename: str) -> bool:
    return os.path.commonpath([_TASKITO, os.path.abspath(filename)]) == _TASKITO


def wait_unwound(tasks: dict[str, RunningTask]) -> set[str]:
    """Returns the job ids among ``tasks`` whose tasks left their thread
    within _UNWIND_LIMIT (polled, with a deadline)."""
    job_ids = set(tasks)
    deadline = time.monotonic() + _UNWIND_LIMIT
    while True:
        left = job_ids - set(still_inside(tasks))
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
    # The stopped worker lists no task any more; the threads it ran them on
    # still show which are inside their task.
    after = still_inside(before)
    unwound = wait_unwound(after)
    # The tasks still running when the time ran out are those still in a
    # thread, and those the engine's interrupt has unwound since: their jobs
    # were handed back to the queue, which leaves them pending with no start
    # time (a job that finished or failed in time keeps its start time). A
    # task that started after `before` was taken is known only by its job.
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
