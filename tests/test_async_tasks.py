"""Coroutine tasks (``async def``) on the worker's event loop: many in flight
without a thread each, timeouts and cancellations that cancel them for real,
sync and async tasks on one worker, ``current_job`` per coroutine, shutdown,
and the async clients (``adelay``, ``aapply_async``, ``astats``)."""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from taskito import JobCancelledError, Queue, current_job

from .conftest import MakeQueue


class Flight:
    """Counts the coroutines in flight and the most there ever were."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    def __enter__(self) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)

    def __exit__(self, *exc: object) -> None:
        self.now -= 1


def test_a_thousand_coroutines_wait_together_not_one_per_thread(make_queue: MakeQueue) -> None:
    queue = make_queue(workers=2, async_concurrency=500)
    flight = Flight()

    @queue.task()
    async def nap(i: int) -> int:
        with flight:
            await asyncio.sleep(0.005)
        return i

    jobs = nap.map([(i,) for i in range(1000)])
    started = time.monotonic()
    queue.start_worker()
    assert [job.result(timeout=30) for job in jobs] == list(range(1000))
    elapsed = time.monotonic() - started
    # One after the other they would take 5 s; two threads, 2.5 s.
    assert elapsed < 5, f"{elapsed:.2f}s"
    assert flight.peak > queue.worker_threads, "more in flight than the worker has threads"
    assert flight.peak <= 500, "never more than async_concurrency at once"


def test_async_concurrency_caps_the_coroutines_running_at_once(make_queue: MakeQueue) -> None:
    queue = make_queue(workers=2, async_concurrency=3)
    flight = Flight()

    @queue.task()
    async def nap() -> None:
        with flight:
            await asyncio.sleep(0.002)

    jobs = nap.map([()] * 60)
    queue.start_worker()
    for job in jobs:
        job.result(timeout=30)
    assert flight.peak == 3


def test_a_timeout_cancels_the_coroutine_and_retries_it(make_queue: MakeQueue) -> None:
    queue = make_queue()
    cleaned_up = threading.Event()
    seen: list[str] = []

    @queue.task(timeout=0.3, max_retries=1, retry_backoff=0)
    async def stuck() -> str:
        if current_job.attempt == 2:
            return "second attempt"
        try:
            await asyncio.Event().wait()  # never set: only the timeout ends it
        except asyncio.CancelledError:
            seen.append("CancelledError")
            raise
        finally:
            cleaned_up.set()
        return "unreachable"

    queue.start_worker()
    job = stuck.delay()
    assert job.result(timeout=30) == "second attempt"
    assert cleaned_up.wait(10), "the coroutine's finally block ran"
    assert seen == ["CancelledError"]
    assert [e["type"] for e in job.errors] == ["TaskTimeoutError"]
    assert job.to_dict()["attempt"] == 2


@pytest.mark.parametrize("asked_by", ["its own queue", "another queue on the file"])
def test_cancel_running_job_cancels_the_coroutine(tmp_path: Path, asked_by: str) -> None:
    db = str(tmp_path / "cancel.db")
    started, cleaned_up = threading.Event(), threading.Event()
    with Queue(db, workers=1) as queue, Queue(db) as other:

        @queue.task()
        async def endless() -> str:
            started.set()
            try:
                await asyncio.Event().wait()
            finally:
                cleaned_up.set()
            return "unreachable"

        queue.start_worker()
        job = endless.delay()
        assert started.wait(10)
        assert list(queue.running_tasks()) == [job.id], "a coroutine shows as running"
        # Asked in the worker's process, it is told at once; from another
        # process (another queue's engine stands for one), the worker finds
        # the request within about a tenth of a second.
        asker = queue if asked_by == "its own queue" else other
        assert asker.cancel_running_job(job.id)
        assert cleaned_up.wait(10), "CancelledError was raised inside it"
        with pytest.raises(JobCancelledError):
            job.result(timeout=10)
        assert job.status == "cancelled"
        assert queue.running_tasks() == {}


def test_a_coroutine_that_swallows_its_cancellation_still_sees_check_cancelled(
    job_queue: Queue,
) -> None:
    started = threading.Event()

    @job_queue.task()
    async def stubborn() -> str:
        started.set()
        with contextlib.suppress(asyncio.CancelledError):  # it carries on...
            await asyncio.Event().wait()
        current_job.check_cancelled()  # ...until it asks, answered without a storage read
        return "unreachable"

    job_queue.start_worker()
    job = stubborn.delay()
    assert started.wait(10)
    job_queue.cancel_running_job(job.id)
    with pytest.raises(JobCancelledError):
        job.result(timeout=10)


def test_sync_and_async_tasks_interleave_on_one_worker(make_queue: MakeQueue) -> None:
    # Two threads: the sync task holds one until every coroutine finished,
    # and the coroutines finish only once all ten wait at once, which ten
    # jobs on one remaining thread could not do if each held it.
    queue = make_queue(workers=2)
    all_waiting: list[asyncio.Event] = []
    waiting = 0
    sync_started, coroutines_done = threading.Event(), threading.Event()
    finished = 0

    @queue.task()
    def sync_task() -> str:
        sync_started.set()
        assert coroutines_done.wait(30), "the coroutines finished while this ran"
        return "sync"

    @queue.task()
    async def async_task(i: int) -> int:
        nonlocal waiting, finished
        if not all_waiting:
            all_waiting.append(asyncio.Event())
        waiting += 1
        if waiting == 10:
            all_waiting[0].set()
        await all_waiting[0].wait()
        finished += 1
        if finished == 10:
            coroutines_done.set()
        return i

    queue.start_worker()
    blocking = sync_task.delay()
    assert sync_started.wait(10)
    jobs = async_task.map([(i,) for i in range(10)])
    assert [job.result(timeout=30) for job in jobs] == list(range(10))
    assert blocking.result(timeout=30) == "sync"


def test_current_job_names_its_own_job_in_each_coroutine(make_queue: MakeQueue) -> None:
    queue = make_queue(async_concurrency=200)

    @queue.task()
    async def whoami() -> tuple[str, str, str]:
        before = current_job.id
        await asyncio.sleep(0.001)  # others run meanwhile
        after = current_job.id
        await asyncio.sleep(0)
        return before, after, current_job.task_name

    jobs = whoami.map([()] * 200)
    queue.start_worker()
    for job in jobs:
        assert job.result(timeout=30) == (job.id, job.id, whoami.name)


def test_a_failing_coroutine_is_retried_with_its_traceback(job_queue: Queue) -> None:
    @job_queue.task(max_retries=1, retry_backoff=0, dont_retry_on=[KeyError])
    async def flaky() -> int:
        await asyncio.sleep(0)
        if current_job.attempt == 1:
            raise ValueError("first attempt fails")
        raise KeyError("not retried")

    job_queue.start_worker()
    job = flaky.delay()
    with pytest.raises(Exception, match="not retried"):
        job.result(timeout=10)
    errors = job.errors
    assert [e["type"] for e in errors] == ["ValueError", "KeyError"]
    assert "raise ValueError" in errors[0]["traceback"]
    assert job.status == "dead"


def test_shutdown_lets_coroutines_finish_in_the_grace_period_and_cancels_the_rest(
    make_queue: MakeQueue,
) -> None:
    queue = make_queue()
    quick_started, endless_started, cleaned_up = threading.Event(), threading.Event(), threading.Event()

    @queue.task()
    async def quick() -> str:
        quick_started.set()
        await asyncio.sleep(0.2)  # its work, which outlasts the start of the shutdown
        return "done in time"

    @queue.task()
    async def endless() -> None:
        endless_started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cleaned_up.set()

    queue.start_worker()
    done = quick.delay()
    stuck = endless.delay()
    assert quick_started.wait(10) and endless_started.wait(10)
    assert queue.shutdown(timeout=1.0) == 1, "one coroutine was still running"
    assert cleaned_up.wait(10)
    assert done.result(timeout=5) == "done in time"
    record = stuck.to_dict()
    assert record["status"] == "pending", "handed back to the queue"
    assert record["attempt"] == 1, "a graceful stop counts the attempt it cut short"


class ThreadRecordingSerializer:
    """Pickle, noting which thread each dumps() ran on."""

    def __init__(self) -> None:
        self.threads: list[int] = []

    def dumps(self, value: Any) -> bytes:
        self.threads.append(threading.get_ident())
        return pickle.dumps(value)

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)


def test_async_clients_enqueue_and_count_off_the_event_loop(make_queue: MakeQueue) -> None:
    serializer = ThreadRecordingSerializer()
    queue = make_queue(serializer=serializer)

    @queue.task()
    def add(a: int, b: int) -> int:
        return a + b

    async def main() -> tuple[int, int, dict[str, int], int]:
        loop_thread = threading.get_ident()
        first = await add.adelay(1, b=2)
        second = await add.aapply_async((3, 4), priority=7, queue="other")
        counts = dict(await queue.astats())
        assert loop_thread not in serializer.threads, "the enqueues ran in worker threads"
        return await first.aresult(timeout=10), await second.aresult(timeout=10), counts, loop_thread

    queue.start_worker(queues=["default", "other"])
    first, second, counts, _ = asyncio.run(main())
    assert (first, second) == (3, 7)
    assert counts["pending"] + counts["running"] + counts["complete"] == 2
    assert queue.list_jobs(queue="other")[0].to_dict()["priority"] == 7


LOCK_HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")  # taskito's writes wait for this lock
print("locked", flush=True)
sys.stdin.readline()
db.execute("ROLLBACK")
"""


def test_adelay_waiting_for_the_write_lock_does_not_hold_up_the_loop(tmp_path: Path) -> None:
    db = str(tmp_path / "locked.db")
    with Queue(db, busy_timeout=10) as queue:

        @queue.task()
        def ping() -> str:
            return "pong"

        holder = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(LOCK_HOLDER), db],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert holder.stdin is not None and holder.stdout is not None
        try:
            assert holder.stdout.readline().strip() == "locked"

            async def main() -> str:
                enqueue = asyncio.ensure_future(ping.adelay())
                other_work_ran = asyncio.Event()
                asyncio.get_running_loop().call_soon(other_work_ran.set)
                await asyncio.wait_for(other_work_ran.wait(), 5)
                assert not enqueue.done(), "the enqueue waits for the lock, in its thread"
                holder.stdin.write("release\n")  # type: ignore[union-attr]
                holder.stdin.flush()  # type: ignore[union-attr]
                job = await enqueue
                return job.id

            job_id = asyncio.run(main())
        finally:
            holder.communicate(timeout=30)
        assert queue.get_job(job_id) is not None
