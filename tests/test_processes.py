"""Crash recovery and many processes on one SQLite file, with real worker
processes (`taskito worker`) killed, stopped and signalled.

Each test prints one summary line (run with -s to see them): jobs, lost,
duplicated runs and recovery time.
"""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskito import Queue, StorageError, TaskFailedError
from tests.cluster import REPO, wait_until
from tests.cluster import Cluster as BaseCluster

pytestmark = pytest.mark.slow


class Cluster(BaseCluster):
    """Worker processes serving tests/apps/ledger_app.py on one database."""

    def ledger_lines(self) -> list[tuple[str, int, int]]:
        return [(job_id, int(attempt), int(pid)) for job_id, attempt, pid in self.ledger_rows()]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    yield c
    c.stop_all()


@pytest.fixture
def producer(cluster: Cluster) -> Iterator[Queue]:
    """The test's own Queue on the cluster's database, knowing the task names."""
    q = Queue(cluster.db, lease_duration=1.0, heartbeat_interval=0.2)
    for name in ("record", "work", "suicide", "held"):
        q.task(name=name, retry_backoff=0, max_retries=2 if name == "suicide" else None)(_placeholder)
    yield q
    q.close()


def _placeholder(*args: Any) -> None:
    raise AssertionError("runs only in the worker processes")


def stop_outside_a_transaction(proc: subprocess.Popen[str], db: str) -> None:
    """SIGSTOPs ``proc``, at a moment when it does not hold the database's
    write lock: a process frozen inside a write transaction would keep every
    other process from writing (as a real frozen process would)."""
    with Queue(db, busy_timeout=0.2) as probe:
        deadline = time.monotonic() + 30
        while True:
            proc.send_signal(signal.SIGSTOP)
            try:
                probe.cancel_job("00000000000000aa")  # any write transaction
                return
            except StorageError:
                assert time.monotonic() < deadline, "never caught the worker outside a transaction"
                proc.send_signal(signal.SIGCONT)
                threading.Event().wait(0.01)  # let it finish the transaction


def report(name: str, **figures: object) -> None:
    print(f"\n[{name}] " + " ".join(f"{k}={v}" for k, v in figures.items()))


