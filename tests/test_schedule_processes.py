"""Periodic tasks and rate limits across real worker processes (`taskito
worker`) on one SQLite file, serving tests/apps/schedule_app.py: every tick
runs once however many processes serve the schedule, ticks missed while no
worker ran follow catch_up, and a rate limit holds across processes while
other tasks drain.

Each test prints one summary line (run with -s to see it).
"""

from __future__ import annotations

import collections
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskito import Queue
from tests.cluster import Cluster, wait_until

pytestmark = pytest.mark.slow

SECOND = 1.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, app="tests.apps.schedule_app:queue")
    yield c
    c.stop_all()


@pytest.fixture
def producer(cluster: Cluster) -> Iterator[Queue]:
    """The test's own Queue on the cluster's database, knowing the task names."""
    q = Queue(cluster.db)
    for name in ("tick", "limited", "free"):
        q.task(name=name, retry_backoff=0)(_placeholder)
    yield q
    q.close()


def _placeholder() -> None:
    raise AssertionError("runs only in the worker processes")


def runs(cluster: Cluster, task: str) -> collections.Counter[str]:
    """How many times each job of ``task`` ran, from the ledger."""
    return collections.Counter(row[0] for row in cluster.ledger_rows() if row[3] == task)


def jobs(producer: Queue, task: str) -> list[dict[str, Any]]:
    return [j.to_dict() for j in producer.list_jobs(task_name=task, limit=100_000)]


def stop(cluster: Cluster) -> None:
    """Stops every worker gracefully (SIGTERM) and waits for them."""
    for proc in cluster.procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in cluster.procs:
        assert proc.wait(timeout=60) == 0, cluster.logs()


def ran_ticks(cluster: Cluster, producer: Queue) -> list[float]:
    """The tick (due time) of every tick job that ran, in order."""
    ran = runs(cluster, "tick")
    return sorted(j["scheduled_at"] for j in jobs(producer, "tick") if j["id"] in ran)


def test_three_workers_run_every_tick_once(cluster: Cluster, producer: Queue) -> None:
    for _ in range(3):
        cluster.start_worker(threads=2)
    # The measured window: ten seconds of ticks, from the first that ran.
    wait_until(lambda: len(ran_ticks(cluster, producer)) >= 1, 60, "the first tick")
    wait_until(
        lambda: (t := ran_ticks(cluster, producer))[-1] - t[0] >= 10 * SECOND,
        60,
        "ten seconds of ticks",
    )
    stop(cluster)
    ran = runs(cluster, "tick")
    stored = jobs(producer, "tick")
    ticks = collections.Counter(j["scheduled_at"] for j in stored)
    assert max(ticks.values()) == 1, "a tick was enqueued twice"
    assert all(n == 1 for n in ran.values()), f"a tick ran twice: {ran}"
    done = sorted(j["scheduled_at"] for j in stored if j["id"] in ran)
    first, last = done[0], done[-1]
    expected = round(last - first) + 1
    assert done == [first + i for i in range(expected)], "every tick between start and stop ran once"
    assert all(j["attempt"] == 1 and j["status"] == "complete" for j in stored if j["id"] in ran)
    # Only ticks stored ahead (within a second) of the stop are left.
    assert all(j["scheduled_at"] > last for j in stored if j["id"] not in ran)
    pids = {row[2] for row in cluster.ledger_rows()}
    report("3 workers, 1 s schedule", ticks=len(done), ran_twice=0, processes_that_ran_ticks=len(pids))


@pytest.mark.parametrize("catch_up", ["one", "all", "none"])
def test_ticks_missed_while_no_worker_ran_follow_catch_up(
    cluster: Cluster, producer: Queue, catch_up: str
) -> None:
    cluster.start_worker(1, TASKITO_TEST_CATCH_UP=catch_up)
    wait_until(lambda: len(ran_ticks(cluster, producer)) >= 2, 60, "two ticks")
    stop(cluster)
    stopped_at = time.time()
    # The downtime is what is measured: four seconds without a worker.
    wait_until(lambda: time.time() >= stopped_at + 4, 10, "four seconds of downtime")
    restarted_at = time.time()
    cluster.start_worker(1, TASKITO_TEST_CATCH_UP=catch_up)
    wait_until(
        lambda: any(t > restarted_at + 1 for t in ran_ticks(cluster, producer)),
        60,
        "a tick after the restart",
    )
    stop(cluster)
    stored = jobs(producer, "tick")
    ticks = sorted(j["scheduled_at"] for j in stored)
    assert len(set(ticks)) == len(ticks), "a tick was enqueued twice"
    # Caught up: stored more than a second after its tick (ticks on time are
    # stored up to a second before theirs).
    late = [j for j in stored if j["created_at"] - j["scheduled_at"] > SECOND]
    missed = [t for t in range(round(stopped_at) + 2, round(restarted_at) - 1) if float(t) not in ticks]
    if catch_up == "all":
        assert len(late) >= 2, late
        assert ticks == [ticks[0] + i for i in range(len(ticks))], "every missed tick ran"
    elif catch_up == "one":
        assert len(late) == 1, late
        assert missed, "the other missed ticks did not run"
    else:
        assert late == []
        assert missed, "missed ticks did not run"
    assert all(n == 1 for n in runs(cluster, "tick").values())
    report(f"catch_up={catch_up}", downtime_s=f"{restarted_at - stopped_at:.1f}", caught_up=len(late))


def test_a_rate_limit_holds_across_two_workers_while_other_jobs_drain(
    cluster: Cluster, producer: Queue
) -> None:
    limited = producer.tasks["limited"].map([() for _ in range(300)])
    free = producer.tasks["free"].map([() for _ in range(5000)])
    for _ in range(2):
        cluster.start_worker(threads=2)

    def started(task: str) -> list[float]:
        return sorted(j["started_at"] for j in jobs(producer, task) if j["started_at"] is not None)

    wait_until(lambda: len(started("limited")) > 0, 60, "the first limited job")
    window_start = started("limited")[0]
    # The measured window: five seconds from the first limited start.
    wait_until(lambda: started("limited")[-1] >= window_start + 5, 60, "five seconds of limited jobs")
    stop(cluster)
    limited_jobs = jobs(producer, "limited")
    in_window = [
        j for j in limited_jobs if j["started_at"] is not None and j["started_at"] < window_start + 5
    ]
    assert 90 <= len(in_window) <= 110, len(in_window)
    free_jobs = jobs(producer, "free")
    assert all(j["status"] == "complete" for j in free_jobs), "the unlimited task drained"
    drained = max(j["finished_at"] for j in free_jobs) - min(j["started_at"] for j in free_jobs)
    assert drained < 3.0, f"5000 unlimited jobs took {drained:.2f}s beside the limited ones"
    stats = producer.stats()
    assert stats["failed"] == 0 and stats["dead"] == 0
    assert all(j["attempt"] <= 1 for j in limited_jobs + free_jobs), "no attempt spent waiting"
    ran = runs(cluster, "limited")
    assert all(n == 1 for n in ran.values())
    assert len(limited) == 300 and len(free) == 5000
    report(
        "rate limit 20/s, 2 processes",
        limited_in_5s=len(in_window),
        unlimited=len(free_jobs),
        unlimited_rate=f"{len(free_jobs) / drained:.0f}/s",
    )


def report(name: str, **figures: object) -> None:
    print(f"\n[{name}] " + " ".join(f"{k}={v}" for k, v in figures.items()))
