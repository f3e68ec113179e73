"""The app that worker processes of tests/test_processes.py serve.

Configured by environment variables, so each test points it at its own files:
TASKITO_TEST_DB (database), TASKITO_TEST_LEDGER (a file every attempt appends
one line to: job id, attempt, pid), TASKITO_TEST_WORKERS (threads).
"""

import os
import threading

from taskito import Queue, current_job

queue = Queue(
    db_path=os.environ["TASKITO_TEST_DB"],
    workers=int(os.environ.get("TASKITO_TEST_WORKERS", "2")),
    lease_duration=1.0,
    heartbeat_interval=0.2,
    default_retry=3,
)
LEDGER = os.environ["TASKITO_TEST_LEDGER"]


def write_ledger() -> None:
    # One short O_APPEND write per line: atomic on a local filesystem.
    with open(LEDGER, "a") as ledger:
        ledger.write(f"{current_job.id} {current_job.attempt} {os.getpid()}\n")


@queue.task(name="record", retry_backoff=0)
def record(n: int) -> int:
    write_ledger()
    return n


@queue.task(name="work", retry_backoff=0)
def work(n: int, seconds: float) -> int:
    # Stands in for a task that takes a while.
    threading.Event().wait(seconds)
    write_ledger()
    return n


@queue.task(name="suicide", max_retries=2, retry_backoff=0)
def suicide() -> None:
    write_ledger()
    os.kill(os.getpid(), 9)


@queue.task(name="held", retry_backoff=0)
def held(flag: str) -> str:
    write_ledger()
    if current_job.attempt == 1:
        # Wait until the test says go; by then another worker has redone it.
        while not os.path.exists(flag):
            threading.Event().wait(0.01)
        return "first attempt"
    return "second attempt"
