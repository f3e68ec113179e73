"""Worker and producer processes on one PostgreSQL schema, standing for
machines: exactly-once under load while every connection is killed, kill -9,
a worker whose clock is 10 minutes off, and twenty processes migrating an
empty database at once.

Each test prints one summary line (run with -s to see them).
"""

from __future__ import annotations

import collections
import itertools
import subprocess
import sys
import textwrap
import threading
import time
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
class PgCluster(Cluster):
    """Worker processes serving tests/apps/postgres_app.py on a schema."""

    db_url: str = ""
    schema: str = ""
    app: str = "tests.apps.postgres_app:queue"

    def env(self, **extra: str) -> dict[str, str]:
        return super().env(TASKITO_TEST_DB_URL=self.db_url, TASKITO_TEST_SCHEMA=self.schema, **extra)

    def runs(self) -> list[tuple[str, int, int, float, float]]:
        """(job id, attempt, pid, started, ended) of every attempt."""
        return [(j, int(a), int(p), float(s), float(e)) for j, a, p, s, e in self.ledger_rows()]

    def sql(self, statement: str) -> str:
        """Runs ``statement`` with psql (a connection that is not taskito's)."""
        done = subprocess.run(
            ["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", self.db_url, "-c", statement],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def kill_connections(self) -> int:
        """pg_terminate_backend of every taskito connection on the schema."""
        return int(
            self.sql(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                f"WHERE application_name = 'taskito {self.schema}'"
            )
        )

    def deadlocks(self) -> int:
        return int(self.sql("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"))


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[PgCluster]:
    with scratch_schema() as options:
        c = PgCluster(tmp_path, db_url=options["db_url"], schema=options["schema"])
        try:
            yield c
        finally:
            c.stop_all()


@pytest.fixture
def producer(pg: PgCluster) -> Iterator[Queue]:
    """The test's own Queue on the cluster's schema, knowing the task names."""
    q = Queue(db_url=pg.db_url, schema=pg.schema, lease_duration=1.0, heartbeat_interval=0.2)
    for name in ("record", "work"):
        q.task(name=name, retry_backoff=0)(_placeholder)
    yield q
    q.close()


def _placeholder(*args: Any) -> None:
    raise AssertionError("runs only in the worker processes")


def report(name: str, **figures: object) -> None:
    print(f"\n[{name}] " + " ".join(f"{k}={v}" for k, v in figures.items()))


PRODUCER = """
import sys
from taskito import Queue

q = Queue(db_url=sys.argv[1], schema=sys.argv[2])
record = q.task(name="record", retry_backoff=0)(lambda n: n)
base = int(sys.argv[3])
ids = []
# Half in map() batches, half one by one: both kinds of write contend.
for start in range(0, 5000, 500):
    ids += [j.id for j in record.map([(base + i,) for i in range(start, start + 500)])]
for i in range(5000, 10000):
    ids.append(record.delay(base + i).id)
assert len(set(ids)) == 10000
print("enqueued", len(ids))
q.close()
"""


def overlapping(runs: list[tuple[str, int, int, float, float]]) -> list[str]:
    """Jobs two of whose attempts ran at the same time."""
    by_job: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
    for job_id, _, _, started, ended in runs:
        by_job[job_id].append((started, ended))
    clashes = []
    for job_id, spans in by_job.items():
        spans.sort()
        if any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans)):
            clashes.append(job_id)
    return clashes


