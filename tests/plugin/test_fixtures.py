"""The queue and worker fixtures, exercised by generated test projects."""

from __future__ import annotations

import pytest

from .conftest import SUBPROCESS_LIMIT


def test_each_test_gets_a_fresh_isolated_queue_closed_afterwards(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        seen = []

        @pytest.mark.parametrize("db", ["memory", "file", "memory", "file"])
        def test_fresh(request, db):
            request.applymarker(pytest.mark.taskito(db=db))
            queue = request.getfixturevalue("queue")

            @queue.task()
            def noop():
                pass

            assert queue.stats()["pending"] == 0, "nothing left from an earlier test"
            noop.delay()
            assert queue.stats()["pending"] == 1
            assert all(q.closed for q in seen), "earlier tests' queues are closed"
            assert all(q is not queue for q in seen)
            if db == "memory":
                assert queue.db_path == ":memory:"
            else:
                tmp_path = request.getfixturevalue("tmp_path")
                assert queue.db_path == str(tmp_path / "taskito-main.db")
            seen.append(queue)
        """
    )
    project.runpytest().assert_outcomes(passed=4)


def test_the_worker_runs_tasks_on_as_many_threads_as_asked(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import threading

        def test_eight_at_once(queue, worker):
            # Only 8 tasks running at the same time get past this barrier.
            barrier = threading.Barrier(8, timeout=20)

            @queue.task()
            def meet(i):
                barrier.wait()
                return i

            jobs = meet.map([(i,) for i in range(8)])
            assert worker.run_until_complete(jobs) == list(range(8))
            assert worker.threads == 8
        """
    )
    project.runpytest("--taskito-workers=8").assert_outcomes(passed=1)


