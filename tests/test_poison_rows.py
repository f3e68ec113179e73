"""Rows another program wrote badly (from a separate process, with Python's
sqlite3 module): each kind of unreadable cell is quarantined, dead with an
error naming the cell, and the queue keeps draining; stats(), list_jobs()
and get_job() never fail on them."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from taskito import Queue
from tests.cluster import wait_until

# The column, the SQL value written in it, and what the dead letter names.
BAD_CELLS = [
    ("payload", "'text, not bytes'", "payload: stored as TEXT"),
    ("queue", "x'00ff'", "queue: stored as a BLOB"),
    ("task_name", "x'00ff'", "task_name: stored as a BLOB"),
    ("priority", "'high'", "priority: stored as TEXT"),
    ("scheduled_at", "'soon'", "scheduled_at: stored as TEXT"),
    ("attempt", "-5", "attempt: stored as the integer -4"),
    ("max_retries", "'many'", "max_retries: stored as TEXT"),
    ("retry_backoff", "'slow'", "retry_backoff: stored as TEXT"),
    ("timeout_ms", "'long'", "timeout_ms: stored as TEXT"),
    ("status", "99", "status: 99 is not a job state"),
]

WRITER = textwrap.dedent(
    """
    import sqlite3, sys
    db, template, spoiled = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    conn = sqlite3.connect(db, timeout=30)
    columns = [r[1] for r in conn.execute("PRAGMA table_info(jobs)")]
    for n, item in enumerate(spoiled):
        column, value = item.split("=", 1)
        # A copy of a good row, with a fresh id and one bad cell.
        picked = ", ".join(c for c in columns if c != "id")
        conn.execute(
            f"INSERT INTO jobs (id, {picked}) SELECT id + ?, {picked} FROM jobs WHERE id = ?",
            (1000 + n, template),
        )
        conn.execute(f"UPDATE jobs SET {column} = {value} WHERE id = ?", (template + 1000 + n,))
    conn.commit()
    """
)


@pytest.mark.slow
def test_bad_cells_written_by_another_process_never_stall_the_queue(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = str(tmp_path / "jobs.db")
    caplog.set_level(logging.ERROR, logger="taskito")
    with Queue(db, workers=2) as q:

        @q.task(name="double")
        def double(x: int) -> int:
            return 2 * x

        template = double.delay(0)  # enqueued before the worker runs: stays ready
        subprocess.run(
            [
                sys.executable,
                "-c",
                WRITER,
                db,
                str(int(template.id, 16)),
                *(f"{column}={value}" for column, value, _ in BAD_CELLS),
            ],
            check=True,
            timeout=60,
        )
        bad_ids = [f"{int(template.id, 16) + 1000 + n:016x}" for n in range(len(BAD_CELLS))]
        # Reads of the whole table still work with the bad rows in it.
        assert sum(q.stats().values()) == 1 + len(BAD_CELLS) - 1  # the status-99 row counts nowhere
        assert len(q.list_jobs(limit=100)) == 1 + len(BAD_CELLS)
        assert all(q.get_job(job_id) is not None for job_id in bad_ids)

        q.start_worker()
        good = double.map([(i,) for i in range(200)])
        assert [job.result(timeout=30) for job in good] == [2 * i for i in range(200)]
        assert template.result(timeout=30) == 0

        def all_quarantined() -> bool:
            jobs = [q.get_job(job_id) for job_id in bad_ids]
            return all(job is not None and job.status == "dead" and job.errors for job in jobs)

        wait_until(all_quarantined, 30, "every bad row to be quarantined")
        for job_id, (column, _, named) in zip(bad_ids, BAD_CELLS, strict=True):
            errors = q.get_job(job_id).errors  # type: ignore[union-attr]
            assert len(errors) == 1, column
            assert errors[0]["type"] == "CorruptJobError", column
            assert named in errors[0]["message"], (column, errors[0]["message"])
        q.shutdown()
    logged = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert len(logged) == len(BAD_CELLS), logged  # each once
