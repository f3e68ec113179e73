"""The parts of ``taskito._native`` that callers other than ``Queue`` rely on:
the outcome tags of the ``execute`` protocol and what a bad one does, and the
map of running tasks to their threads, which the pytest plugin reads."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from taskito import Queue, _native
from taskito._native import NativeQueue

Execute = Callable[[str, bytes, str, int, int, str], Any]


@pytest.fixture
def native() -> Iterator[NativeQueue]:
    engine = NativeQueue(":memory:")
    yield engine
    engine.close(5.0)


def _ignore_event(
    kind: str,
    job_id: str | None,
    task: str | None,
    attempt: int | None,
    message: str,
    error: tuple[str, str, str] | None,
) -> None:
    pass


def start(native: NativeQueue, execute: Execute) -> None:
    """Starts a one-thread worker the way ``Queue.start_worker`` does."""
    native.start_worker(execute, _ignore_event, 1, None, 10.0, 2.0, 32, None, None, None, None, False)


def enqueue(native: NativeQueue, max_retries: int = 3) -> str:
    [job_id] = native.enqueue("task", "default", [b"payload"], 0, None, max_retries, 0.0, None)
    return job_id


def finish(native: NativeQueue, job_id: str) -> tuple[str, bytes | None, dict[str, Any] | None]:
    return native.wait(job_id, 10.0, 0.001, 0.05)


def test_outcome_tags_are_exported_under_the_engine_variants_names() -> None:
    assert (_native.OUTCOME_SUCCESS, _native.OUTCOME_FAILURE, _native.OUTCOME_CANCELLED) == (0, 1, 2)


@pytest.mark.parametrize(
    ("returned", "status", "result"),
    [
        ((_native.OUTCOME_SUCCESS, b"done"), "complete", b"done"),
        ((_native.OUTCOME_CANCELLED, "stopped on request"), "cancelled", None),
    ],
)
def test_each_tag_gives_its_outcome(
    native: NativeQueue, returned: tuple[int, Any], status: str, result: bytes | None
) -> None:
    start(native, lambda *args: returned)
    assert finish(native, enqueue(native))[:2] == (status, result)


def test_a_failure_keeps_the_error_it_reports(native: NativeQueue) -> None:
    start(native, lambda *args: (_native.OUTCOME_FAILURE, ("ValueError", "bad input", "trace", False)))
    status, _, error = finish(native, enqueue(native))
    assert status == "dead"
    assert error is not None
    assert (error["type"], error["message"], error["traceback"]) == ("ValueError", "bad input", "trace")


@pytest.mark.parametrize(
    ("returned", "named"),
    [
        ((7, b"done"), "unknown tag 7"),
        ((-1, b"done"), "unknown tag -1"),
        ((True, b"done"), "unknown tag True"),
        (("0", b"done"), "unknown tag '0'"),
        (None, "execute returned None"),
        ((_native.OUTCOME_SUCCESS, "done"), "OUTCOME_SUCCESS with 'done'"),
        ((_native.OUTCOME_FAILURE, ("ValueError", "bad")), "OUTCOME_FAILURE with ('ValueError', 'bad')"),
    ],
)
def test_a_return_value_outside_the_protocol_fails_the_attempt_for_good(
    native: NativeQueue, returned: object, named: str
) -> None:
    attempts: list[int] = []

    def execute(
        task: str, payload: bytes, job_id: str, attempt: int, retries: int, queue: str, fed: object
    ) -> object:
        attempts.append(attempt)
        return returned

    start(native, execute)
    job_id = enqueue(native, max_retries=3)
    status, result, error = finish(native, job_id)
    assert (status, result) == ("dead", None)
    assert error is not None
    assert error["type"] == "InvalidArgumentError"
    assert named in error["message"]
    # A bug in the caller, not in the task: retrying cannot help.
    assert attempts == [1]


def test_running_tasks_maps_each_running_job_to_its_thread(job_queue: Queue) -> None:
    started, release = threading.Event(), threading.Event()
    idents: list[int] = []

    @job_queue.task()
    def blocked() -> str:
        idents.append(threading.get_ident())
        started.set()
        release.wait(10)
        return "done"

    assert job_queue._engine.running_tasks() == {}
    job_queue.start_worker(workers=2)
    job = blocked.delay()
    assert started.wait(10)
    assert job_queue._engine.running_tasks() == {job.id: idents[0]}
    release.set()
    assert job.result(timeout=10) == "done"
    assert job_queue._engine.running_tasks() == {}
    job_queue.shutdown()
    assert job_queue._engine.running_tasks() == {}
