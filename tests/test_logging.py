"""What a worker says: one line per failed attempt, what happens next, the
dead letters with their traceback, and at DEBUG each claim and success;
nothing per job at the default level when all goes well."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from taskito import Queue, TaskFailedError
from tests.cluster import Cluster, wait_until
from tests.conftest import MakeQueue


def events(caplog: pytest.LogCaptureFixture, level: int = logging.DEBUG) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "taskito.events" and r.levelno >= level]


def test_each_failed_attempt_is_one_line_and_the_last_one_names_the_dead_letter(
    make_queue: MakeQueue, caplog: pytest.LogCaptureFixture
) -> None:
    q = make_queue()

    @q.task(name="flaky", max_retries=1, retry_backoff=0.01)
    def flaky() -> None:
        raise ValueError("the service said no")

    caplog.set_level(logging.INFO, logger="taskito")
    q.start_worker()
    job = flaky.delay()
    with pytest.raises(TaskFailedError):
        job.result(timeout=10)
    q.shutdown()  # flushes the worker's log
    lines = events(caplog)
    assert [r.levelname for r in lines] == ["WARNING", "ERROR"], [r.getMessage() for r in lines]
    retry, dead = (r.getMessage() for r in lines)
    assert f"job {job.id}" in retry and "flaky: attempt 1/2 failed: ValueError: the service said no" in retry
    assert "retrying in 0.0" in retry
    assert "flaky: attempt 2/2 failed: ValueError: the service said no; moved to the dead letters" in dead
    assert "Traceback (most recent call last)" in dead and 'raise ValueError("the service said no")' in dead
    # The records carry the job, the task and the attempt for structured logs.
    assert (lines[1].job_id, lines[1].task, lines[1].attempt) == (job.id, "flaky", 2)  # type: ignore[attr-defined]


def test_successes_and_claims_are_logged_only_at_debug(
    make_queue: MakeQueue, caplog: pytest.LogCaptureFixture
) -> None:
    quiet = make_queue()
    quiet.task(name="ok")(lambda: 1)
    caplog.set_level(logging.INFO, logger="taskito")
    quiet.start_worker()
    assert quiet.tasks["ok"].delay().result(timeout=10) == 1
    quiet.shutdown()
    assert events(caplog) == [], "nothing per job at INFO when all goes well"

    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="taskito")
    chatty = make_queue()
    chatty.task(name="ok")(lambda: 1)
    chatty.start_worker()
    jobs = chatty.tasks["ok"].map([(), (), ()])
    for job in jobs:
        job.result(timeout=10)
    chatty.shutdown()
    lines = events(caplog)
    assert {r.levelname for r in lines} == {"DEBUG"}
    messages = [r.getMessage() for r in lines]
    for job in jobs:
        assert any(f"job {job.id}: ok: attempt 1 succeeded in" in m for m in messages), messages
    assert any(m.startswith("claimed ") and "to run now" in m for m in messages), messages


def test_a_worker_process_logs_failures_and_recoveries_at_its_level(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, app="tests.apps.ledger_app:queue")
    try:
        worker = cluster.start_worker(1, "--log-level", "DEBUG")
        with Queue(cluster.db, lease_duration=1.0, heartbeat_interval=0.2) as producer:
            producer.task(name="record", retry_backoff=0)(lambda *a: None)
            producer.task(name="suicide", max_retries=0, retry_backoff=0)(lambda *a: None)
            wait_until(lambda: len(producer.workers()) == 1, 60, "the worker to register")
            producer.tasks["record"].delay(1).result(timeout=30)
            # Engine events reach the log through a thread of their own, after
            # the outcome is committed: the worker must not die before it
            # wrote this one.
            wait_until(lambda: "succeeded in" in cluster.logs(), 60, "the success to be logged")
            doomed = producer.tasks["suicide"].delay()
            wait_until(lambda: worker.poll() is not None, 60, "the worker to kill itself")
            # A second worker recovers the dead one's job when its lease runs out.
            cluster.start_worker(1, "--log-level", "DEBUG")
            with pytest.raises(TaskFailedError):
                doomed.result(timeout=60)
        logs = cluster.logs()
        assert "DEBUG" in logs
        assert f"job {doomed.id}: its worker stopped renewing the lease" in logs, logs
    finally:
        cluster.stop_all()
