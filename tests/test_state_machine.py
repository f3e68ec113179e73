"""Property-based test of the job life cycle against a simple model.

Hypothesis drives a real Queue (engine, storage, worker threads) with random
sequences of enqueues (with scripted failures, retry limits, priorities,
delays, unique keys and dependencies on earlier jobs), cancellations, worker
runs, dead-letter retries and purges, and checks after every step that each
job's status, attempts and error history are what the model predicts.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import time
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, multiple, precondition, rule

from taskito import JobCancelledError, JobNotFoundError, JobTimeoutError, Queue, TaskFailedError

pytestmark = pytest.mark.slow

# How many more times each scripted job fails, by key. Shared with the task.
REMAINING_FAILURES: dict[int, int] = {}
KEYS = itertools.count()


class Boom(Exception):
    pass


@dataclass
class ModelJob:
    key: int
    max_retries: int
    delayed: bool
    # Retries wait an hour: a failure leaves the job "failed" (retry scheduled).
    slow_retry: bool
    failures_left: int
    status: str = "pending"
    attempt: int = 0
    errors: int = 0
    purged: bool = False
    unique_key: str | None = None
    # The job it waits for (enqueued before it), if any.
    parent: str | None = None


# Statuses in which a job holds its unique key.
LIVE = ("pending", "failed")


class JobLifeCycle(RuleBasedStateMachine):
    jobs = Bundle("jobs")

    def __init__(self) -> None:
        super().__init__()
        self.queue = Queue(":memory:", workers=2)
        self.model: dict[str, ModelJob] = {}

        def scripted(key: int) -> int:
            if REMAINING_FAILURES[key] > 0:
                REMAINING_FAILURES[key] -= 1
                raise Boom(f"scripted failure of {key}")
            return key

        self.tasks = {
            False: self.queue.task(name="scripted", retry_backoff=0)(scripted),
            True: self.queue.task(name="scripted_slow_retry", retry_backoff=3600)(scripted),
        }

    def teardown(self) -> None:
        self.queue.close()

    @rule(
        target=jobs,
        failures=st.integers(0, 4),
        max_retries=st.integers(0, 2),
        delayed=st.booleans(),
        slow_retry=st.booleans(),
        unique_key=st.sampled_from([None, None, "a", "b"]),
        parent=st.one_of(st.none(), jobs),
    )
    def enqueue(
        self,
        failures: int,
        max_retries: int,
        delayed: bool,
        slow_retry: bool,
        unique_key: str | None,
        parent: str | None,
    ) -> object:
        key = next(KEYS)
        REMAINING_FAILURES[key] = failures
        enqueue = functools.partial(
            self.tasks[slow_retry].apply_async,
            args=(key,),
            max_retries=max_retries,
            delay=3600 if delayed else None,
            unique_key=unique_key,
            depends_on=parent,
        )
        holder = self.live_holder(unique_key)
        if holder is not None:
            assert enqueue().id == holder, "a live key returns its job"
            return multiple()
        if parent is not None and self.model[parent].purged:
            with pytest.raises(JobNotFoundError):
                enqueue()
            return multiple()
        job = enqueue()
        expected = ModelJob(
            key, max_retries, delayed, slow_retry, failures, unique_key=unique_key, parent=parent
        )
        self.model[job.id] = expected
        if parent is not None and self.model[parent].status in ("dead", "cancelled"):
            # Its dependency already failed it: cancelled at once.
            expected.status = "cancelled"
            expected.errors = 1
        return job.id

    def live_holder(self, unique_key: str | None) -> str | None:
        for job_id, job in self.model.items():
            if (
                unique_key is not None
                and job.unique_key == unique_key
                and job.status in LIVE
                and not job.purged
            ):
                return job_id
        return None

    def waits(self, expected: ModelJob) -> bool:
        """Whether a pending job is waiting for its dependency."""
        return expected.parent is not None and self.model[expected.parent].status != "complete"

    def failed(self, job_id: str) -> None:
        """A job died or was cancelled: its waiting dependents are cancelled,
        each with an error naming the failure, and theirs after them."""
        for child_id, child in self.model.items():
            if child.parent == job_id and child.status == "pending":
                child.status = "cancelled"
                child.errors += 1
                self.failed(child_id)

    @rule(job_id=jobs)
    def cancel(self, job_id: str) -> None:
        expected = self.model[job_id]
        cancelled = self.queue.cancel_job(job_id)
        # The worker is stopped between rules: only jobs that have not
        # started (pending, or waiting to retry) can be cancelled.
        assert cancelled == (expected.status in ("pending", "failed") and not expected.purged)
        if cancelled:
            expected.status = "cancelled"
            self.failed(job_id)

    @rule()
    def run_worker_until_idle(self) -> None:
        self.queue.start_worker()
        # Enqueue order: a dependency comes before its dependents.
        for job_id, expected in self.model.items():
            if expected.status != "pending" or expected.delayed or expected.purged or self.waits(expected):
                continue
            job = self.queue.get_job(job_id)
            assert job is not None
            self.run_model(expected)
            if expected.status == "dead":
                self.failed(job_id)
            if expected.status == "failed":
                # Its retry is an hour away: wait for the failure instead.
                deadline = time.monotonic() + 30
                while job.status != "failed":
                    assert time.monotonic() < deadline, "the first attempt never failed"
                    with contextlib.suppress(JobTimeoutError):
                        job.result(timeout=0.01)
            else:
                with contextlib.suppress(TaskFailedError):
                    assert job.result(timeout=30) == expected.key
        for job_id, expected in self.model.items():
            if expected.status == "cancelled" and expected.parent is not None and not expected.purged:
                job = self.queue.get_job(job_id)
                assert job is not None
                with contextlib.suppress(JobCancelledError, TaskFailedError):
                    job.result(timeout=30)
        assert self.queue.shutdown() == 0

    def run_model(self, expected: ModelJob) -> None:
        """Replays in the model what a worker does to a due pending job."""
        while True:
            expected.attempt += 1
            if expected.failures_left == 0:
                expected.status = "complete"
                return
            expected.failures_left -= 1
            expected.errors += 1
            if expected.attempt > expected.max_retries:
                expected.status = "dead"
                return
            if expected.slow_retry:
                expected.status = "failed"
                return

    @rule(job_id=jobs)
    def retry_dead(self, job_id: str) -> None:
        expected = self.model[job_id]
        if expected.status == "dead" and not expected.purged:
            if self.live_holder(expected.unique_key) is not None:
                expected.unique_key = None  # another live job took it meanwhile
            self.queue.retry_dead(job_id)
            expected.status = "pending"
            expected.attempt = 0

    @precondition(lambda self: any(j.status == "dead" and not j.purged for j in self.model.values()))
    @rule()
    def purge_dead(self) -> None:
        dead = [j for j in self.model.values() if j.status == "dead" and not j.purged]
        assert self.queue.purge_dead() == len(dead)
        for j in dead:
            j.purged = True

    @invariant()
    def storage_matches_the_model(self) -> None:
        counts = {
            "pending": 0,
            "claimed": 0,
            "running": 0,
            "complete": 0,
            "failed": 0,
            "dead": 0,
            "cancelled": 0,
            "expired": 0,
        }
        for job_id, expected in self.model.items():
            job = self.queue.get_job(job_id)
            if expected.purged:
                assert job is None
                continue
            assert job is not None
            data = job.to_dict()
            assert data["status"] == expected.status, (job_id, data, expected)
            assert data["attempt"] == expected.attempt, (job_id, data, expected)
            assert len(job.errors) == expected.errors, (job_id, job.errors, expected)
            assert data["unique_key"] == expected.unique_key, (job_id, data, expected)
            counts[expected.status] += 1
        assert self.queue.stats() == counts


JobLifeCycle.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_job_life_cycle = JobLifeCycle.TestCase
