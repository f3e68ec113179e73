"""Retries, dead letters, cancellation, timeouts and hostile input, in one process."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from taskito import (
    InvalidArgumentError,
    JobCancelledError,
    JobNotFoundError,
    JobTimeoutError,
    Queue,
    SignatureError,
    TaskFailedError,
    current_job,
)

from .conftest import MakeQueue


class Transient(Exception):
    pass


class Permanent(Exception):
    pass


def test_retry_on_and_dont_retry_on_filter_exceptions(queue: Queue) -> None:
    attempts: dict[str, int] = {}

    def count(name: str) -> None:
        attempts[name] = attempts.get(name, 0) + 1

    @queue.task(max_retries=3, retry_backoff=0, retry_on=Transient)
    def only_transient(kind: str) -> None:
        count(f"only_transient:{kind}")
        raise Transient() if kind == "transient" else Permanent()

    @queue.task(max_retries=3, retry_backoff=0, dont_retry_on=[Permanent, KeyError])
    def all_but_permanent(kind: str) -> None:
        count(f"all_but_permanent:{kind}")
        raise Transient() if kind == "transient" else Permanent()

    queue.start_worker()
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
        queue.task(retry_on=[ValueError, "nope"])  # type: ignore[list-item]


def test_dead_letters_can_be_listed_retried_and_purged(queue: Queue) -> None:
    fail = threading.Event()
    fail.set()

    @queue.task(max_retries=1, retry_backoff=0, priority=3, queue="work")
    def fragile(x: int) -> int:
        if fail.is_set():
            raise RuntimeError(f"down for {x}")
        return x * 10

    queue.start_worker()
    dead = fragile.delay(4)
    other = fragile.delay(5)
    for job in (dead, other):
        with pytest.raises(TaskFailedError):
            job.result(timeout=10)
    letters = queue.dead_letters()
    assert {j.id for j in letters} == {dead.id, other.id}
    assert letters[0].to_dict()["error"] == "RuntimeError: down for 5"
    assert [e["attempt"] for e in dead.errors] == [1, 2]

    fail.clear()
    revived = queue.retry_dead(dead.id)
    assert revived.id == dead.id
    assert revived.result(timeout=10) == 40
    data = revived.to_dict()
    assert (data["priority"], data["queue"], data["attempt"]) == (3, "work", 1)
    assert len(revived.errors) == 2, "the failed attempts stay on record"

    with pytest.raises(InvalidArgumentError, match="complete, not dead"):
        queue.retry_dead(dead.id)
    with pytest.raises(JobNotFoundError):
        queue.retry_dead("00000000000000aa")
    assert queue.purge_dead(older_than=3600) == 0
    assert queue.purge_dead() == 1
    assert queue.dead_letters() == []
    assert queue.get_job(other.id) is None
    assert queue.purge_finished(older_than=3600) == 0
    assert queue.purge_finished() == 1
    assert queue.get_job(dead.id) is None
    assert queue.stats() == dict.fromkeys(queue.stats(), 0)


def test_cancel_running_job_is_seen_by_check_cancelled(queue: Queue) -> None:
    started, requested = threading.Event(), threading.Event()
    steps: list[int] = []

    @queue.task(max_retries=5)
    def long_job() -> str:
        started.set()
        assert requested.wait(10)
        for step in range(1000):
            current_job.check_cancelled()
            steps.append(step)
        return "finished anyway"

    queue.start_worker()
    job = long_job.delay()
    assert started.wait(10)
    assert queue.cancel_running_job(job.id)
    requested.set()
    with pytest.raises(JobCancelledError):
        job.result(timeout=10)
    assert job.status == "cancelled"
    assert steps == [], "stopped at the first check"
    assert not queue.cancel_running_job(job.id), "already final"
    assert not queue.cancel_running_job("00000000000000aa")


def test_cancel_running_job_on_a_pending_job_cancels_it(queue: Queue) -> None:
    @queue.task()
    def f() -> None: ...

    job = f.delay()
    assert queue.cancel_running_job(job.id)
    assert job.status == "cancelled"


def test_soft_timeout_raises_at_check_timeout(queue: Queue) -> None:
    progress: list[int] = []

    @queue.task(soft_timeout=0.05, max_retries=0)
    def chunked() -> None:
        step = 0
        while True:
            current_job.check_timeout()
            progress.append(step)
            step += 1
            # Stand-in for a unit of work: long enough that the soft timeout
            # passes after a few of them.
            threading.Event().wait(0.01)

    queue.start_worker()
    job = chunked.delay()
    with pytest.raises(TaskFailedError) as info:
        job.result(timeout=10)
    assert info.value.exc_type == "taskito.TaskTimeoutError"
    assert "soft timeout of 0.05s" in info.value.exc_message
    assert 2 <= len(progress) < 100


def test_hard_timeout_interrupts_python_code_and_frees_the_thread(make_queue: MakeQueue) -> None:
    q = make_queue(workers=1)

    @q.task(timeout=0.2, max_retries=0)
    def spin() -> None:
        while True:
            # TaskInterrupted is a BaseException: not swallowed here.
            with contextlib.suppress(Exception):
                pass

    @q.task()
    def after() -> str:
        return "ran"

    q.start_worker()
    stuck = spin.delay()
    with pytest.raises(TaskFailedError) as info:
        stuck.result(timeout=10)
    assert info.value.exc_type == "TaskTimeoutError"
    # The only executor thread was freed by the interrupt.
    assert after.delay().result(timeout=10) == "ran"


def test_a_late_result_after_a_timeout_is_discarded_and_logged(
    queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()

    @queue.task(timeout=0.1, max_retries=1, retry_backoff=0)
    def slow() -> str:
        if current_job.attempt == 1:
            # Blocked in C code, the interrupt cannot reach it; it returns late.
            release.wait(10)
            return "late"
        return "second attempt"

    caplog.set_level(logging.WARNING, logger="taskito")
    queue.start_worker(workers=2)
    job = slow.delay()
    assert job.result(timeout=10) == "second attempt"
    release.set()
    queue.shutdown()
    assert job.result(timeout=1) == "second attempt"
    messages = [r.getMessage() for r in caplog.records]
    assert any("ran past its timeout" in m for m in messages), messages
    assert any("discarded the late outcome of attempt 1" in m for m in messages), messages


def test_signed_payloads_refuse_tampering(tmp_path: Path) -> None:
    path = str(tmp_path / "signed.db")
    with Queue(path, workers=1, signing_key=b"s3cret") as good, Queue(path, signing_key="other") as forger:

        @good.task(name="greet")
        def greet(name: str) -> str:
            return f"hello {name}"

        @forger.task(name="greet")
        def forged(name: str) -> str:
            return "never runs"

        good.start_worker()
        assert greet.delay("ann").result(timeout=10) == "hello ann"
        bad = forged.delay("mallory")
        with pytest.raises(TaskFailedError) as info:
            good.get_job(bad.id).result(timeout=10)  # type: ignore[union-attr]
        assert info.value.exc_type == "taskito.SignatureError"
        assert len(bad.errors) == 1, "not retried"
        # The forger cannot read the good queue's results either.
        job = greet.delay("bob")
        job.result(timeout=10)
        with pytest.raises(SignatureError):
            forger.get_job(job.id).result(timeout=10)  # type: ignore[union-attr]
    with pytest.raises(TypeError):
        Queue(":memory:", signing_key=b"")


def test_oversized_arguments_are_refused_at_enqueue(make_queue: MakeQueue) -> None:
    q = make_queue(max_payload_size=1000)

    @q.task()
    def f(blob: Any) -> None: ...

    f.delay(b"x" * 100)
    with pytest.raises(InvalidArgumentError, match="max_payload_size"):
        f.delay(b"x" * 5000)
    with pytest.raises(InvalidArgumentError):
        f.map([(b"small",), (b"x" * 5000,)])
    assert q.stats()["pending"] == 1


def test_unknown_task_names_fail_without_importing_anything(make_queue: MakeQueue, tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    producer = make_queue(db_path=path)
    worker = make_queue(db_path=path)

    @producer.task(name="os.system")
    def not_on_the_worker(cmd: str) -> None: ...

    job = not_on_the_worker.delay("echo pwned")
    worker.start_worker()
    with pytest.raises(TaskFailedError) as info:
        job.result(timeout=10)
    assert info.value.exc_type == "UnknownTaskError"
    assert len(job.errors) == 1, "an unknown task is not retried"


def test_new_database_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "private.db"
    with Queue(str(path)):
        assert path.stat().st_mode & 0o777 == 0o600


def test_a_database_open_in_pythons_sqlite3_is_refused(tmp_path: Path) -> None:
    import sqlite3

    from taskito import ForeignSQLiteError, StorageError

    path = tmp_path / "shared.db"
    with Queue(str(path)) as q:
        q.task(name="t")(lambda: None).delay()
    other = sqlite3.connect(path)
    try:
        other.execute("SELECT 1").fetchone()
        with pytest.raises(ForeignSQLiteError, match="sqlite3") as info:
            Queue(str(path))
        assert isinstance(info.value, StorageError)
    finally:
        other.close()
    with Queue(str(path)) as q:
        assert q.stats()["pending"] == 1, "nothing lost, and usable once the other library let go"


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


def test_a_task_can_shut_its_own_worker_down(queue: Queue) -> None:
    @queue.task()
    def stop_everything() -> str:
        assert queue.shutdown(timeout=5) == 0
        return "asked"

    queue.start_worker()
    job = stop_everything.delay()
    assert job.result(timeout=10) == "asked"
    assert job.status == "complete"
    # The shutdown runs in the background; a second shutdown waits for it.
    assert queue.shutdown(timeout=10) == 0
    waiting = stop_everything.delay()
    with pytest.raises(JobTimeoutError):
        waiting.result(timeout=0.2)


def test_a_serializer_returning_text_fails_the_job_without_retrying(make_queue: MakeQueue) -> None:
    class Textual:
        def dumps(self, obj: Any) -> bytes:
            import pickle

            return pickle.dumps(obj) if isinstance(obj, tuple) else "not bytes"  # type: ignore[return-value]

        def loads(self, data: bytes) -> Any:
            import pickle

            return pickle.loads(data)

    q = make_queue(serializer=Textual())

    @q.task(max_retries=3)
    def f() -> int:
        return 1

    q.start_worker()
    job = f.delay()
    with pytest.raises(TaskFailedError, match="not bytes"):
        job.result(timeout=10)
    assert len(job.errors) == 1
