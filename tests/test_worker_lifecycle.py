"""A Queue's and its worker's life: opening, start_worker, run_worker,
shutdown, close, and what the interpreter's exit does to tasks left behind."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from taskito import InvalidArgumentError, JobTimeoutError, Queue, QueueClosedError

from .conftest import MakeQueue


def test_tasks_registered_after_the_worker_started_still_run(job_queue: Queue) -> None:
    job_queue.start_worker()

    @job_queue.task()
    def late() -> str:
        return "late"

    assert late.delay().result(timeout=10) == "late"


def test_workers_zero_means_the_cpu_count(tmp_path: Path) -> None:
    with Queue(str(tmp_path / "q.db"), workers=0) as q:
        assert q.worker_threads == (os.cpu_count() or 1)
        assert q.settings["workers"] == q.worker_threads


def test_a_closed_queue_refuses_calls(make_queue: MakeQueue) -> None:
    q = make_queue()

    @q.task()
    def f() -> None: ...

    job = f.delay()
    q.close()
    assert q.closed
    for call in (f.delay, q.stats, lambda: job.result(timeout=1), q.start_worker):
        with pytest.raises(QueueClosedError):
            call()
    q.close()  # closing twice is harmless


def test_only_one_worker_per_queue(job_queue: Queue) -> None:
    job_queue.start_worker()
    with pytest.raises(InvalidArgumentError, match="already running"):
        job_queue.start_worker()
    job_queue.shutdown()
    job_queue.start_worker()


def test_a_worker_serves_only_the_queues_it_is_given(job_queue: Queue) -> None:
    @job_queue.task(queue="a")
    def in_a() -> str:
        return "a"

    @job_queue.task(queue="b")
    def in_b() -> str:
        return "b"

    job_queue.start_worker(["a"])
    ja, jb = in_a.delay(), in_b.delay()
    assert ja.result(timeout=10) == "a"
    job_queue.shutdown()
    assert jb.status == "pending"
    with pytest.raises(TypeError):
        job_queue.start_worker("a")  # type: ignore[arg-type]


def test_run_worker_blocks_until_shutdown(job_queue: Queue) -> None:
    @job_queue.task()
    def f(x: int) -> int:
        return x

    thread = threading.Thread(target=job_queue.run_worker)
    thread.start()
    assert f.delay(7).result(timeout=10) == 7
    job_queue.shutdown()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_shutdown_finishes_running_jobs(job_queue: Queue) -> None:
    started, release = threading.Event(), threading.Event()

    @job_queue.task()
    def slow() -> str:
        started.set()
        assert release.wait(10)
        return "finished"

    job_queue.start_worker()
    job = slow.delay()
    assert started.wait(10)
    stopper = threading.Thread(target=job_queue.shutdown, kwargs={"timeout": 10})
    stopper.start()
    release.set()
    stopper.join(timeout=15)
    assert job.result(timeout=1) == "finished"
    assert job_queue.stats()["running"] == 0


def test_run_worker_beside_a_running_worker_leaves_it_running(job_queue: Queue) -> None:
    @job_queue.task()
    def f() -> int:
        return 1

    job_queue.start_worker()
    with pytest.raises(InvalidArgumentError, match="already running"):
        job_queue.run_worker()
    assert f.delay().result(timeout=10) == 1


def test_a_queue_is_collected_after_its_worker_stops(tmp_path: Path) -> None:
    import gc
    import weakref

    q = Queue(str(tmp_path / "gc.db"))
    q.task(name="t")(lambda: 1).delay()
    q.start_worker()
    q.shutdown()
    ref = weakref.ref(q)
    del q
    gc.collect()
    assert ref() is None, "the stopped worker must not keep the Queue alive"


def test_new_database_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "private.db"
    with Queue(str(path)):
        assert path.stat().st_mode & 0o777 == 0o600


STUBBORN = """
import sys, threading
from taskito import Queue

