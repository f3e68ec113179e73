"""The app that worker processes of tests/test_postgres_processes.py serve, on
PostgreSQL.

Configured by environment variables: TASKITO_TEST_DB_URL and
TASKITO_TEST_SCHEMA (the database), TASKITO_TEST_LEDGER (a file every
attempt appends one line to: job id, attempt, pid, and when it started and
ended by this machine's clock), TASKITO_TEST_WORKERS (threads). A worker
started with TASKITO_TEST_CLOCK_SKEW has its engine's clock moved by that
many seconds.
"""

import os
import threading
import time

from taskito import Queue, current_job

queue = Queue(
    db_url=os.environ["TASKITO_TEST_DB_URL"],
    schema=os.environ["TASKITO_TEST_SCHEMA"],
    workers=int(os.environ.get("TASKITO_TEST_WORKERS", "2")),
    lease_duration=1.0,
    heartbeat_interval=0.2,
    default_retry=3,
)
LEDGER = os.environ["TASKITO_TEST_LEDGER"]


def write_ledger(started: float) -> None:
    # One short O_APPEND write per line: atomic on a local filesystem.
    with open(LEDGER, "a") as ledger:
        ledger.write(
            f"{current_job.id} {current_job.attempt} {os.getpid()} {started:.6f} {time.time():.6f}\n"
        )


@queue.task(name="record", retry_backoff=0)
def record(n: int) -> int:
    write_ledger(time.time())
    return n


@queue.task(name="work", retry_backoff=0)
def work(n: int, seconds: float) -> int:
    # Stands in for a task that takes a while.
    started = time.time()
    threading.Event().wait(seconds)
    write_ledger(started)
    return n
