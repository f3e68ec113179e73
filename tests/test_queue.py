"""The Python API end to end, through the real engine, on :memory: and on a file."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import pytest

import taskito
from taskito import (
    InvalidArgumentError,
    JobCancelledError,
    JobNotFoundError,
    JobTimeoutError,
    JsonSerializer,
    Queue,
    QueueClosedError,
    SerializationError,
    TaskFailedError,
    TaskitoError,
    UnknownTaskError,
    current_job,
)

from .conftest import MakeQueue


def test_delay_runs_the_task_and_returns_its_value(queue: Queue) -> None:
    @queue.task()
    def add(a: int, b: int) -> int:
        return a + b

    queue.start_worker()
    job = add.delay(2, 3)
    assert job.result(timeout=10) == 5
    assert job.status == "complete"
    assert add(1, 1) == 2, "a task stays callable directly"
    assert add.name == f"{__name__}.test_delay_runs_the_task_and_returns_its_value.<locals>.add"


def test_values_round_trip_through_pickle(queue: Queue) -> None:
    @queue.task()
    def echo(*args: Any, **kwargs: Any) -> Any:
        return args, kwargs

    @queue.task()
    def nothing() -> None:
        return None

    queue.start_worker()
    value = {"set": {1, 2}, "bytes": b"\x00", "nested": [(1, 2.5, None)]}
    assert echo.delay(value, key=Path("/x")).result(timeout=10) == ((value,), {"key": Path("/x")})
    assert nothing.delay().result(timeout=10) is None


def test_map_enqueues_in_order_and_returns_every_job(queue: Queue) -> None:
    @queue.task()
    def square(x: int) -> int:
        return x * x

    jobs = square.map([(i,) for i in range(500)])
    assert len(jobs) == 500
    assert jobs == sorted(jobs, key=lambda j: j.id), "ids are time-ordered strings"
    assert queue.stats()["pending"] == 500
    queue.start_worker()
    assert [j.result(timeout=10) for j in jobs] == [i * i for i in range(500)]
    assert square.map([]) == []


def test_apply_async_options_and_list_args(queue: Queue) -> None:
    @queue.task(queue="low", priority=1, max_retries=7, timeout=9)
    def f(x: int) -> int:
        return x

    job = f.apply_async(args=[4], priority=5, queue="high", max_retries=2, timeout=3)
    data = job.to_dict()
    assert (data["queue"], data["priority"], data["max_retries"], data["timeout"]) == ("high", 5, 2, 3.0)
    default = f.delay(1).to_dict()
    assert (default["queue"], default["priority"], default["max_retries"]) == ("low", 1, 7)
    queue.start_worker(["high"])
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


def test_delay_holds_a_job_back(queue: Queue) -> None:
    @queue.task()
    def f() -> str:
        return "done"

    queue.start_worker()
    job = f.apply_async(delay=0.2)
    assert job.status == "pending"
    with pytest.raises(JobTimeoutError):
        job.result(timeout=0.05)
    assert job.result(timeout=10) == "done"
    data = job.to_dict()
    assert data["started_at"] - data["created_at"] >= 0.19


def test_enqueue_by_name(queue: Queue) -> None:
    @queue.task(name="math.double")
    def double(x: int) -> int:
        return 2 * x

    queue.start_worker()
    assert queue.enqueue("math.double", args=(21,)).result(timeout=10) == 42
    assert queue.enqueue("math.double", kwargs={"x": 4}, priority=3).result(timeout=10) == 8
    with pytest.raises(UnknownTaskError, match="nope") as info:
        queue.enqueue("nope")
    assert isinstance(info.value, KeyError)
    assert "'" not in str(info.value)[:3], "reads as a sentence, not a quoted KeyError"


def test_tasks_registered_after_the_worker_started_still_run(queue: Queue) -> None:
    queue.start_worker()

    @queue.task()
    def late() -> str:
        return "late"

    assert late.delay().result(timeout=10) == "late"


def test_failures_retry_with_backoff_then_raise_with_the_traceback(queue: Queue) -> None:
    attempts: list[int] = []

    @queue.task(max_retries=2, retry_backoff=0.01)
    def flaky() -> None:
        attempts.append(current_job.attempt)
        raise ValueError(f"bad attempt {current_job.attempt}")

    queue.start_worker()
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


def test_a_task_that_succeeds_on_retry_completes(queue: Queue) -> None:
    @queue.task(max_retries=3, retry_backoff=0)
    def second_time_lucky() -> int:
        if current_job.attempt == 1:
            raise RuntimeError("first")
        return current_job.attempt

    queue.start_worker()
    job = second_time_lucky.delay()
    assert job.result(timeout=10) == 2
    assert job.error == "RuntimeError: first"


def test_result_times_out_with_a_timeout_error(queue: Queue) -> None:
    @queue.task()
    def never_run() -> None: ...

    job = never_run.delay()
    with pytest.raises(JobTimeoutError) as info:
        job.result(timeout=0.05, poll_interval=0.01)
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, TaskitoError)


def test_cancelled_jobs_raise_at_once(queue: Queue) -> None:
    @queue.task()
    def f() -> None: ...

    job = f.delay()
    assert queue.cancel_job(job.id)
    assert not queue.cancel_job(job.id)
    assert job.status == "cancelled"
    with pytest.raises(JobCancelledError):
        job.result(timeout=5)


def test_stats_get_job_and_list_jobs(queue: Queue) -> None:
    @queue.task()
    def a() -> None: ...

    @queue.task(queue="other")
    def b() -> None: ...

    ja = [a.delay() for _ in range(3)]
    jb = b.delay()
    assert queue.stats() == {
        "pending": 4,
        "running": 0,
        "completed": 0,
        "failed": 0,
        "dead": 0,
        "cancelled": 0,
    }
    got = queue.get_job(ja[0].id)
    assert got is not None and got.id == ja[0].id and got.task_name == a.name
    assert queue.get_job("0000000000000001") is None
    assert queue.get_job("not-an-id") is None
    assert [j.id for j in queue.list_jobs()] == [jb.id] + [j.id for j in reversed(ja)]
    assert [j.id for j in queue.list_jobs(queue="other")] == [jb.id]
    assert [j.id for j in queue.list_jobs(task_name=a.name, limit=1, offset=1)] == [ja[1].id]
    assert queue.list_jobs(status="complete") == []
    with pytest.raises(InvalidArgumentError):
        queue.list_jobs(status="done")
    queue.start_worker()
    jb.result(timeout=10)
    assert [j.id for j in queue.list_jobs(status="complete", queue="other")] == [jb.id]


def test_job_result_snapshot_and_refresh(queue: Queue) -> None:
    @queue.task()
    def f() -> int:
        return 1

    job = f.delay()
    data = job.to_dict()
    assert data["id"] == job.id
    assert data["status"] == "pending"
    assert data["attempt"] == 0
    assert data["created_at"] <= data["scheduled_at"]
    queue.start_worker()
    job.result(timeout=10)
    assert job.refresh() is job
    assert job.to_dict()["status"] == "complete"
    assert job.to_dict()["attempt"] == 1
    assert "JobResult" in repr(job)
    with pytest.raises(JobNotFoundError):
        taskito.JobResult(queue, "00000000000000ff").refresh()


def test_aresult_waits_without_blocking_the_loop(queue: Queue) -> None:
    gate = threading.Event()

    @queue.task()
    def slow(x: int) -> int:
        assert gate.wait(10)
        return x + 1

    queue.start_worker()

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
        @queue.task()
        def never() -> None: ...

        queue.shutdown()
        await never.delay().aresult(timeout=0.05, poll_interval=0.01)

    with pytest.raises(JobTimeoutError):
        asyncio.run(timeout())


def test_async_task_functions_are_awaited(queue: Queue) -> None:
    @queue.task()
    async def coro(x: int) -> int:
        await asyncio.sleep(0)
        return x * 3

    queue.start_worker()
    assert coro.delay(3).result(timeout=10) == 9


def test_the_worker_decodes_with_the_queue_serializer(make_queue: MakeQueue) -> None:
    q = make_queue(serializer=JsonSerializer())

    @q.task()
    def kinds(x: Any) -> str:
        return type(x).__name__

    q.start_worker()
    # JSON turns the tuple into a list on the way: proof the worker used JSON.
    assert kinds.delay((1, 2)).result(timeout=10) == "list"
    with pytest.raises(SerializationError):
        kinds.delay({1, 2})
    # On a file both queues share the database: only q2's worker may run now.
    q.shutdown()

    class Upper:
        def dumps(self, obj: Any) -> bytes:
            return repr(obj).upper().encode()

        def loads(self, data: bytes) -> Any:
            import ast

            return ast.literal_eval(data.decode())

    q2 = make_queue(serializer=Upper())

    @q2.task(name="t")
    def t(s: str) -> str:
        return s

    q2.start_worker()
    assert t.delay("abc").result(timeout=10) == "ABC"


def test_unpicklable_arguments_are_refused_and_nothing_is_stored(queue: Queue) -> None:
    @queue.task()
    def f(x: Any) -> None: ...

    f.delay(1)
    with pytest.raises(SerializationError, match="cannot serialize the arguments"):
        f.delay(lambda: 1)
    with pytest.raises(SerializationError):
        f.map([(1,), (threading.Lock(),)])
    with pytest.raises(TypeError, match="argument tuples"):
        f.map([1, 2])
    assert queue.stats()["pending"] == 1


def test_an_unserializable_result_fails_the_job_cleanly(queue: Queue) -> None:
    @queue.task(max_retries=5)
    def returns_a_lock() -> Any:
        return threading.Lock()

    queue.start_worker()
    job = returns_a_lock.delay()
    with pytest.raises(TaskFailedError, match="cannot serialize the task's result"):
        job.result(timeout=10)
    assert len(job.errors) == 1, "not retried: it would fail the same way"


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
def test_bad_enqueue_arguments_raise_typed_errors(queue: Queue, call: Any, error: type) -> None:
    @queue.task()
    def f() -> None: ...

    f.delay()
    with pytest.raises(error):
        call(f)
    assert queue.stats()["pending"] == 1


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


def test_workers_zero_means_the_cpu_count(tmp_path: Path) -> None:
    with Queue(str(tmp_path / "q.db"), workers=0) as q:
        assert q.workers == (os.cpu_count() or 1)


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


def test_duplicate_task_names_are_refused(queue: Queue) -> None:
    @queue.task(name="same")
    def one() -> None: ...

    with pytest.raises(InvalidArgumentError, match="already registered"):

        @queue.task(name="same")
        def two() -> None: ...


def test_only_one_worker_per_queue(queue: Queue) -> None:
    queue.start_worker()
    with pytest.raises(InvalidArgumentError, match="already running"):
        queue.start_worker()
    queue.shutdown()
    queue.start_worker()


def test_a_worker_serves_only_the_queues_it_is_given(queue: Queue) -> None:
    @queue.task(queue="a")
    def in_a() -> str:
        return "a"

    @queue.task(queue="b")
    def in_b() -> str:
        return "b"

    queue.start_worker(["a"])
    ja, jb = in_a.delay(), in_b.delay()
    assert ja.result(timeout=10) == "a"
    queue.shutdown()
    assert jb.status == "pending"
    with pytest.raises(TypeError):
        queue.start_worker("a")  # type: ignore[arg-type]


def test_run_worker_blocks_until_shutdown(queue: Queue) -> None:
    @queue.task()
    def f(x: int) -> int:
        return x

    thread = threading.Thread(target=queue.run_worker)
    thread.start()
    assert f.delay(7).result(timeout=10) == 7
    queue.shutdown()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_shutdown_finishes_running_jobs(queue: Queue) -> None:
    started, release = threading.Event(), threading.Event()

    @queue.task()
    def slow() -> str:
        started.set()
        assert release.wait(10)
        return "finished"

    queue.start_worker()
    job = slow.delay()
    assert started.wait(10)
    stopper = threading.Thread(target=queue.shutdown, kwargs={"timeout": 10})
    stopper.start()
    release.set()
    stopper.join(timeout=15)
    assert job.result(timeout=1) == "finished"
    assert queue.stats()["running"] == 0


def test_current_job_describes_the_running_job(queue: Queue) -> None:
    @queue.task(queue="ctx", max_retries=4)
    def who() -> tuple[str, str, str, int, int]:
        return (
            current_job.id,
            current_job.task_name,
            current_job.queue,
            current_job.attempt,
            current_job.max_retries,
        )

    queue.start_worker()
    job = who.delay()
    assert job.result(timeout=10) == (job.id, who.name, "ctx", 1, 4)
    assert not current_job.active
    with pytest.raises(RuntimeError):
        current_job.id  # noqa: B018


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


def _in_child(body: Any) -> int:
    """Runs `body` in a forked child; returns its exit code (0: returned True)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            code = 0 if body() else 1
        except BaseException:
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_file_queue_reopens_in_a_forked_child(tmp_path: Path) -> None:
    with Queue(str(tmp_path / "fork.db")) as q:

        @q.task(name="t")
        def t() -> None: ...

        t.delay()

        def child() -> bool:
            t.delay()
            return q.stats()["pending"] == 2

        assert _in_child(child) == 0
        assert q.stats()["pending"] == 2, "the parent's connection still works"


