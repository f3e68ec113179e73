"""A chain outlives its producer and a worker's kill -9, with real processes
(`taskito worker` and a producer that exits right after `.delay()`), on
SQLite and PostgreSQL: the workflow is driven only by what is stored.

Each test prints one summary line (run with -s to see it).
"""

from __future__ import annotations

import collections
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from taskito import Queue
from tests.cluster import REPO, Cluster, wait_until
from tests.postgres import scratch_schema

pytestmark = pytest.mark.slow


@dataclass
class CanvasCluster(Cluster):
    """Worker processes serving tests/apps/canvas_app.py, on a SQLite file
    or (with ``database`` naming a URL and a schema) on PostgreSQL."""

    app: str = "tests.apps.canvas_app:queue"
    database: dict[str, str] | None = None

    def env(self, **extra: str) -> dict[str, str]:
        if self.database:
            extra = {
                "TASKITO_TEST_DB_URL": self.database["db_url"],
                "TASKITO_TEST_SCHEMA": self.database["schema"],
                **extra,
            }
        return super().env(**extra)

    def queue(self) -> Queue:
        return Queue(**(self.database or {"db_path": self.db}))

    def produce(self) -> str:
        """Runs a producer process that stores the chain and exits; the id of
        the chain's last job, which it printed."""
        done = subprocess.run(
            [sys.executable, "-m", "tests.apps.canvas_app"],
            cwd=REPO,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


@pytest.fixture(params=["sqlite", "postgres"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CanvasCluster]:
    if request.param == "sqlite":
        c = CanvasCluster(tmp_path)
        yield c
        c.stop_all()
        return
    with scratch_schema() as options:
        c = CanvasCluster(tmp_path, database=options)
        try:
            yield c
        finally:
            c.stop_all()


def test_a_chain_survives_its_producer_and_a_kill_9_between_steps(cluster: CanvasCluster) -> None:
    last_id = cluster.produce()  # the producer has exited: nothing of it runs
    victim = cluster.start_worker(threads=1)
    # Step 2 starts only once step 1's outcome is stored; it then holds the
    # victim's thread until after the kill.
    wait_until((cluster.tmp / "step2-started").exists, 60, "step 2 to start")
    victim.kill()
    victim.wait(timeout=30)
    (cluster.tmp / "released").touch()
    survivor = cluster.start_worker(threads=1)

    with cluster.queue() as queue:
        last = queue.get_job(last_id)
        assert last is not None
        assert last.result(timeout=60) == (1 + 1) * 10 + 5
        steps = chain_of(queue, last)
        assert [s.task_name for s in steps] == ["step1", "step2", "step3"]
        assert [s.status for s in steps] == ["complete"] * 3
        records: list[dict[str, Any]] = [s.to_dict() for s in steps]

    rows = cluster.ledger_rows()
    runs = collections.Counter(job_id for job_id, *_ in rows)
    pids = {(job_id, int(attempt)): int(pid) for job_id, attempt, pid, _ in rows}
    first, second, third = (s.id for s in steps)
    assert runs == {first: 1, second: 2, third: 1}, rows
    assert pids[(first, 1)] == victim.pid and pids[(second, 1)] == victim.pid
    assert pids[(second, 2)] == survivor.pid and pids[(third, 1)] == survivor.pid
    # The killed attempt of step 2 counted as lost; step 3 was fed its result.
    assert records[1]["attempt"] == 2 and (records[1]["error"] or "").startswith("WorkerLost")
    print(
        f"\n[chain across kill -9, {'postgres' if cluster.database else 'sqlite'}] steps=3 "
        f"step2_attempts={records[1]['attempt']} result={(1 + 1) * 10 + 5}"
    )


def chain_of(queue: Queue, last: Any) -> list[Any]:
    """The steps of the chain ending in ``last``, first to last, through their dependencies."""
    steps = [last]
    while steps[-1].dependencies:
        (parent,) = steps[-1].dependencies
        job = queue.get_job(parent)
        assert job is not None
        steps.append(job)
    return steps[::-1]
