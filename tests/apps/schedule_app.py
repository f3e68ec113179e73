"""The app the worker processes of tests/test_schedule_processes.py serve: a
periodic task every second and a rate-limited task beside an unlimited one.

Configured by environment variables: TASKITO_TEST_DB (database),
TASKITO_TEST_LEDGER (a file every run appends one line to: job id, attempt,
pid, task), TASKITO_TEST_WORKERS (threads), TASKITO_TEST_CATCH_UP (the
schedule's catch_up; "one" by default).
"""

import os

from taskito import Queue, current_job

queue = Queue(
    db_path=os.environ["TASKITO_TEST_DB"],
    workers=int(os.environ.get("TASKITO_TEST_WORKERS", "2")),
    lease_duration=2.0,
    heartbeat_interval=0.2,
)
LEDGER = os.environ["TASKITO_TEST_LEDGER"]


def write_ledger() -> None:
    # One short O_APPEND write per line: atomic on a local filesystem.
    with open(LEDGER, "a") as ledger:
        ledger.write(f"{current_job.id} {current_job.attempt} {os.getpid()} {current_job.task_name}\n")


@queue.periodic(cron="* * * * * *", name="tick", catch_up=os.environ.get("TASKITO_TEST_CATCH_UP", "one"))
def tick() -> None:
    write_ledger()


@queue.task(name="limited", rate_limit="20/s", retry_backoff=0)
def limited() -> None:
    write_ledger()


@queue.task(name="free", retry_backoff=0)
def free() -> None:
    write_ledger()