def test_a_memory_queue_refuses_to_follow_a_fork() -> None:
    with Queue(":memory:") as q:

        def child() -> bool:
            try:
                q.stats()
            except QueueClosedError as exc:
                return "fork" in str(exc)
            return False

        assert _in_child(child) == 0
        assert q.stats()["pending"] == 0


def test_run_worker_beside_a_running_worker_leaves_it_running(queue: Queue) -> None:
    @queue.task()
    def f() -> int:
        return 1

    queue.start_worker()
    with pytest.raises(InvalidArgumentError, match="already running"):
        queue.run_worker()
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


def test_counts_beyond_the_engines_range_are_invalid(queue: Queue) -> None:
    @queue.task()
    def f() -> None: ...

    with pytest.raises(InvalidArgumentError):
        f.apply_async(max_retries=2**40)
    with pytest.raises(InvalidArgumentError):
        queue.list_jobs(limit=2**40)
    assert queue.stats()["pending"] == 0


def test_a_forked_child_leaves_the_parents_worker_alone(tmp_path: Path) -> None:
    with Queue(str(tmp_path / "forkw.db"), workers=1) as q:

        @q.task(name="t")
        def t() -> int:
            return 2

        q.start_worker()
        assert t.delay().result(timeout=10) == 2

        def child() -> bool:
            # Closing in the child must neither stop the parent's threads
            # (which do not exist here) nor close the parent's connections.
            q.close()
            return True

        assert _in_child(child) == 0
        assert t.delay().result(timeout=10) == 2, "the parent's worker still runs"
