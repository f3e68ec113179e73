"""Reading jobs and waiting for them: JobResult (result, aresult, refresh,
to_dict), stats, get_job and list_jobs."""

from __future__ import annotations

import asyncio
import threading

import pytest

import taskito
from taskito import InvalidArgumentError, JobNotFoundError, JobTimeoutError, Queue, TaskitoError


def test_result_times_out_with_a_timeout_error(job_queue: Queue) -> None:
    @job_queue.task()
    def never_run() -> None: ...

    job = never_run.delay()
    with pytest.raises(JobTimeoutError) as info:
        job.result(timeout=0.05, poll_interval=0.01)
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, TaskitoError)


def test_stats_get_job_and_list_jobs(job_queue: Queue) -> None:
    @job_queue.task()
    def a() -> None: ...

    @job_queue.task(queue="other")
    def b() -> None: ...

    ja = [a.delay() for _ in range(3)]
    jb = b.delay()
    assert job_queue.stats() == {
        "pending": 4,
        "claimed": 0,
        "running": 0,
        "complete": 0,
        "failed": 0,
        "dead": 0,
        "cancelled": 0,
        "expired": 0,
    }
    got = job_queue.get_job(ja[0].id)
    assert got is not None and got.id == ja[0].id and got.task_name == a.name
    assert job_queue.get_job("0000000000000001") is None
    assert job_queue.get_job("not-an-id") is None
    assert [j.id for j in job_queue.list_jobs()] == [jb.id] + [j.id for j in reversed(ja)]
    assert [j.id for j in job_queue.list_jobs(queue="other")] == [jb.id]
    assert [j.id for j in job_queue.list_jobs(task_name=a.name, limit=1, offset=1)] == [ja[1].id]
    assert job_queue.list_jobs(status="complete") == []
    with pytest.raises(InvalidArgumentError):
        job_queue.list_jobs(status="done")
    job_queue.start_worker()
    jb.result(timeout=10)
    assert [j.id for j in job_queue.list_jobs(status="complete", queue="other")] == [jb.id]


def test_stats_use_the_status_names_and_keep_completed_as_an_alias(job_queue: Queue) -> None:
    @job_queue.task()
    def f() -> None: ...

    jobs = f.map([()] * 3)
    job_queue.start_worker()
    for job in jobs:
        job.result(timeout=10)
    stats = job_queue.stats()
    assert {job.status for job in jobs} == {"complete"}
    assert list(stats) == [
        "pending",
        "claimed",
        "running",
        "complete",
        "failed",
        "dead",
        "cancelled",
        "expired",
    ]
    assert stats["complete"] == stats["completed"] == stats.get("completed") == 3
    assert sum(stats.values()) == 3, "the alias is not counted twice"
    assert stats.get("done", -1) == -1 and stats.get("done") is None
    with pytest.raises(KeyError):
        stats["done"]


def test_job_result_snapshot_and_refresh(job_queue: Queue) -> None:
    @job_queue.task()
    def f() -> int:
        return 1

    job = f.delay()
    data = job.to_dict()
    assert data["id"] == job.id
    assert data["status"] == "pending"
    assert data["attempt"] == 0
    assert data["created_at"] <= data["scheduled_at"]
    job_queue.start_worker()
    job.result(timeout=10)
    assert job.refresh() is job
    assert job.to_dict()["status"] == "complete"
    assert job.to_dict()["attempt"] == 1
    assert "JobResult" in repr(job)
    with pytest.raises(JobNotFoundError):
        taskito.JobResult(job_queue, "00000000000000ff").refresh()


def test_aresult_waits_without_blocking_the_loop(job_queue: Queue) -> None:
    gate = threading.Event()

    @job_queue.task()
    def slow(x: int) -> int:
        assert gate.wait(10)
        return x + 1

    job_queue.start_worker()

    async def main() -> tuple[int, int]:
        job = slow.delay(1)
        waiting = asyncio.ensure_future(job.aresult(timeout=10))
        # The loop keeps running while the job cannot finish.
        await asyncio.sleep(0)
        assert not waiting.done()
        gate.set()
        value = await waiting
        ticks = 0
        while ticks < 3:
            await asyncio.sleep(0)
            ticks += 1
        return value, ticks

    assert asyncio.run(main()) == (2, 3)

    async def timeout() -> None:
        @job_queue.task()
        def never() -> None: ...

        job_queue.shutdown()
        await never.delay().aresult(timeout=0.05, poll_interval=0.01)

    with pytest.raises(JobTimeoutError):
        asyncio.run(timeout())
