"""Throughput of the real engine through the pytest plugin's fixtures.

    pytest benchmarks --taskito-workers=8 --benchmark-only [--taskito-db=file]

Each benchmark puts its rate in ``extra_info["jobs_per_s"]`` (from the
median round), shown by ``--benchmark-json`` and ``--benchmark-columns``.
The machine is shared and noisy: compare rates within one run.
"""

from __future__ import annotations

from typing import Any

from pytest_benchmark.fixture import BenchmarkFixture

from pytest_taskito import TaskitoWorker
from taskito import Queue

JOBS = 2_000
ROUNDS = 5


def noop(x: int) -> int:
    return x


def record_rate(benchmark: BenchmarkFixture, jobs_per_round: int, **info: Any) -> None:
    # No stats when benchmarks are disabled (--benchmark-disable runs each once).
    if benchmark.stats is not None:
        benchmark.extra_info["jobs_per_s"] = round(jobs_per_round / benchmark.stats.stats.median)
    benchmark.extra_info.update(jobs_per_round=jobs_per_round, **info)


def test_enqueue_with_map(benchmark: BenchmarkFixture, queue: Queue) -> None:
    task = queue.task(name="noop")(noop)
    args = [(i,) for i in range(JOBS)]
    jobs = benchmark.pedantic(task.map, args=(args,), rounds=ROUNDS, warmup_rounds=1)
    assert len(jobs) == JOBS
    record_rate(benchmark, JOBS, db=queue.db_path)


def test_enqueue_and_process(benchmark: BenchmarkFixture, queue: Queue, worker: TaskitoWorker) -> None:
    task = queue.task(name="noop")(noop)
    args = [(i,) for i in range(JOBS)]

    def enqueue_and_wait() -> None:
        task.map(args)
        worker.wait_idle()

    benchmark.pedantic(enqueue_and_wait, rounds=ROUNDS, warmup_rounds=1)
    stats = queue.stats()
    assert stats["completed"] == sum(stats.values()) > 0
    record_rate(benchmark, JOBS, workers=worker.threads, db=queue.db_path)


def test_round_trip(benchmark: BenchmarkFixture, queue: Queue, worker: TaskitoWorker) -> None:
    task = queue.task(name="noop")(noop)

    def round_trip() -> int:
        value: int = task.delay(1).result(timeout=10)
        return value

    assert benchmark(round_trip) == 1
    record_rate(benchmark, 1, workers=worker.threads, db=queue.db_path)
