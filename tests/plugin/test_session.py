"""One queue and worker for the whole session; each test sees only its own jobs."""

from __future__ import annotations

import pytest

from .conftest import SUBPROCESS_LIMIT

SESSION = """
import pytest
from taskito import JobTimeoutError, TaskFailedError

seen = {}

def test_first(session_queue, session_worker):
    @session_queue.task(name="square")
    def square(x):
        return x * x

    @session_queue.task(name="boom", max_retries=0)
    def boom():
        raise RuntimeError("first test's failure")

    @session_queue.task(name="retry_later", max_retries=1, retry_backoff=600)
    def retry_later():
        raise RuntimeError("again in ten minutes")

    seen["queue"] = session_queue
    assert session_worker.run_until_complete(square.map([(i,) for i in range(5)])) == [0, 1, 4, 9, 16]
    # Left behind on purpose: a failure nobody waited for, a job delayed far
    # ahead, one waiting to retry. None of them may leak into the next test.
    boom.delay()
    session_queue.enqueue("square", (7,), delay=3600)
    retry_later.delay()
    with pytest.raises(JobTimeoutError, match="a retry is scheduled after the wait's limit"):
        # Not the delayed job: it would be named first, at once.
        session_worker.wait_idle(fail_fast=False, include_delayed=False)
    assert len(session_worker.completed) == 5

def test_second_sees_only_its_own_jobs(session_queue, session_worker):
    assert session_queue is seen["queue"], "one queue for the session"
    assert session_worker.completed == [] and session_worker.failed == []
    session_worker.wait_idle()  # the first test's failure is not raised here
    job = session_queue.enqueue("square", (3,))
    session_worker.wait_idle()
    assert session_worker.completed == [job]
    # The earlier tests' jobs are gone: only this test's one is in the database.
    assert session_queue.stats() == {
        "pending": 0, "claimed": 0, "running": 0, "complete": 1, "failed": 0, "dead": 0,
        "cancelled": 0,
        "expired": 0,
    }

def test_failures_are_raised_in_their_own_test(session_queue, session_worker):
    session_queue.enqueue("boom")
    with pytest.raises(TaskFailedError, match="first test's failure"):
        session_worker.wait_idle()

@pytest.mark.taskito(timeout=3)
def test_the_marker_timeout_applies(session_worker):
    assert session_worker.timeout == 3

@pytest.mark.taskito(workers=8)
def test_the_marker_cannot_change_the_session_worker(session_worker):
    pass

def test_the_function_fixtures_still_work_beside(queue, worker, session_queue):
    assert queue is not session_queue
    @queue.task()
    def one():
        return 1
    assert worker.run_until_complete([one.delay()]) == [1]
"""


def test_session_fixtures_share_one_worker_and_keep_tests_apart(project: pytest.Pytester) -> None:
    project.makepyfile(SESSION)
    result = project.runpytest()
    result.assert_outcomes(passed=5, errors=1)
    result.stdout.fnmatch_lines(
        ["*UsageError: @pytest.mark.taskito(workers=...) cannot change the session queue and worker*"]
    )


def test_session_fixtures_on_a_file_database(project: pytest.Pytester) -> None:
    project.makepyfile(SESSION)
    project.runpytest("--taskito-db=file", "-k", "not marker").assert_outcomes(passed=4)


STUCK_IN_SESSION = """
import threading

started = threading.Event()

def test_stuck(session_queue, session_worker):
    @session_queue.task(name="stuck")
    def stuck():
        started.set()
        threading.Event().wait()

    stuck.delay()
    assert started.wait(20)

def test_next_one_still_works(session_queue, session_worker):
    @session_queue.task(name="fine")
    def fine():
        return "fine"

    session_worker.wait_idle()  # the stuck job of the test before is not this test's
    assert session_worker.run_until_complete([fine.delay()]) == ["fine"]
"""


@pytest.mark.slow
def test_a_stuck_task_fails_its_own_test_in_a_session(project: pytest.Pytester) -> None:
    project.makepyfile(STUCK_IN_SESSION)
    result = project.runpytest_subprocess("--taskito-timeout=1", timeout=SUBPROCESS_LIMIT)
    result.assert_outcomes(passed=2, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_stuck*",
            "session test teardown: 1 task(s) still running after 1s (--taskito-timeout):",
            "  - job * (stuck), running for *",
            "*threading.Event().wait()",
            "Each keeps one thread of the session worker for the rest of the session.*",
            "*ERROR at teardown of test_next_one_still_works*",
            "session worker teardown: 1 task(s) still running after 1s (--taskito-timeout):",
        ]
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
