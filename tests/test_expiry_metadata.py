"""Expiry (expires=: a job not started in time ends "expired" without
running) and metadata (metadata=: JSON stored with the job), on every
backend."""

from __future__ import annotations

import datetime
import threading
from typing import Any

import pytest

from taskito import InvalidArgumentError, JobCancelledError, TaskFailedError, current_job
from tests.conftest import MakeQueue


def test_a_job_not_started_in_time_expires_without_running(make_queue: MakeQueue) -> None:
    # One executor, busy: the expiring job cannot start before its time.
    queue = make_queue(workers=1, prefetch=0, lease_duration=1.0, heartbeat_interval=0.1)
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []

    @queue.task()
    def blocker() -> None:
        started.set()
        assert release.wait(timeout=30)

    @queue.task()
    def late() -> None:
        ran.append(current_job.id)

    blocking = blocker.delay()
    queue.start_worker()
    assert started.wait(timeout=10)
    expiring = late.apply_async(expires=0.2)
    dependent = late.apply_async(depends_on=expiring)
    with pytest.raises(JobCancelledError, match="expired"):
        expiring.result(timeout=20)
    with pytest.raises(TaskFailedError, match=f"dependency {expiring.id} .* expired"):
        dependent.result(timeout=20)
    release.set()
    blocking.result(timeout=10)
    assert expiring.status == "expired"
    assert queue.stats()["expired"] == 1
    assert [j.id for j in queue.list_jobs(status="expired")] == [expiring.id]
    kept = late.apply_async(expires=datetime.timedelta(minutes=5))
    kept.result(timeout=10)
    assert ran == [kept.id]
    assert kept.to_dict()["expires_at"] is not None


def test_an_expired_job_never_runs_even_when_a_worker_comes_late(make_queue: MakeQueue) -> None:
    queue = make_queue()
    ran: list[int] = []

    @queue.task()
    def work(n: int) -> None:
        ran.append(n)

    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(milliseconds=50)
    expiring = work.apply_async((1,), expires=soon)
    # Its time passes, by the engine's clock, while a worker serves another
    # queue only: a job of that queue is due after it.
    marker = work.apply_async((2,), delay=0.3, queue="markers")
    queue.start_worker(queues=["markers"])
    marker.result(timeout=10)
    queue.shutdown()
    queue.start_worker()
    with pytest.raises(JobCancelledError, match="expired"):
        expiring.result(timeout=10)
    assert ran == [2]
    assert expiring.status == "expired"


@pytest.mark.parametrize("bad", [0, -1, "soon", True, datetime.timedelta(seconds=-1), float("nan")])
def test_a_bad_expiry_raises_and_stores_nothing(make_queue: MakeQueue, bad: Any) -> None:
    queue = make_queue()

    @queue.task()
    def noop() -> None: ...

    with pytest.raises(InvalidArgumentError, match="expires"):
        noop.apply_async(expires=bad)
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)
    with pytest.raises(InvalidArgumentError, match="expires must be in the future"):
        noop.apply_async(expires=past)
    assert sum(queue.stats().values()) == 0


def test_metadata_is_stored_listed_and_seen_by_the_task(make_queue: MakeQueue) -> None:
    queue = make_queue()

    @queue.task()
    def tagged() -> dict[str, Any]:
        return current_job.metadata

    job = tagged.apply_async(metadata={"tenant": "acme", "ids": [1, 2], "nested": {"ok": True}})
    plain = tagged.delay()
    # The reference project's form, a JSON string of an object, is stored as its dict.
    as_text = tagged.apply_async(metadata='{"tenant": "acme"}')
    assert as_text.metadata == {"tenant": "acme"}
    assert job.metadata == {"tenant": "acme", "ids": [1, 2], "nested": {"ok": True}}
    assert plain.metadata == {}
    got = queue.get_job(job.id)
    assert got is not None and got.metadata["tenant"] == "acme"
    listed = {j.id: j.metadata for j in queue.list_jobs()}
    assert listed[job.id]["ids"] == [1, 2]
    assert job.to_dict()["metadata"] == job.metadata
    queue.start_worker()
    assert job.result(timeout=10) == job.metadata
    assert plain.result(timeout=10) == {}
    assert as_text.result(timeout=10) == {"tenant": "acme"}


@pytest.mark.parametrize(
    "bad", [{"when": datetime.datetime.now()}, {"x": float("nan")}, ["a"], "text", '["a list"]', 5]
)
def test_metadata_that_json_cannot_hold_raises_and_stores_nothing(make_queue: MakeQueue, bad: Any) -> None:
    queue = make_queue()

    @queue.task()
    def noop() -> None: ...

    with pytest.raises(InvalidArgumentError, match="metadata"):
        noop.apply_async(metadata=bad)
    with pytest.raises(InvalidArgumentError, match="metadata"):
        queue.enqueue(noop.name, metadata=bad)
    assert sum(queue.stats().values()) == 0
