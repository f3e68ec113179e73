"""Serializers: what round-trips, the Queue's serializer on both sides,
values that cannot be serialized, and signed payloads."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from taskito import JsonSerializer, Queue, SerializationError, SignatureError, TaskFailedError

from .conftest import MakeQueue


def test_values_round_trip_through_pickle(job_queue: Queue) -> None:
    @job_queue.task()
    def echo(*args: Any, **kwargs: Any) -> Any:
        return args, kwargs

    @job_queue.task()
    def nothing() -> None:
        return None

    job_queue.start_worker()
    value = {"set": {1, 2}, "bytes": b"\x00", "nested": [(1, 2.5, None)]}
    assert echo.delay(value, key=Path("/x")).result(timeout=10) == ((value,), {"key": Path("/x")})
    assert nothing.delay().result(timeout=10) is None


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


def test_unpicklable_arguments_are_refused_and_nothing_is_stored(job_queue: Queue) -> None:
    @job_queue.task()
    def f(x: Any) -> None: ...

    f.delay(1)
    with pytest.raises(SerializationError, match="cannot serialize the arguments"):
        f.delay(lambda: 1)
    with pytest.raises(SerializationError):
        f.map([(1,), (threading.Lock(),)])
    with pytest.raises(TypeError, match="argument tuples"):
        f.map([1, 2])
    assert job_queue.stats()["pending"] == 1


def test_an_unserializable_result_fails_the_job_cleanly(job_queue: Queue) -> None:
    @job_queue.task(max_retries=5)
    def returns_a_lock() -> Any:
        return threading.Lock()

    job_queue.start_worker()
    job = returns_a_lock.delay()
    with pytest.raises(TaskFailedError, match="cannot serialize the task's result"):
        job.result(timeout=10)
    assert len(job.errors) == 1, "not retried: it would fail the same way"


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