q = Queue(":memory:", workers=1)
started = threading.Event()

@q.task()
def stubborn():
    started.set()
    while True:
        try:
            while True:
                pass
        except BaseException:
            pass  # ignores every interruption

q.start_worker()
stubborn.delay()
assert started.wait(10)
print("left behind", q.shutdown(timeout=0.2), flush=True)
q.close()
sys.exit(7)
"""


def test_a_task_that_ignores_interruption_does_not_crash_the_exit(tmp_path: Path) -> None:
    # Python < 3.14 ends threads still running Python code at shutdown with
    # pthread_exit; through Rust frames that would abort the process.
    proc = subprocess.run([sys.executable, "-c", STUBBORN], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "left behind 1"
    assert proc.returncode == 7, proc.stderr


def test_a_task_can_shut_its_own_worker_down(job_queue: Queue) -> None:
    @job_queue.task()
    def stop_everything() -> str:
        assert job_queue.shutdown(timeout=5) == 0
        return "asked"

    job_queue.start_worker()
    job = stop_everything.delay()
    assert job.result(timeout=10) == "asked"
    assert job.status == "complete"
    # The shutdown runs in the background; a second shutdown waits for it.
    assert job_queue.shutdown(timeout=10) == 0
    waiting = stop_everything.delay()
    with pytest.raises(JobTimeoutError):
        waiting.result(timeout=0.2)


def test_close_wakes_every_waiter_with_queue_closed_error(make_queue: MakeQueue) -> None:
    q = make_queue()

    @q.task()
    def never_run() -> None: ...

    job = never_run.delay()  # no worker: it stays pending
    raised: list[BaseException] = []
    waiting = threading.Barrier(3)

    def wait_sync() -> None:
        waiting.wait()
        try:
            job.result(timeout=None)
        except BaseException as exc:
            raised.append(exc)

    def wait_async() -> None:
        async def main() -> None:
            waiting.wait()
            await job.aresult(timeout=None)

        try:
            asyncio.run(main())
        except BaseException as exc:
            raised.append(exc)

    threads = [threading.Thread(target=wait_sync), threading.Thread(target=wait_async)]
    for t in threads:
        t.start()
    waiting.wait()
    q.close()
    for t in threads:
        t.join(timeout=10)
        assert not t.is_alive(), "a waiter was left blocked"
    assert len(raised) == 2 and all(isinstance(e, QueueClosedError) for e in raised), raised


def test_close_inside_a_task_closes_once_it_returned_and_keeps_its_outcome(tmp_path: Path) -> None:
    path = str(tmp_path / "jobs.db")
    with Queue(path) as reader, Queue(path, workers=1) as q:

        @q.task(name="closer")
        def closer() -> str:
            q.close()
            return "kept"

        reader.task(name="closer")(closer.fn)
        q.start_worker()
        job = reader.tasks["closer"].delay()
        assert job.result(timeout=30) == "kept"
        stopped = threading.Event()
        while not q.closed:
            assert not stopped.wait(0.01) and job.status == "complete"
        assert job.to_dict()["attempt"] == 1, "not run again"


def test_a_worker_whose_database_file_is_deleted_stops_with_an_error(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    (tmp_path / "gone.py").write_text(
        "from taskito import Queue\n"
        f"queue = Queue({str(db)!r}, lease_duration=1.0, heartbeat_interval=0.2)\n"
        "queue.task(name='t')(lambda: None)\n"
    )
    with Queue(str(db)) as watcher:
        proc = subprocess.Popen(
            [sys.executable, "-m", "taskito", "worker", "--app", "gone:queue"],
            cwd=tmp_path,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            ready = threading.Event()
            while not watcher.workers():
                assert proc.poll() is None and not ready.wait(0.01)
            db.unlink()
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 1, err
    assert "was deleted or replaced while it was open" in err
    assert "Traceback" not in err
