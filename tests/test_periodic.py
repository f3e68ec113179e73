"""Periodic tasks in one process: what @queue.periodic accepts and refuses,
periodic_tasks(), and ticks run by a worker at their time."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from taskito import InvalidArgumentError, current_job
from tests.conftest import MakeQueue


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"cron": "every minute"}, "cron"),
        ({"cron": "* * * *"}, "cron"),
        ({"cron": "60 * * * *"}, "cron"),
        ({"cron": "0 0 30 2 *"}, "cron"),
        ({"cron": 5}, "cron"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "timezone"),
        ({"cron": "* * * * *", "timezone": None}, "timezone"),
        ({"cron": "* * * * *", "catch_up": "some"}, "catch_up"),
        ({"cron": "* * * * *", "args": 3}, "args"),
        ({"cron": "* * * * *", "kwargs": {1: 2}}, "kwargs"),
        ({"cron": "* * * * *", "name": ""}, "name"),
        ({"cron": "* * * * *", "queue": ""}, "queue"),
        ({"cron": "* * * * *", "args": (threading.Lock(),)}, "args"),
    ],
)
def test_bad_schedules_raise_at_decoration_naming_the_field(
    make_queue: MakeQueue, arguments: dict[str, Any], field: str
) -> None:
    queue = make_queue()
    with pytest.raises(InvalidArgumentError, match=f"^{field}|{field}"):
        queue.periodic(**arguments)(lambda: None)
    assert queue.periodic_tasks() == []
    assert all(not name.endswith("<lambda>") for name in queue.tasks)


def test_schedules_are_listed_with_their_next_run(make_queue: MakeQueue) -> None:
    queue = make_queue()

    @queue.periodic(cron="*/5 * * * *", args=(1,), kwargs={"b": 2}, timezone="Europe/Paris")
    def report(a: int, b: int) -> int:
        return a + b

    @queue.task(name="cleanup", max_retries=0, queue="maintenance")
    def cleanup() -> None:
        pass

    queue.periodic(cron="0 30 2 * * *", name="nightly-cleanup", queue="maintenance", catch_up="none")(cleanup)
    listed = {row["name"]: row for row in queue.periodic_tasks()}
    assert set(listed) == {report.name, "nightly-cleanup"}
    row = listed[report.name]
    assert (row["cron"], row["timezone"], row["args"], row["kwargs"]) == (
        "*/5 * * * *",
        "Europe/Paris",
        (1,),
        {"b": 2},
    )
    assert row["next_run"] % 300 == 0 and row["registered"] is False and row["last_run"] is None
    nightly = listed["nightly-cleanup"]
    assert (nightly["task_name"], nightly["catch_up"], nightly["queue"]) == ("cleanup", "none", "maintenance")
    assert queue.tasks["cleanup"].options["max_retries"] == 0, "the task keeps its options"
    assert report(1, 2) == 3, "the function stays callable"


def test_a_worker_runs_each_tick_at_its_time(make_queue: MakeQueue) -> None:
    queue = make_queue()
    ran: list[str] = []
    two = threading.Event()

    @queue.periodic(cron="* * * * * *", name="every-second")
    def beat() -> None:
        ran.append(current_job.id)
        if len(ran) == 2:
            two.set()

    queue.start_worker()
    assert two.wait(10), "two ticks never ran"
    queue.shutdown()
    done = [queue.get_job(job_id) for job_id in ran]
    ticks = sorted(job.to_dict()["scheduled_at"] for job in done if job is not None)
    assert ticks[1] - ticks[0] == 1.0 and ticks[0] % 1 == 0
    for job in done:
        assert job is not None
        record = job.to_dict()
        assert record["started_at"] >= record["scheduled_at"], "not before its tick"
        assert record["started_at"] - record["scheduled_at"] < 0.5, "on time"
    [row] = queue.periodic_tasks()
    assert row["registered"] and row["last_run"] is not None and row["last_run"] >= ticks[-1]


def test_a_schedule_declared_while_the_worker_runs_starts_at_once(make_queue: MakeQueue) -> None:
    queue = make_queue()
    ran = threading.Event()
    queue.start_worker()

    @queue.periodic(cron="* * * * * *", name="late")
    def late() -> None:
        ran.set()

    assert ran.wait(10)