def test_kill_9_loses_nothing_and_reruns_only_the_killed_workers_jobs(
    cluster: Cluster, producer: Queue
) -> None:
    total = 3000
    victim = cluster.start_worker()
    survivor = cluster.start_worker()
    jobs = producer.tasks["work"].map([(i, 0.002) for i in range(total)])
    wait_until(lambda: producer.stats()["completed"] >= total // 3, 60, "a third of the jobs")
    victim.kill()
    killed_at = time.time()
    wait_until(lambda: producer.stats()["completed"] == total, 120, "every job")

    stats = producer.stats()
    assert stats == {**stats, "complete": total, "running": 0, "pending": 0, "dead": 0}
    rows = cluster.ledger_lines()
    runs = collections.Counter(job_id for job_id, _, _ in rows)
    assert set(runs) == {j.id for j in jobs}, "every job ran"
    # The jobs the victim held when it died were recovered once their lease
    # ran out: each failed as WorkerLost and completed on its second attempt,
    # on the survivor. Nothing else ran twice.
    records = [j.to_dict() for j in producer.list_jobs(status="complete", limit=total)]
    recovered = [r for r in records if (r["error"] or "").startswith("WorkerLost")]
    assert recovered, "the victim held jobs when it was killed"
    assert all(r["attempt"] == 2 for r in recovered)
    assert len(recovered) <= 16, f"{len(recovered)} recovered: more than the victim can have held"
    recovered_ids = {r["id"] for r in recovered}
    rerun = {job_id for job_id, n in runs.items() if n > 1}
    assert rerun <= recovered_ids
    assert all(runs[j] == 2 for j in rerun)
    assert {(a, p) for j, a, p in rows if j in recovered_ids and a == 2} <= {(2, survivor.pid)}
    assert all(a == 1 for j, a, _ in rows if j not in recovered_ids)
    assert survivor.poll() is None
    report(
        "kill -9",
        jobs=total,
        lost=total - len(runs),
        recovered=len(recovered),
        ran_twice=len(rerun),
        recovery_s=f"{max(r['finished_at'] for r in recovered) - killed_at:.2f}",
    )


def test_a_stopped_workers_late_completion_is_rejected(cluster: Cluster, producer: Queue) -> None:
    flag = cluster.tmp / "go"
    sleeper = cluster.start_worker(threads=1)
    job = producer.tasks["held"].delay(str(flag))
    wait_until(lambda: len(cluster.ledger_lines()) == 1, 60, "the first attempt to start")
    stop_outside_a_transaction(sleeper, cluster.db)
    stopped_at = time.monotonic()
    try:
        # The lease (1 s) runs out; another worker takes the job over.
        cluster.start_worker(threads=1)
        assert job.result(timeout=60, poll_interval=0.01) == "second attempt"
        takeover = time.monotonic() - stopped_at
    finally:
        flag.touch()
        sleeper.send_signal(signal.SIGCONT)
    # The first attempt now finishes and reports; it must be discarded.
    wait_until(lambda: "discarded the late outcome of attempt 1" in cluster.logs(), 60, "the stale outcome")
    assert job.result(timeout=5) == "second attempt"
    assert job.to_dict()["attempt"] == 2
    assert [a for _, a, _ in cluster.ledger_lines()] == [1, 2]
    report("SIGSTOP", jobs=1, lost=0, duplicated=0, takeover_s=f"{takeover:.2f}", stale_rejected=True)


def test_a_task_that_kills_its_worker_dies_after_max_retries_plus_one_attempts(
    cluster: Cluster, producer: Queue
) -> None:
    job = producer.tasks["suicide"].delay()
    restarts = 0
    deadline = time.monotonic() + 120
    while job.status != "dead":
        assert time.monotonic() < deadline, "the job never reached the dead letters"
        live = [p for p in cluster.procs if p.poll() is None]
        if not live:
            # Supervisor: whenever the worker dies, start another one.
            cluster.start_worker(threads=1)
            restarts += 1
        # Wait a little for the job to change; it ends failed for good.
        with pytest.raises((TimeoutError, TaskFailedError)):
            job.result(timeout=0.05, poll_interval=0.01)
    attempts = [a for _, a, _ in cluster.ledger_lines()]
    assert attempts == [1, 2, 3], "max_retries=2: exactly three runs"
    errors = job.errors
    assert [e["type"] for e in errors] == ["WorkerLost"] * 3
    report("self-kill", max_retries=2, attempts=len(attempts), worker_restarts=restarts)


PRODUCER = """
import sys
from taskito import Queue

q = Queue(sys.argv[1])
record = q.task(name="record", retry_backoff=0)(lambda n: n)
ids = []
base = int(sys.argv[2])
# Half in map() batches, half one by one: both kinds of write contend.
for start in range(0, 5000, 100):
    ids += [j.id for j in record.map([(base + i,) for i in range(start, start + 100)])]
for i in range(5000, 10000):
    ids.append(record.delay(base + i).id)
assert len(set(ids)) == 10000
print("enqueued", len(ids))
q.close()
"""


def test_two_producers_and_two_workers_on_one_file(cluster: Cluster, producer: Queue) -> None:
    script = cluster.tmp / "produce.py"
    script.write_text(textwrap.dedent(PRODUCER))
    workers = [cluster.start_worker(), cluster.start_worker()]
    started = time.monotonic()
    producers = [
        subprocess.Popen(
            [sys.executable, str(script), cluster.db, str(base)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for base in (0, 100_000)
    ]
    outputs = [p.communicate(timeout=120) for p in producers]
    for p, (out, err) in zip(producers, outputs, strict=True):
        assert p.returncode == 0, err
        assert out.strip() == "enqueued 10000"
        assert "locked" not in err
    wait_until(lambda: producer.stats()["completed"] == 20_000, 120, "20,000 completions")
    elapsed = time.monotonic() - started
    rows = cluster.ledger_lines()
    runs = collections.Counter(job_id for job_id, _, _ in rows)
    assert len(runs) == 20_000, "lost jobs"
    assert len(rows) == 20_000, "a job ran twice"
    assert {a for _, a, _ in rows} == {1}
    assert {pid for _, _, pid in rows} == {w.pid for w in workers}, "both workers took part"
    logs = cluster.logs()
    assert "locked" not in logs and "Traceback" not in logs and "ERROR" not in logs, logs[-2000:]
    assert producer.stats() == {
        "pending": 0,
        "claimed": 0,
        "running": 0,
        "complete": 20_000,
        "failed": 0,
        "dead": 0,
        "cancelled": 0,
        "expired": 0,
    }
    report("2 producers x 2 workers", jobs=20_000, lost=0, duplicated=0, seconds=f"{elapsed:.2f}")


def test_sigterm_finishes_or_releases_in_flight_jobs(cluster: Cluster, producer: Queue) -> None:
    total = 200
    worker = cluster.start_worker()
    jobs = producer.tasks["work"].map([(i, 0.02) for i in range(total)])
    wait_until(lambda: producer.stats()["completed"] >= 20, 60, "some completions")
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=30)
    assert worker.returncode == 0
    stats = producer.stats()
    assert stats["running"] == 0, "a job stranded as running"
    assert stats["completed"] + stats["pending"] == total
    assert stats["pending"] > 0, "the test meant to stop the worker mid-run"
    finished_before = stats["completed"]
    # Whatever was handed back runs on the next worker, once.
    cluster.start_worker()
    wait_until(lambda: producer.stats()["completed"] == total, 60, "the rest")
    runs = collections.Counter(job_id for job_id, _, _ in cluster.ledger_lines())
    assert set(runs) == {j.id for j in jobs}
    assert max(runs.values()) == 1, "a job ran twice"
    assert {a for _, a, _ in cluster.ledger_lines()} == {1}, "released jobs keep their attempt"
    report("SIGTERM", jobs=total, lost=0, duplicated=0, finished_before_stop=finished_before)
