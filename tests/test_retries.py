"""Retries and dead letters: backoff, retry_on/dont_retry_on, the failure's
traceback, dead_letters, retry_dead and the purges."""

from __future__ import annotations

import threading

import pytest

from taskito import InvalidArgumentError, JobNotFoundError, Queue, TaskFailedError, TaskitoError, current_job


class Transient(Exception):
    pass


class Permanent(Exception):
    pass


def test_failures_retry_with_backoff_then_raise_with_the_traceback(job_queue: Queue) -> None:
    attempts: list[int] = []

    @job_queue.task(max_retries=2, retry_backoff=0.01)
    def flaky() -> None:
        attempts.append(current_job.attempt)
        raise ValueError(f"bad attempt {current_job.attempt}")

    job_queue.start_worker()
    job = flaky.delay()
    with pytest.raises(TaskFailedError) as info:
        job.result(timeout=10)
    err = info.value
    assert isinstance(err, TaskitoError)
    assert attempts == [1, 2, 3]
    assert err.exc_type == "ValueError"
    assert err.exc_message == "bad attempt 3"
    assert "raise ValueError" in err.traceback
    assert "raise ValueError" in str(err)
    assert job.status == "dead"
    assert job.error == "ValueError: bad attempt 3"
    assert [e["attempt"] for e in job.errors] == [1, 2, 3]


def test_a_task_that_succeeds_on_retry_completes(job_queue: Queue) -> None:
    @job_queue.task(max_retries=3, retry_backoff=0)
    def second_time_lucky() -> int:
        if current_job.attempt == 1:
            raise RuntimeError("first")
        return current_job.attempt

    job_queue.start_worker()
    job = second_time_lucky.delay()
    assert job.result(timeout=10) == 2
    assert job.error == "RuntimeError: first"


def test_retry_on_and_dont_retry_on_filter_exceptions(job_queue: Queue) -> None:
    attempts: dict[str, int] = {}

    def count(name: str) -> None:
        attempts[name] = attempts.get(name, 0) + 1

    @job_queue.task(max_retries=3, retry_backoff=0, retry_on=Transient)
    def only_transient(kind: str) -> None:
        count(f"only_transient:{kind}")
        raise Transient() if kind == "transient" else Permanent()

    @job_queue.task(max_retries=3, retry_backoff=0, dont_retry_on=[Permanent, KeyError])
    def all_but_permanent(kind: str) -> None:
        count(f"all_but_permanent:{kind}")
        raise Transient() if kind == "transient" else Permanent()

    job_queue.start_worker()
    jobs = [
        only_transient.delay("transient"),
        only_transient.delay("permanent"),
        all_but_permanent.delay("transient"),
        all_but_permanent.delay("permanent"),
    ]
    for job in jobs:
        with pytest.raises(TaskFailedError):
            job.result(timeout=10)
    assert attempts == {
        "only_transient:transient": 4,
        "only_transient:permanent": 1,
        "all_but_permanent:transient": 4,
        "all_but_permanent:permanent": 1,
    }
    with pytest.raises(TypeError):
        job_queue.task(retry_on=[ValueError, "nope"])  # type: ignore[list-item]


def test_dead_letters_can_be_listed_retried_and_purged(job_queue: Queue) -> None:
    fail = threading.Event()
    fail.set()

    @job_queue.task(max_retries=1, retry_backoff=0, priority=3, queue="work")
    def fragile(x: int) -> int:
        if fail.is_set():
            raise RuntimeError(f"down for {x}")
        return x * 10

    job_queue.start_worker()
    dead = fragile.delay(4)
    other = fragile.delay(5)
    for job in (dead, other):
        with pytest.raises(TaskFailedError):
            job.result(timeout=10)
    letters = job_queue.dead_letters()
    assert {j.id for j in letters} == {dead.id, other.id}
    assert letters[0].to_dict()["error"] == "RuntimeError: down for 5"
    assert [e["attempt"] for e in dead.errors] == [1, 2]

    fail.clear()
    revived = job_queue.retry_dead(dead.id)
    assert revived.id == dead.id
    assert revived.result(timeout=10) == 40
    data = revived.to_dict()
    assert (data["priority"], data["queue"], data["attempt"]) == (3, "work", 1)
    assert len(revived.errors) == 2, "the failed attempts stay on record"

    with pytest.raises(InvalidArgumentError, match="complete, not dead"):
        job_queue.retry_dead(dead.id)
    with pytest.raises(JobNotFoundError):
        job_queue.retry_dead("00000000000000aa")
    assert job_queue.purge_dead(older_than=3600) == 0
    assert job_queue.purge_dead() == 1
    assert job_queue.dead_letters() == []
    assert job_queue.get_job(other.id) is None
    assert job_queue.purge_finished(older_than=3600) == 0
    assert job_queue.purge_finished() == 1
    assert job_queue.get_job(dead.id) is None
    assert job_queue.stats() == dict.fromkeys(job_queue.stats(), 0)
