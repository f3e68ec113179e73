"""Typed errors and bad or hostile input: bad arguments and options, unknown
task names, oversized payloads, a database another SQLite holds, and the
error classes and version taskito exports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import taskito
from taskito import InvalidArgumentError, Queue, TaskFailedError, TaskitoError

from .conftest import MakeQueue


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda t: t.apply_async(args=5), TypeError),
        (lambda t: t.apply_async(kwargs=[1]), TypeError),
        (lambda t: t.apply_async(priority="high"), TypeError),
        (lambda t: t.apply_async(delay=-1), InvalidArgumentError),
        (lambda t: t.apply_async(queue=""), InvalidArgumentError),
        (lambda t: t.apply_async(max_retries=-1), InvalidArgumentError),
        (lambda t: t.apply_async(timeout=0), InvalidArgumentError),
        (lambda t: t.apply_async(bogus=1), TypeError),
    ],
)
def test_bad_enqueue_arguments_raise_typed_errors(job_queue: Queue, call: Any, error: type) -> None:
    @job_queue.task()
    def f() -> None: ...

    f.delay()
    with pytest.raises(error):
        call(f)
    assert job_queue.stats()["pending"] == 1


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"workers": -1}, InvalidArgumentError),
        ({"workers": 1.5}, TypeError),
        ({"default_retry": -2}, InvalidArgumentError),
        ({"durability": "fast"}, InvalidArgumentError),
        ({"serializer": "yaml"}, InvalidArgumentError),
        ({"serializer": object()}, TypeError),
        ({"result_ttl": 0}, InvalidArgumentError),
        ({"async_concurrency": 0}, InvalidArgumentError),
        ({"lease_duration": 1, "heartbeat_interval": 1}, InvalidArgumentError),
        ({"bogus": True}, TypeError),
    ],
)
def test_bad_queue_options_raise_typed_errors(tmp_path: Path, options: dict[str, Any], error: type) -> None:
    options.setdefault("db_path", str(tmp_path / "q.db"))
    with pytest.raises(error):
        q = Queue(**options)
        try:
            q.start_worker()
        finally:
            q.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"lease_duration": 0.5},
            "lease_duration must be at least 1s, got 0.5s: a worker renews its leases on a timer",
        ),
        (
            {"lease_duration": 3, "heartbeat_interval": 1.5},
            "heartbeat_interval (1.5s) must be at most a third of lease_duration (3s)",
        ),
    ],
)
def test_leases_too_short_to_be_safe_are_refused(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        Queue(tmp_path / "q.db", **options)
    assert str(info.value).startswith(message)
    if "heartbeat_interval" not in options:
        assert "another worker takes over its jobs and runs them a second time" in str(info.value)
    else:
        assert "at least three renewals per lease" in str(info.value)


def test_the_shortest_safe_lease_is_accepted(tmp_path: Path) -> None:
    with Queue(tmp_path / "q.db", lease_duration=1, heartbeat_interval=1 / 3) as q:
        assert (q.lease_duration, q.heartbeat_interval) == (1.0, 1 / 3)
    with Queue(tmp_path / "q.db", lease_duration=1) as q:
        assert q.heartbeat_interval == 0.2, "a fifth of the lease by default"


def test_duplicate_task_names_are_refused(job_queue: Queue) -> None:
    @job_queue.task(name="same")
    def one() -> None: ...

    with pytest.raises(InvalidArgumentError, match="already registered"):

        @job_queue.task(name="same")
        def two() -> None: ...


def test_version_is_exposed() -> None:
    assert taskito.__version__.count(".") == 2


def test_error_classes_subclass_the_matching_builtins() -> None:
    assert issubclass(taskito.JobTimeoutError, TimeoutError)
    assert issubclass(taskito.JobNotFoundError, KeyError)
    assert issubclass(taskito.UnknownTaskError, KeyError)
    assert issubclass(taskito.InvalidArgumentError, ValueError)
    assert issubclass(taskito.SerializationError, TypeError)
    assert issubclass(taskito.QueueClosedError, RuntimeError)
    assert issubclass(taskito.StorageNotFoundError, FileNotFoundError)
    assert issubclass(taskito.StoragePermissionError, PermissionError)
    for name in taskito.__all__:
        obj = getattr(taskito, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, TaskitoError)
            assert obj.__module__ == "taskito"


def test_counts_beyond_the_engines_range_are_invalid(job_queue: Queue) -> None:
    @job_queue.task()
    def f() -> None: ...

    with pytest.raises(InvalidArgumentError):
        f.apply_async(max_retries=2**40)
    with pytest.raises(InvalidArgumentError):
        job_queue.list_jobs(limit=2**40)
    assert job_queue.stats()["pending"] == 0


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


def test_unknown_task_names_wait_then_fail_without_importing_anything(
    make_queue: MakeQueue, tmp_path: Path
) -> None:
    path = str(tmp_path / "shared.db")
    producer = make_queue(db_path=path)
    worker = make_queue(db_path=path, unknown_task_grace=1.0)

    @producer.task(name="os.system")
    def not_on_the_worker(cmd: str) -> None: ...

    job = not_on_the_worker.delay("echo pwned")
    worker.start_worker()
    # No worker has the task: the job waits for one, named as waiting...
    assert worker.unserved_tasks() == {"os.system": 1}
    # ...and, no worker ever having had it, is dead-lettered after the grace.
    with pytest.raises(TaskFailedError) as info:
        job.result(timeout=10)
    assert info.value.exc_type == "UnknownTaskError"
    assert len(job.errors) == 1, "an unknown task is not retried"
    assert "os.system" in job.errors[0]["message"]


def test_an_unknown_task_from_a_script_without_a_file_gets_a_hint(
    make_queue: MakeQueue, tmp_path: Path
) -> None:
    path = str(tmp_path / "shared.db")
    producer = make_queue(db_path=path)
    worker = make_queue(db_path=path, unknown_task_grace=1.0)
    # What `python -c` or a REPL names a task: no worker can import __main__.
    job = producer.task(name="__main__.resize")(lambda: None).delay()
    worker.start_worker()
    with pytest.raises(TaskFailedError) as info:
        job.result(timeout=10)
    assert info.value.exc_type == "UnknownTaskError"
    message = job.errors[0]["message"]
    assert message.startswith('no worker has registered a task named "__main__.resize"')
    assert "pass name= to @queue.task" in message
    assert "run the producer with python -m" in message


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