def test_arguments_and_results_go_through_the_serializer(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import threading
        import pytest
        from taskito import SerializationError, TaskFailedError

        def test_arguments_are_copies(queue, worker):
            @queue.task()
            def mutate(items):
                items.append("task")
                return items

            mine = ["test"]
            assert worker.run_until_complete([mutate.delay(mine)]) == [["test", "task"]]
            assert mine == ["test"], "the task got a deserialized copy, not the object"

        def test_unpicklable_arguments_fail_at_enqueue(queue, worker):
            @queue.task()
            def f(x):
                return x

            with pytest.raises(SerializationError):
                f.delay(lambda: 1)

        def test_unpicklable_results_fail_the_job(queue, worker):
            @queue.task()
            def lock():
                return threading.Lock()

            job = lock.delay()
            with pytest.raises(TaskFailedError, match="cannot serialize the task's result"):
                worker.wait_idle()
            assert worker.failed == [job]
        """
    )
    project.runpytest().assert_outcomes(passed=3)


FAILING = """
def helper(n):
    raise ValueError(f"bad input {n}")

def test_fails(queue, worker):
    @queue.task(max_retries=0)
    def parse(n):
        return helper(n)

    parse.delay(42)
    worker.wait_idle()
"""


def test_a_failing_task_fails_the_test_with_the_task_traceback(project: pytest.Pytester) -> None:
    project.makepyfile(FAILING)
    result = project.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*worker.wait_idle()",
            "E *TaskFailedError: job * (test_a_failing_task_fails_the_test_with_the_task_traceback"
            ".test_fails.<locals>.parse) failed after 1 attempt(s): ValueError: bad input 42",
            "E *Traceback from the worker:",
            "E *in parse",
            "E *return helper(n)",
            "E *in helper",
            'E *raise ValueError(f"bad input {n}")',
            "E *ValueError: bad input 42",
        ]
    )
    # The failure is the test's line and the task's traceback, not the plugin's insides.
    assert "_raise_new_failure" not in result.stdout.str()


def test_waiting_helpers(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import time
        import pytest
        from taskito import JobCancelledError, JobTimeoutError, TaskFailedError, current_job

        def test_wait_idle_waits_through_retries(queue, worker):
            @queue.task(max_retries=3, retry_backoff=0.05)
            def third_time_lucky():
                if current_job.attempt < 3:
                    raise RuntimeError(f"attempt {current_job.attempt}")
                return "ok"

            job = third_time_lucky.delay()
            worker.wait_idle(timeout=20)
            # Backoff leaves the job "failed" (a retry scheduled) between attempts:
            # returning then would leave it unfinished here.
            assert job.status == "complete"
            assert [e["attempt"] for e in job.errors] == [1, 2]
            assert worker.completed == [job]
            assert worker.failed == []

        def test_a_retry_after_the_limit_times_out_at_once(queue, worker):
            @queue.task(max_retries=1, retry_backoff=600)
            def slow_retry():
                raise RuntimeError("down")

            job = slow_retry.delay()
            started = time.monotonic()
            with pytest.raises(JobTimeoutError, match="a retry is scheduled after the wait's limit") as info:
                worker.wait_idle(timeout=20)
            assert time.monotonic() - started < 10
            assert job.id in str(info.value) and "RuntimeError: down" in str(info.value)
            assert isinstance(info.value, TimeoutError)

        def test_without_delayed_jobs_they_do_not_hold_it_up(queue, worker):
            @queue.task()
            def later():
                return "later"

            @queue.task()
            def now():
                return "now"

            delayed = later.apply_async(delay=3600)
            soon = now.apply_async(delay=0.1)
            ready = now.delay()
            started = time.monotonic()
            worker.wait_idle(timeout=20, include_delayed=False)
            assert time.monotonic() - started < 10
            assert ready.status == "complete"
            assert delayed.status == "pending"
            # run_until_complete waits for delayed jobs.
            assert worker.run_until_complete([soon]) == ["now"]

        def test_wait_idle_waits_for_delayed_jobs_due_within_its_limit(queue, worker):
            @queue.task()
            def now():
                return "now"

            soon = now.apply_async(delay=0.3)
            sooner = now.apply_async(delay=0.1)
            worker.wait_idle(timeout=20)
            assert (soon.status, sooner.status) == ("complete", "complete")
            assert worker.completed == [soon, sooner]

        def test_a_delayed_job_due_after_the_limit_times_out_at_once(queue, worker):
            @queue.task()
            def now():
                return "now"

            late = now.apply_async(delay=3600)
            now.delay()  # due work does not delay the verdict on the late job
            started = time.monotonic()
            with pytest.raises(JobTimeoutError) as info:
                worker.wait_idle(timeout=20)
            assert time.monotonic() - started < 10
            message = str(info.value)
            assert message.startswith(
                "wait_idle: a delayed job falls due after the wait's limit of 20s; it cannot become idle in time"
            )
            assert f"job {late.id} (" in message and "delayed: due in 3" in message
            assert "include_delayed=False" in message
            assert late.status == "pending"

        def test_failures_are_raised_once_unless_told_not_to(queue, worker):
            @queue.task(max_retries=0)
            def boom(n):
                raise KeyError(n)

            first = boom.delay(1)
            with pytest.raises(TaskFailedError, match="KeyError: 1"):
                worker.wait_idle()
            worker.wait_idle()  # already raised: not again
            second = boom.delay(2)
            worker.wait_idle(fail_fast=False)
            assert worker.failed == [first, second]
            assert worker.completed == []

        def test_run_until_complete(queue, worker):
            @queue.task(max_retries=0)
            def square(x):
                if x < 0:
                    raise ValueError("negative")
                return x * x

            jobs = square.map([(i,) for i in range(20)])
            assert worker.run_until_complete(jobs) == [i * i for i in range(20)]
            bad = square.delay(-1)
            with pytest.raises(TaskFailedError, match="negative"):
                worker.run_until_complete([square.delay(2), bad])
            cancelled = square.apply_async([3], delay=3600)
            queue.cancel_job(cancelled.id)
            ok = square.delay(4)
            out = worker.run_until_complete([ok, bad, cancelled], fail_fast=False)
            assert out[0] == 16
            assert isinstance(out[1], TaskFailedError) and isinstance(out[2], JobCancelledError)
            with pytest.raises(TypeError, match="pass \\\\[job\\\\]"):
                worker.run_until_complete(ok)
            with pytest.raises(ValueError):
                worker.run_until_complete([ok], timeout=0)

        def test_run_until_complete_names_what_did_not_finish(queue, worker):
            @queue.task()
            def never():
                pass

            job = never.apply_async(delay=3600)
            with pytest.raises(JobTimeoutError, match="1 job.s. unfinished after 0.2s") as info:
                worker.run_until_complete([job], timeout=0.2)
            assert job.id in str(info.value)

        def test_run_until_complete_fails_fast(queue, worker):
            import threading
            release = threading.Event()

            @queue.task()
            def slow():
                release.wait(20)

            @queue.task(max_retries=0)
            def broken():
                raise OSError("disk")

            jobs = [slow.delay(), broken.delay()]
            started = time.monotonic()
            try:
                with pytest.raises(TaskFailedError, match="disk"):
                    worker.run_until_complete(jobs, timeout=20)
                # Raised while the first job still runs.
                assert time.monotonic() - started < 10
            finally:
                release.set()

        def test_wait_idle_names_what_is_still_busy(queue, worker):
            import threading
            release = threading.Event()

            @queue.task()
            def held():
                release.wait(20)

            job = held.delay()
            try:
                with pytest.raises(JobTimeoutError, match="still busy after 0.3s") as info:
                    worker.wait_idle(timeout=0.3)
                assert job.id in str(info.value) and "held" in str(info.value)
            finally:
                release.set()
            worker.wait_idle()
        """
    )
    project.runpytest().assert_outcomes(passed=10)


