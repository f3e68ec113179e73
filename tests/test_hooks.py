"""Hooks and middleware: their order, global and per task, a hook that
raises, on_retry and on_dead following what storage decided, thread and
coroutine tasks."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest

from taskito import TaskFailedError, TaskMiddleware
from taskito.context import JobContext
from tests.conftest import MakeQueue


class Recorder(TaskMiddleware):
    """Middleware that writes what it sees to a shared list."""

    def __init__(self, name: str, seen: list[Any]) -> None:
        self.name = name
        self.seen = seen

    def before(self, ctx: JobContext) -> None:
        self.seen.append((self.name, "before", ctx.task_name, ctx.attempt))

    def after(self, ctx: JobContext, result: Any, error: BaseException | None) -> None:
        self.seen.append((self.name, "after", result, type(error).__name__ if error else None))

    def on_retry(self, ctx: JobContext, error: BaseException, attempt: int) -> None:
        self.seen.append((self.name, "on_retry", type(error).__name__, attempt))

    def on_dead_letter(self, ctx: JobContext, error: BaseException) -> None:
        self.seen.append((self.name, "on_dead_letter", type(error).__name__))


def hooks_into(queue: Any, seen: list[Any]) -> None:
    @queue.before_task
    def before(task: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        seen.append(("hook", "before_task", task, args))

    @queue.on_success
    def success(task: str, args: Any, kwargs: Any, result: Any) -> None:
        seen.append(("hook", "on_success", result))

    @queue.on_failure
    def failure(task: str, args: Any, kwargs: Any, error: BaseException) -> None:
        seen.append(("hook", "on_failure", type(error).__name__))

    @queue.after_task
    def after(task: str, args: Any, kwargs: Any, result: Any, error: BaseException | None) -> None:
        seen.append(("hook", "after_task", result, type(error).__name__ if error else None))

    @queue.on_retry
    def retry(task: str, args: Any, kwargs: Any, error: BaseException, attempt: int) -> None:
        seen.append(("hook", "on_retry", args, type(error).__name__, attempt))

    @queue.on_dead
    def dead(task: str, args: Any, kwargs: Any, error: BaseException) -> None:
        seen.append(("hook", "on_dead", args, type(error).__name__))


def test_hooks_and_middleware_run_in_registration_order(make_queue: MakeQueue) -> None:
    seen: list[Any] = []
    queue = make_queue(middleware=[Recorder("global-1", seen), Recorder("global-2", seen)])
    hooks_into(queue, seen)

    @queue.task(name="add", middleware=[Recorder("task", seen)])
    def add(a: int, b: int) -> int:
        seen.append(("task", "ran"))
        return a + b

    queue.start_worker()
    assert add.delay(2, 3).result(timeout=10) == 5
    assert seen == [
        ("global-1", "before", "add", 1),
        ("global-2", "before", "add", 1),
        ("task", "before", "add", 1),
        ("hook", "before_task", "add", (2, 3)),
        ("task", "ran"),
        ("hook", "on_success", 5),
        ("hook", "after_task", 5, None),
        ("global-1", "after", 5, None),
        ("global-2", "after", 5, None),
        ("task", "after", 5, None),
    ]


def test_per_task_middleware_stays_with_its_task(make_queue: MakeQueue) -> None:
    seen: list[Any] = []
    queue = make_queue()

    @queue.task(name="watched", middleware=[Recorder("watched", seen)])
    def watched() -> str:
        return "w"

    @queue.task(name="plain")
    def plain() -> str:
        return "p"

    queue.start_worker()
    assert plain.delay().result(timeout=10) == "p"
    assert watched.delay().result(timeout=10) == "w"
    assert [entry[0] for entry in seen] == ["watched", "watched"]


def test_retries_and_the_dead_letter_are_told_once_each_after_storage_decides(make_queue: MakeQueue) -> None:
    seen: list[Any] = []
    queue = make_queue(middleware=[Recorder("mw", seen)])
    hooks_into(queue, seen)
    dead = threading.Event()
    queue.on_dead(lambda *args: dead.set())

    @queue.task(name="flaky", max_retries=2, retry_backoff=0)
    def flaky(n: int) -> None:
        raise ValueError(f"boom {n}")

    queue.start_worker()
    job = flaky.delay(7)
    with pytest.raises(TaskFailedError):
        job.result(timeout=20)
    assert dead.wait(10), "on_dead never ran"
    retries = [e for e in seen if e[1] == "on_retry"]
    assert retries == [
        ("mw", "on_retry", "ValueError", 1),
        ("hook", "on_retry", (7,), "ValueError", 1),
        ("mw", "on_retry", "ValueError", 2),
        ("hook", "on_retry", (7,), "ValueError", 2),
    ]
    assert [e for e in seen if e[1] in ("on_dead", "on_dead_letter")] == [
        ("mw", "on_dead_letter", "ValueError"),
        ("hook", "on_dead", (7,), "ValueError"),
    ]
    assert [e[1] for e in seen].count("on_failure") == 3, "one per attempt"


def test_a_raising_hook_is_logged_and_changes_nothing(
    make_queue: MakeQueue, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(TaskMiddleware):
        def before(self, ctx: JobContext) -> None:
            raise RuntimeError("middleware broke")

        def after(self, ctx: JobContext, result: Any, error: BaseException | None) -> None:
            raise AssertionError("after() runs only when before() returned")

    queue = make_queue(middleware=[Broken()])
    ran_after = threading.Event()

    @queue.before_task
    def broken(task: str, args: Any, kwargs: Any) -> None:
        raise KeyError("hook broke")

    @queue.on_retry
    def broken_retry(*args: Any) -> None:
        raise ValueError("retry hook broke")

    @queue.after_task
    def fine(*args: Any) -> None:
        ran_after.set()

    attempts: list[int] = []

    @queue.task(name="works", max_retries=1, retry_backoff=0)
    def works() -> str:
        from taskito import current_job

        attempts.append(current_job.attempt)
        if current_job.attempt == 1:
            raise ValueError("first attempt fails")
        return "stored as returned"

    with caplog.at_level(logging.ERROR, logger="taskito.hooks"):
        queue.start_worker()
        job = works.delay()
        assert job.result(timeout=20) == "stored as returned"
        queue.shutdown()
    assert ran_after.is_set()
    assert attempts == [1, 2]
    assert job.status == "complete"
    records = [r for r in caplog.records if r.name == "taskito.hooks"]
    messages = "\n".join(r.getMessage() for r in records)
    assert "before hook" in messages and "before_task hook" in messages and "on_retry hook" in messages
    assert all(r.exc_info for r in records), "logged with the traceback"
    assert any(
        "hook broke" in "".join(logging.Formatter().formatException(r.exc_info))
        for r in records
        if r.exc_info
    )


def test_coroutine_tasks_run_between_their_hooks(make_queue: MakeQueue) -> None:
    seen: list[Any] = []
    queue = make_queue(middleware=[Recorder("mw", seen)])
    hooks_into(queue, seen)

    @queue.task(name="fetch")
    async def fetch(url: str) -> str:
        await asyncio.sleep(0)
        seen.append(("task", "ran"))
        return f"got {url}"

    queue.start_worker()
    assert fetch.delay("x").result(timeout=10) == "got x"
    assert seen == [
        ("mw", "before", "fetch", 1),
        ("hook", "before_task", "fetch", ("x",)),
        ("task", "ran"),
        ("hook", "on_success", "got x"),
        ("hook", "after_task", "got x", None),
        ("mw", "after", "got x", None),
    ]


def test_hook_arguments_are_checked_at_registration(make_queue: MakeQueue) -> None:
    queue = make_queue()
    with pytest.raises(TypeError):
        queue.on_retry(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        queue.task(middleware=[object()])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        make_queue(middleware=Recorder("not a list", []))  # type: ignore[arg-type]
