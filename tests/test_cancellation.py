"""Cancelling jobs: cancel_job before they start, cancel_running_job and
check_cancelled while they run."""

from __future__ import annotations

import threading

import pytest

from taskito import JobCancelledError, Queue, TaskFailedError, current_job

from .conftest import MakeQueue


def test_cancelled_jobs_raise_at_once(job_queue: Queue) -> None:
    @job_queue.task()
    def f() -> None: ...

    job = f.delay()
    assert job_queue.cancel_job(job.id)
    assert not job_queue.cancel_job(job.id)
    assert job.status == "cancelled"
    with pytest.raises(JobCancelledError):
        job.result(timeout=5)


def test_cancel_running_job_is_seen_by_check_cancelled(job_queue: Queue) -> None:
    started, requested = threading.Event(), threading.Event()
    steps: list[int] = []

    @job_queue.task(max_retries=5)
    def long_job() -> str:
        started.set()
        assert requested.wait(10)
        for step in range(1000):
            current_job.check_cancelled()
            steps.append(step)
        return "finished anyway"

    job_queue.start_worker()
    job = long_job.delay()
    assert started.wait(10)
    assert job_queue.cancel_running_job(job.id)
    requested.set()
    with pytest.raises(JobCancelledError):
        job.result(timeout=10)
    assert job.status == "cancelled"
    assert steps == [], "stopped at the first check"
    assert not job_queue.cancel_running_job(job.id), "already final"
    assert not job_queue.cancel_running_job("00000000000000aa")


def test_cancel_running_job_on_a_pending_job_cancels_it(job_queue: Queue) -> None:
    @job_queue.task()
    def f() -> None: ...

    job = f.delay()
    assert job_queue.cancel_running_job(job.id)
    assert job.status == "cancelled"


def test_a_sub_jobs_cancellation_fails_the_parent_instead_of_cancelling_it(make_queue: MakeQueue) -> None:
    q = make_queue(workers=2)

    @q.task()
    def child() -> None: ...

    @q.task(max_retries=1, retry_backoff=0)
    def parent(child_id: str) -> None:
        q.get_job(child_id).result(timeout=5)  # type: ignore[union-attr]

    sub = child.apply_async(delay=3600)
    q.cancel_job(sub.id)
    q.start_worker()
    job = parent.delay(sub.id)
    with pytest.raises(TaskFailedError) as info:
        job.result(timeout=10)
    assert info.value.exc_type == "taskito.JobCancelledError"
    assert job.status == "dead" and len(job.errors) == 2, "a failure, retried like any other"