def test_async_tests_await_results(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import asyncio
        import pytest

        @pytest.mark.asyncio
        async def test_aresult(queue, worker):
            @queue.task()
            def add(a, b):
                return a + b

            @queue.task()
            async def coro(x):
                await asyncio.sleep(0)
                return x

            jobs = [add.delay(i, i) for i in range(10)] + [coro.delay("c")]
            results = await asyncio.gather(*(job.aresult(timeout=20) for job in jobs))
            assert results == [2 * i for i in range(10)] + ["c"]
        """
    )
    project.runpytest().assert_outcomes(passed=1)


STUCK = """
import threading
import pytest

started = threading.Event()

@pytest.fixture(autouse=True)
def fresh_event():
    started.clear()

@pytest.mark.parametrize("how", ["blocked", "spinning"])
def test_stuck(queue, worker, how):
    @queue.task()
    def never_finishes(how):
        started.set()
        if how == "blocked":
            threading.Event().wait()
        while True:
            pass

    never_finishes.delay(how)
    assert started.wait(20), "the task never started"

def test_queue_alone_with_a_worker_started_by_the_test(queue):
    @queue.task()
    def stuck_too():
        started.set()
        threading.Event().wait()

    queue.start_worker()
    stuck_too.delay()
    assert started.wait(20), "the task never started"

def test_later_tests_still_run():
    pass
"""


@pytest.mark.slow
def test_a_task_that_never_finishes_fails_teardown_within_the_timeout(project: pytest.Pytester) -> None:
    project.makepyfile(STUCK)
    # In a subprocess: what is under test includes the interpreter exiting
    # with executor threads left behind.
    result = project.runpytest_subprocess("--taskito-timeout=1", timeout=SUBPROCESS_LIMIT)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stderr.str()
    result.assert_outcomes(passed=4, errors=3)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_stuck?blocked?*",
            "worker teardown: 1 task(s) still running after 1s (--taskito-timeout):",
            "  - job * (test_a_task_that_never_finishes_fails_teardown_within_the_timeout"
            ".test_stuck.<locals>.never_finishes), running for *s",
            "    in thread *, at:",
            "*in never_finishes",
            "*threading.Event().wait()",
            "    -> blocked outside Python: cannot be interrupted; its thread stays behind",
            "Their jobs were handed back to the queue.*",
            "*ERROR at teardown of test_stuck?spinning?*",
            "worker teardown: 1 task(s) still running after 1s (--taskito-timeout):",
            "*while True:",
            "    -> interrupted: taskito.TaskInterrupted was raised in it and it returned",
            "*ERROR at teardown of test_queue_alone_with_a_worker_started_by_the_test*",
            "queue teardown: 1 task(s) still running after 1s (--taskito-timeout):",
            "*stuck_too*",
        ]
    )
    # Three teardowns of about a second each, not the 30 s default, and no hang at exit.
    assert result.duration < 30


FAILURE_AFTER_PURGE = """
import pytest
from taskito import TaskFailedError

def test_a_new_failure_after_a_purge_is_raised(queue, worker):
    @queue.task(max_retries=0)
    def boom(n):
        raise ValueError(f"boom {n}")

    boom.delay(1)
    with pytest.raises(TaskFailedError, match="boom 1"):
        worker.wait_idle()
    worker.wait_idle()  # raised once only
    assert queue.purge_dead() == 1
    job = boom.delay(2)  # as many dead jobs as before, but a new failure
    with pytest.raises(TaskFailedError):
        job.result(timeout=10)
    with pytest.raises(TaskFailedError, match="boom 2"):
        worker.wait_idle()
"""


def test_wait_idle_raises_a_new_failure_even_when_the_dead_count_is_unchanged(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(FAILURE_AFTER_PURGE)
    project.runpytest().assert_outcomes(passed=1)


def test_wait_idle_counts_jobs_the_worker_holds_but_has_not_started(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import threading
        import pytest
        from pytest_taskito import TaskitoWorker
        from taskito import JobTimeoutError

        def test_claimed_jobs_keep_it_busy(queue):
            release = threading.Event()

            @queue.task()
            def hold():
                release.wait(10)

            first, second = hold.delay(), hold.delay()
            # One thread, and one job held beyond it: the second job is claimed.
            queue.start_worker(workers=1, prefetch=1)
            worker = TaskitoWorker(queue, threads=1, timeout=10)
            tick = threading.Event()
            while (first.status, second.status) != ("running", "claimed"):
                tick.wait(0.01)
            try:
                with pytest.raises(JobTimeoutError, match="still busy after 0.2s") as info:
                    worker.wait_idle(timeout=0.2)
                assert f"job {second.id} (" in str(info.value)
            finally:
                release.set()
            worker.wait_idle()
            assert worker.completed == [first, second]
        """
    )
    project.runpytest().assert_outcomes(passed=1)
