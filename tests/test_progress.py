"""Progress and the job context: current_job.update_progress (written in
batches, the last value by the time the outcome is stored), job.progress,
the reference project's aliases, and enqueue_many."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from taskito import InvalidArgumentError, current_job
from tests.conftest import MakeQueue


def test_the_last_progress_is_stored_with_the_outcome(make_queue: MakeQueue) -> None:
    queue = make_queue()

    @queue.task()
    def crunch(n: int) -> int:
        for i in range(n + 1):
            current_job.update_progress(i * 100 // n)
        return n

    jobs = crunch.map([(10,), (7,), (3,)])
    plain = queue.enqueue(crunch.name, (1,))
    assert jobs[0].progress is None
    queue.start_worker()
    for job in [*jobs, plain]:
        job.result(timeout=10)
        assert job.progress == 100
        assert job.to_dict()["progress"] == 100


def test_progress_is_visible_while_the_task_runs(make_queue: MakeQueue) -> None:
    queue = make_queue(lease_duration=1.0, heartbeat_interval=0.1)
    reported, release = threading.Event(), threading.Event()

    @queue.task()
    def slow() -> None:
        current_job.update_progress(40)
        reported.set()
        assert release.wait(timeout=30)

    job = slow.delay()
    queue.start_worker()
    assert reported.wait(timeout=10)
    # Written with the worker's next heartbeat: wait for that condition.
    wait_for(lambda: job.progress == 40, "the progress to be written while the task runs")
    release.set()
    job.result(timeout=10)
    assert job.progress == 40


@pytest.mark.parametrize("bad", [101, -1, 50.0, "50", True, None])
def test_bad_progress_raises_in_the_task(make_queue: MakeQueue, bad: Any) -> None:
    queue = make_queue()

    @queue.task(max_retries=0)
    def report() -> str:
        try:
            current_job.update_progress(bad)
        except InvalidArgumentError as exc:
            return str(exc)
        return "accepted"

    queue.start_worker()
    assert "progress must be" in report.delay().result(timeout=10)


def test_context_aliases_of_the_reference_project(make_queue: MakeQueue) -> None:
    queue = make_queue()

    @queue.task(queue="reports", max_retries=2, retry_backoff=0)
    def flaky() -> tuple[int, int, str, str]:
        if current_job.attempt < 2:
            raise RuntimeError("again")
        return current_job.attempt, current_job.retry_count, current_job.queue, current_job.queue_name

    queue.start_worker(queues=["reports"])
    assert flaky.delay().result(timeout=10) == (2, 1, "reports", "reports")


def test_enqueue_many_stores_one_job_per_item_in_order(make_queue: MakeQueue) -> None:
    queue = make_queue()

    @queue.task()
    def greet(name: str, punctuation: str = "!") -> str:
        return f"hi {name}{punctuation}"

    jobs = queue.enqueue_many(
        greet.name, [("a",), ["b"], ("c",)], [{}, {"punctuation": "?"}, {}], priority=5, queue="other"
    )
    assert [j.to_dict()["priority"] for j in jobs] == [5, 5, 5]
    assert {j.to_dict()["queue"] for j in jobs} == {"other"}
    queue.start_worker(queues=["other"])
    assert [j.result(timeout=10) for j in jobs] == ["hi a!", "hi b?", "hi c!"]
    with pytest.raises(InvalidArgumentError, match="kwargs_list"):
        queue.enqueue_many(greet.name, [("a",)], [{}, {}])
    assert queue.stats()["complete"] == 3


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Looks at ``condition`` every 10 ms until it holds."""
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        tick.wait(0.01)
