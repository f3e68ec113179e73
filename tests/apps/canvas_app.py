"""The app that worker (and producer) processes of
tests/test_canvas_processes.py run: a three-step chain whose second step
holds its thread until the test releases it.

Configured by environment variables: TASKITO_TEST_DB (a SQLite file) or
TASKITO_TEST_DB_URL and TASKITO_TEST_SCHEMA (PostgreSQL), TASKITO_TEST_LEDGER
(a file every attempt appends one line to: job id, attempt, pid, task),
TASKITO_TEST_WORKERS (threads). The steps signal the test through files in
the ledger's folder: ``step2-started`` once step 2 runs, and step 2 returns
once ``released`` exists.
"""

import os
import threading
from pathlib import Path

from taskito import Queue, chain, current_job

if os.environ.get("TASKITO_TEST_DB_URL"):
    database = {"db_url": os.environ["TASKITO_TEST_DB_URL"], "schema": os.environ["TASKITO_TEST_SCHEMA"]}
else:
    database = {"db_path": os.environ["TASKITO_TEST_DB"]}
queue = Queue(
    **database,
    workers=int(os.environ.get("TASKITO_TEST_WORKERS", "2")),
    lease_duration=1.0,
    heartbeat_interval=0.2,
    default_retry=3,
)
LEDGER = Path(os.environ["TASKITO_TEST_LEDGER"])


def write_ledger() -> None:
    # One short O_APPEND write per line: atomic on a local filesystem.
    with open(LEDGER, "a") as ledger:
        ledger.write(f"{current_job.id} {current_job.attempt} {os.getpid()} {current_job.task_name}\n")


@queue.task(name="step1", retry_backoff=0)
def step1(n: int) -> int:
    write_ledger()
    return n + 1


@queue.task(name="step2", retry_backoff=0)
def step2(x: int) -> int:
    write_ledger()
    (LEDGER.parent / "step2-started").touch()
    released = LEDGER.parent / "released"
    # Held until the test has killed this worker and released the step.
    for _ in range(6000):
        if released.exists():
            return x * 10
        threading.Event().wait(0.01)
    raise TimeoutError("never released")


@queue.task(name="step3", retry_backoff=0)
def step3(x: int) -> int:
    write_ledger()
    return x + 5


def pipeline(n: int) -> chain:
    return chain(step1.s(n), step2.s(), step3.s())


if __name__ == "__main__":
    # The producer: stores the chain, prints its last job's id, and exits.
    print(pipeline(1).delay().id)