def test_four_workers_two_producers_every_job_once_while_connections_are_killed(
    pg: PgCluster, producer: Queue
) -> None:
    total = 20_000
    deadlocks_before = pg.deadlocks()
    workers = [pg.start_worker() for _ in range(4)]
    script = pg.tmp / "produce.py"
    script.write_text(textwrap.dedent(PRODUCER))
    started = time.monotonic()
    producers = [
        subprocess.Popen(
            [sys.executable, str(script), pg.db_url, pg.schema, str(base)],
            cwd=REPO,
            env=pg.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for base in (0, 100_000)
    ]
    # Three times during the run, every taskito connection is killed.
    killed = []
    for share in (0.2, 0.5, 0.8):
        wait_until(lambda s=share: producer.stats()["completed"] >= total * s, 120, f"{share:.0%} done")
        killed.append(pg.kill_connections())
    outputs = [p.communicate(timeout=120) for p in producers]
    for p, (out, err) in zip(producers, outputs, strict=True):
        assert p.returncode == 0, err
        assert out.strip() == "enqueued 10000"
    wait_until(lambda: producer.stats()["completed"] == total, 120, "every job")
    elapsed = time.monotonic() - started

    runs = pg.runs()
    per_job = collections.Counter(job_id for job_id, *_ in runs)
    assert len(per_job) == total, "lost jobs"
    assert not overlapping(runs), "a job ran twice at the same time"
    # A job runs again only when a killed connection took its claim's answer
    # with it: its lease then ran out and it was recovered (WorkerLost).
    rerun = [job_id for job_id, n in per_job.items() if n > 1]
    for job_id in rerun:
        assert [e["type"] for e in producer.get_job(job_id).errors] == ["WorkerLost"] * (per_job[job_id] - 1)
    assert {pid for _, _, pid, _, _ in runs} == {w.pid for w in workers}, "every worker took part"
    assert producer.stats() == {**producer.stats(), "complete": total, "dead": 0, "failed": 0}
    assert pg.deadlocks() == deadlocks_before, "deadlocks in the server"
    logs = pg.logs() + "".join(err for _, err in outputs)
    assert "deadlock" not in logs and "lock timeout" not in logs and "Traceback" not in logs, logs[-3000:]
    assert all(n > 0 for n in killed), killed
    report(
        "4 workers x 2 producers, connections killed 3x",
        jobs=total,
        lost=0,
        ran_twice=len(rerun),
        killed=killed,
        seconds=f"{elapsed:.2f}",
    )


def test_kill_9_reruns_only_the_killed_workers_jobs(pg: PgCluster, producer: Queue) -> None:
    total = 3000
    victim = pg.start_worker()
    survivor = pg.start_worker()
    jobs = producer.tasks["work"].map([(i, 0.002) for i in range(total)])
    wait_until(lambda: producer.stats()["completed"] >= total // 3, 60, "a third of the jobs")
    victim.kill()
    killed_at = time.time()
    wait_until(lambda: producer.stats()["completed"] == total, 120, "every job")
    runs = collections.Counter(job_id for job_id, *_ in pg.runs())
    assert set(runs) == {j.id for j in jobs}, "every job ran"
    records = [j.to_dict() for j in producer.list_jobs(status="complete", limit=total)]
    recovered = {r["id"] for r in records if (r["error"] or "").startswith("WorkerLost")}
    assert recovered, "the victim held jobs when it was killed"
    assert all(r["attempt"] == 2 for r in records if r["id"] in recovered)
    rerun = {job_id for job_id, n in runs.items() if n > 1}
    assert rerun <= recovered
    assert {(a, p) for j, a, p, _, _ in pg.runs() if j in recovered and a == 2} <= {(2, survivor.pid)}
    report(
        "kill -9",
        jobs=total,
        recovered=len(recovered),
        ran_twice=len(rerun),
        recovery_s=f"{max(r['finished_at'] for r in records if r['id'] in recovered) - killed_at:.2f}",
    )


def test_a_worker_whose_clock_is_ten_minutes_off_steals_no_lease_and_delays_no_job(
    pg: PgCluster, producer: Queue
) -> None:
    # A has the right time; B's clock is 10 minutes ahead (to it every lease
    # looks expired, every delayed job due), C's 10 minutes behind (to it
    # nothing is due yet).
    pg.start_worker(threads=2)
    pg.start_worker(2, TASKITO_TEST_CLOCK_SKEW="600")
    pg.start_worker(2, TASKITO_TEST_CLOCK_SKEW="-600")
    wait_until(lambda: len(producer.workers()) == 3, 30, "three workers")
    # Long jobs whose 1 s leases must be renewed by whoever runs them...
    long = producer.tasks["work"].map([(i, 2.5) for i in range(4)])
    # ...and delayed ones, due in 1.5 s by the database's clock.
    delayed = [producer.tasks["record"].apply_async((i,), delay=1.5) for i in range(12)]
    for job in long + delayed:
        job.result(timeout=60)
    for job in long:
        record = job.to_dict()
        assert (record["attempt"], record["error"]) == (1, None), "a live lease was taken"
    lateness = []
    for job in delayed:
        record = job.to_dict()
        waited = record["started_at"] - record["created_at"]
        assert waited >= 1.5 - 0.01, f"ran {1.5 - waited:.2f}s early"
        lateness.append(waited - 1.5)
    assert max(lateness) < 1.5, f"ran {max(lateness):.2f}s late"
    runs = collections.Counter(job_id for job_id, *_ in pg.runs())
    assert max(runs.values()) == 1
    report(
        "clock skew +-600 s",
        long_jobs=len(long),
        stolen=0,
        delayed=len(delayed),
        worst_late_s=f"{max(lateness):.3f}",
    )


OPENER = """
import os, sys, time
from taskito import Queue

# All start together: wait for the go file.
while not os.path.exists(sys.argv[3]):
    time.sleep(0.001)
Queue(db_url=sys.argv[1], schema=sys.argv[2]).close()
print("opened")
"""


def test_twenty_processes_starting_at_once_on_an_empty_database_migrate_once(pg: PgCluster) -> None:
    script = pg.tmp / "open.py"
    script.write_text(textwrap.dedent(OPENER))
    go = pg.tmp / "go"
    openers = [
        subprocess.Popen(
            [sys.executable, str(script), pg.db_url, pg.schema, str(go)],
            cwd=REPO,
            env=pg.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(20)
    ]
    threading.Event().wait(1.0)  # let every interpreter reach its wait
    go.touch()
    for opener in openers:
        out, err = opener.communicate(timeout=120)
        assert opener.returncode == 0 and out.strip() == "opened", err
    assert pg.sql(f'SELECT count(*) FROM "{pg.schema}".schema_version') == "1"
    tables = pg.sql(f"SELECT count(*) FROM pg_tables WHERE schemaname = '{pg.schema}'")
    # jobs, job_errors, workers, known_tasks, periodic, rate_limits, job_dependencies,
    # unique_keys, job_expiry, schema_version
    assert tables == "10"
    report("20 first starts", processes=20, errors=0)
