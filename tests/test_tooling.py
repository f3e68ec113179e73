"""The API for tests, tooling and plugins: Queue.redirect, Queue.running_tasks
and Queue.settings."""

from __future__ import annotations

import inspect
import sys
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskito import JsonSerializer, Queue, SerializationError, TaskFailedError, current_job

from .conftest import MakeQueue


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Queue]:
    """An application's queue, on a database of its own."""
    with Queue(tmp_path / "app.db", workers=1, default_retry=5) as queue:
        yield queue


def test_redirect_sends_enqueues_and_reads_to_the_target(app: Queue, make_queue: MakeQueue) -> None:
    target = make_queue(default_retry=1, default_timeout=9, default_priority=2)

    @app.task(name="double")
    def double(x: int) -> int:
        return 2 * x

    @app.task(name="boom", max_retries=0)
    def boom() -> None:
        raise ValueError("boom")

    for task in (double, boom):
        target.task(**task.options)(task.fn)
    home = app.db_path
    with app.redirect(target):
        assert (app.db_path, app.default_retry, app.default_timeout, app.default_priority) == (
            target.db_path,
            1,
            9,
            2,
        )
        jobs = [double.delay(1), double.apply_async((2,)), *double.map([(3,)]), app.enqueue("double", (4,))]
        assert jobs[0].to_dict()["max_retries"] == 1, "the target's defaults"
        assert app.stats() == target.stats() and target.stats()["pending"] == 4
        assert app.get_job(jobs[0].id) == jobs[0]
        assert [job.id for job in app.list_jobs()] == [job.id for job in reversed(jobs)]
        assert app.cancel_job(jobs[3].id)
        dead = boom.delay()
        target.start_worker()
        assert [job.result(timeout=10) for job in jobs[:3]] == [2, 4, 6]
        with pytest.raises(TaskFailedError):
            dead.result(timeout=10)
        assert app.dead_letters() == [dead]
        assert app.purge_dead() == 1
    assert (app.db_path, app.default_retry) == (home, 5)
    assert sum(app.stats().values()) == 0, "nothing reached the app's own database"
    assert jobs[0].result(timeout=0) == 2, "a JobResult keeps reading the target's database"
    assert target.stats()["completed"] == 3


def test_redirect_uses_the_targets_serializer(app: Queue, make_queue: MakeQueue) -> None:
    target = make_queue(serializer=JsonSerializer())

    @app.task(name="kinds")
    def kinds(x: Any) -> str:
        return type(x).__name__

    target.task(name="kinds")(kinds.fn)
    target.start_worker()
    with app.redirect(target):
        # JSON turns the tuple into a list on the way, and cannot take a set.
        assert kinds.delay((1, 2)).result(timeout=10) == "list"
        with pytest.raises(SerializationError):
            kinds.delay({1})
    assert app.settings["serializer"] is not target.settings["serializer"]


def test_redirects_nest_and_restore_on_exceptions(app: Queue, make_queue: MakeQueue, tmp_path: Path) -> None:
    outer = make_queue(default_retry=1)
    inner = make_queue(db_path=str(tmp_path / "inner.db"), default_retry=2)
    home = app.settings
    with pytest.raises(RuntimeError, match="on purpose"), app.redirect(outer):
        with app.redirect(inner):
            assert (app.db_path, app.default_retry) == (inner.db_path, 2)
            with app.redirect(app):  # onto where it points now: no change
                assert (app.db_path, app.default_retry) == (inner.db_path, 2)
            assert (app.db_path, app.default_retry) == (inner.db_path, 2)
        assert (app.db_path, app.default_retry) == (outer.db_path, 1)
        raise RuntimeError("on purpose")
    assert app.settings == home


def test_redirect_follows_a_redirected_target_as_of_entry(
    app: Queue, make_queue: MakeQueue, tmp_path: Path
) -> None:
    middle = Queue(tmp_path / "middle.db")
    final = make_queue()
    try:
        with middle.redirect(final), app.redirect(middle):
            assert app.db_path == final.db_path
        assert app.db_path != final.db_path
    finally:
        middle.close()


def test_redirect_takes_only_a_queue(app: Queue) -> None:
    with pytest.raises(TypeError, match=r"takes a taskito\.Queue"), app.redirect("other.db"):  # type: ignore[arg-type]
        pass
    assert app.db_path.endswith("app.db")


def test_running_tasks_names_each_running_job_and_its_thread(job_queue: Queue) -> None:
    started, release = threading.Event(), threading.Event()
    idents: dict[str, int] = {}

    @job_queue.task()
    def hold(label: str) -> str:
        idents[current_job.id] = threading.get_ident()
        started.set()
        assert release.wait(10)
        return label

    assert job_queue.running_tasks() == {}, "no worker"
    job_queue.start_worker(workers=1)
    job = hold.delay("a")
    assert started.wait(10)
    running = job_queue.running_tasks()
    assert running == {job.id: idents[job.id]}
    top = sys._current_frames()[running[job.id]]
    assert "hold" in {frame.f_code.co_name for frame, _ in traceback.walk_stack(top)}
    release.set()
    assert job.result(timeout=10) == "a"
    job_queue.shutdown()
    assert job_queue.running_tasks() == {}


def test_settings_name_every_constructor_parameter_but_the_signing_key(tmp_path: Path) -> None:
    parameters = [name for name in inspect.signature(Queue.__init__).parameters if name != "self"]
    with Queue(tmp_path / "q.db", workers=3, default_timeout=None, signing_key="k") as queue:
        settings = queue.settings
        assert list(settings) == [name for name in parameters if name != "signing_key"]
        assert (settings["db_path"], settings["workers"], settings["default_timeout"]) == (
            str(tmp_path / "q.db"),
            3,
            None,
        )
        settings["workers"] = 99
        assert queue.settings["workers"] == 3, "a copy"
        # Like this one: the signing serializer carries the key over.
        with Queue(**queue.settings) as twin:
            twin.task(name="t")(lambda: "signed")
            twin.start_worker()
            assert twin.enqueue("t").result(timeout=10) == "signed"
            assert twin.settings == queue.settings
