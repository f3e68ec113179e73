"""Task timeouts: soft_timeout through check_timeout, the hard timeout's
interrupt, and a late outcome after one."""

from __future__ import annotations

import contextlib
import logging
import threading

import pytest

from taskito import Queue, TaskFailedError, current_job

from .conftest import MakeQueue


def test_soft_timeout_raises_at_check_timeout(job_queue: Queue) -> None:
    progress: list[int] = []

    @job_queue.task(soft_timeout=0.05, max_retries=0)
    def chunked() -> None:
        step = 0
        while True:
            current_job.check_timeout()
            progress.append(step)
            step += 1
            # Stand-in for a unit of work: long enough that the soft timeout
            # passes after a few of them.
            threading.Event().wait(0.01)

    job_queue.start_worker()
    job = chunked.delay()
    with pytest.raises(TaskFailedError) as info:
        job.result(timeout=10)
    assert info.value.exc_type == "taskito.TaskTimeoutError"
    assert "soft timeout of 0.05s" in info.value.exc_message
    assert 2 <= len(progress) < 100


def test_hard_timeout_interrupts_python_code_and_frees_the_thread(make_queue: MakeQueue) -> None:
    q = make_queue(workers=1)

    @q.task(timeout=0.2, max_retries=0)
    def spin() -> None:
        while True:
            # TaskInterrupted is a BaseException: not swallowed here.
            with contextlib.suppress(Exception):
                pass

    @q.task()
    def after() -> str:
        return "ran"

    q.start_worker()
    stuck = spin.delay()
    with pytest.raises(TaskFailedError) as info:
        stuck.result(timeout=10)
    assert info.value.exc_type == "TaskTimeoutError"
    # The only executor thread was freed by the interrupt.
    assert after.delay().result(timeout=10) == "ran"


def test_a_late_result_after_a_timeout_is_discarded_and_logged(
    job_queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()

    @job_queue.task(timeout=0.1, max_retries=1, retry_backoff=0)
    def slow() -> str:
        if current_job.attempt == 1:
            # Blocked in C code, the interrupt cannot reach it; it returns late.
            release.wait(10)
            return "late"
        return "second attempt"

    caplog.set_level(logging.WARNING, logger="taskito")
    # The worker logs its events from a thread of its own, which may still be
    # logging the last of them when shutdown() returns: wait for that one. On
    # the root logger after caplog's handler, so caplog has it once seen is set.
    discarded = _LogWatch("discarded the late outcome of attempt 1")
    logging.getLogger().addHandler(discarded)
    try:
        job_queue.start_worker(workers=2)
        job = slow.delay()
        assert job.result(timeout=10) == "second attempt"
        release.set()
        job_queue.shutdown()
        assert job.result(timeout=1) == "second attempt"
        assert discarded.seen.wait(10), [r.getMessage() for r in caplog.records]
    finally:
        logging.getLogger().removeHandler(discarded)
    messages = [r.getMessage() for r in caplog.records]
    assert any("ran past its timeout" in m for m in messages), messages
    assert any("discarded the late outcome of attempt 1" in m for m in messages), messages


class _LogWatch(logging.Handler):
    """Sets ``seen`` when a record containing ``text`` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()
