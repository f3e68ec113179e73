"""Enqueueing jobs and running them: delay, apply_async, map, enqueue by name,
task and queue options, priorities, delays, async tasks and current_job."""

from __future__ import annotations

import asyncio

import pytest

from taskito import JobTimeoutError, Queue, UnknownTaskError, current_job

from .conftest import MakeQueue


def test_delay_runs_the_task_and_returns_its_value(job_queue: Queue) -> None:
    @job_queue.task()
    def add(a: int, b: int) -> int:
        return a + b

    job_queue.start_worker()
    job = add.delay(2, 3)
    assert job.result(timeout=10) == 5
    assert job.status == "complete"
    assert add(1, 1) == 2, "a task stays callable directly"
    assert add.name == f"{__name__}.test_delay_runs_the_task_and_returns_its_value.<locals>.add"


def test_map_enqueues_in_order_and_returns_every_job(job_queue: Queue) -> None:
    @job_queue.task()
    def square(x: int) -> int:
        return x * x

    jobs = square.map([(i,) for i in range(500)])
    assert len(jobs) == 500
    assert jobs == sorted(jobs, key=lambda j: j.id), "ids are time-ordered strings"
    assert job_queue.stats()["pending"] == 500
    job_queue.start_worker()
    assert [j.result(timeout=10) for j in jobs] == [i * i for i in range(500)]
    assert square.map([]) == []


def test_apply_async_options_and_list_args(job_queue: Queue) -> None:
    @job_queue.task(queue="low", priority=1, max_retries=7, timeout=9)
    def f(x: int) -> int:
        return x

    job = f.apply_async(args=[4], priority=5, queue="high", max_retries=2, timeout=3)
    data = job.to_dict()
    assert (data["queue"], data["priority"], data["max_retries"], data["timeout"]) == ("high", 5, 2, 3.0)
    default = f.delay(1).to_dict()
    assert (default["queue"], default["priority"], default["max_retries"]) == ("low", 1, 7)
    job_queue.start_worker(["high"])
    assert job.result(timeout=10) == 4
    assert default.get("status") == "pending"


def test_queue_defaults_apply_to_tasks_without_their_own(make_queue: MakeQueue) -> None:
    q = make_queue(default_retry=5, default_timeout=60, default_priority=2)

    @q.task()
    def f() -> None: ...

    data = f.delay().to_dict()
    assert (data["max_retries"], data["timeout"], data["priority"]) == (5, 60.0, 2)


def test_higher_priority_runs_first_then_due_time_then_enqueue_order(make_queue: MakeQueue) -> None:
    q = make_queue(workers=1)
    ran: list[str] = []

    @q.task()
    def record(label: str) -> None:
        ran.append(label)

    record.apply_async(["low-1"])
    record.apply_async(["high"], priority=10)
    record.apply_async(["low-2"])
    record.apply_async(["mid"], priority=5)
    last = record.apply_async(["low-3"])
    q.start_worker()
    last.result(timeout=10)
    assert ran == ["high", "mid", "low-1", "low-2", "low-3"]


def test_delay_holds_a_job_back(job_queue: Queue) -> None:
    @job_queue.task()
    def f() -> str:
        return "done"

    job_queue.start_worker()
    job = f.apply_async(delay=0.2)
    assert job.status == "pending"
    with pytest.raises(JobTimeoutError):
        job.result(timeout=0.05)
    assert job.result(timeout=10) == "done"
    data = job.to_dict()
    assert data["started_at"] - data["created_at"] >= 0.19


def test_enqueue_by_name(job_queue: Queue) -> None:
    @job_queue.task(name="math.double")
    def double(x: int) -> int:
        return 2 * x

    job_queue.start_worker()
    assert job_queue.enqueue("math.double", args=(21,)).result(timeout=10) == 42
    assert job_queue.enqueue("math.double", kwargs={"x": 4}, priority=3).result(timeout=10) == 8
    with pytest.raises(UnknownTaskError, match="nope") as info:
        job_queue.enqueue("nope")
    assert isinstance(info.value, KeyError)
    assert "'" not in str(info.value)[:3], "reads as a sentence, not a quoted KeyError"


def test_async_task_functions_are_awaited(job_queue: Queue) -> None:
    @job_queue.task()
    async def coro(x: int) -> int:
        await asyncio.sleep(0)
        return x * 3

    job_queue.start_worker()
    assert coro.delay(3).result(timeout=10) == 9


def test_current_job_describes_the_running_job(job_queue: Queue) -> None:
    @job_queue.task(queue="ctx", max_retries=4)
    def who() -> tuple[str, str, str, int, int]:
        return (
            current_job.id,
            current_job.task_name,
            current_job.queue,
            current_job.attempt,
            current_job.max_retries,
        )

    job_queue.start_worker()
    job = who.delay()
    assert job.result(timeout=10) == (job.id, who.name, "ctx", 1, 4)
    assert not current_job.active
    with pytest.raises(RuntimeError):
        current_job.id  # noqa: B018
