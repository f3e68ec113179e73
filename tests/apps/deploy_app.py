"""The app that worker processes of tests/test_deployed.py serve: a producer
in the test process, `taskito worker` processes beside it.

Configured by environment variables: TASKITO_TEST_DB (database),
TASKITO_TEST_LEDGER (a file each run appends "job_id pid task" to),
TASKITO_TEST_WORKERS (threads), TASKITO_TEST_RELEASE (a version number: 2
registers `new_feature`, the task a rolling deploy adds).
"""

import os
import threading
import time

from taskito import Queue, current_job

queue = Queue(
    db_path=os.environ["TASKITO_TEST_DB"],
    workers=int(os.environ.get("TASKITO_TEST_WORKERS", "2")),
    lease_duration=2.0,
    heartbeat_interval=0.4,
)
LEDGER = os.environ["TASKITO_TEST_LEDGER"]


def write_ledger() -> None:
    # One short O_APPEND write per line: atomic on a local filesystem.
    with open(LEDGER, "a") as ledger:
        ledger.write(f"{current_job.id} {os.getpid()} {current_job.task_name}\n")


@queue.task(name="noop")
def noop(x: int) -> int:
    return x


@queue.task(name="slow")
def slow(seconds: float) -> int:
    write_ledger()
    threading.Event().wait(seconds)
    return os.getpid()


@queue.task(name="gate")
def gate(flag: str) -> str:
    """Holds its executor until the test creates `flag`."""
    write_ledger()
    deadline = time.monotonic() + 60
    while not os.path.exists(flag) and time.monotonic() < deadline:
        threading.Event().wait(0.005)
    return "opened"


@queue.task(name="record")
def record() -> None:
    write_ledger()


if os.environ.get("TASKITO_TEST_RELEASE") == "2":

    @queue.task(name="new_feature")
    def new_feature(x: int) -> int:
        write_ledger()
        return x * 2
