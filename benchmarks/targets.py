"""The engine's speed targets, each beside baselines measured in the same run.

    python -m benchmarks.targets [--jobs 10000] [--latency-samples 1000]

For noop tasks on ``:memory:`` and on a WAL file it measures:
- enqueue through ``map()``;
- processing of a pre-loaded batch with the default workers and with 8;
- the ``delay().result()`` round trip in the worker's process (p50, p99);
and the same work done by a plain ``ThreadPoolExecutor(2)`` and, when
installed, by Huey's ``SqliteHuey`` (one commit per job, polling consumer).
Machines here are shared and noisy: read the ratios, not the absolutes.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

from benchmarks.cell import percentile
from taskito import Queue

TARGETS = {
    "enqueue_per_s": 250_000,
    "process_per_s": 50_000,
    "eight_vs_default": 0.90,
    "p50_ms": 0.3,
    "p99_ms": 1.5,
}


def noop(x: int) -> int:
    return x


def wait_for_completions(queue: Queue, total: int, timeout: float = 300) -> None:
    """Returns once `total` jobs are complete, counted in storage."""
    deadline = time.monotonic() + timeout
    while queue.stats()["completed"] < total:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {queue.stats()} after {timeout}s")
        time.sleep(0.0005)


def taskito_run(db_path: str, workers: int, jobs: int, samples: int) -> dict[str, float]:
    with Queue(db_path, workers=workers) as queue:
        task = queue.task(name="noop")(noop)
        # Warm-up: first claims, statement caches, page cache.
        queue.start_worker()
        task.map([(i,) for i in range(500)])[-1].result(timeout=60)
        wait_for_completions(queue, 500)
        queue.shutdown()

        args = [(i,) for i in range(jobs)]
        start = time.perf_counter()
        batch = task.map(args)
        enqueue_s = time.perf_counter() - start
        assert len(batch) == jobs

        start = time.perf_counter()
        queue.start_worker()
        wait_for_completions(queue, 500 + jobs)
        process_s = time.perf_counter() - start

        latencies = []
        for i in range(samples + 50):
            t0 = time.perf_counter()
            task.delay(i).result(timeout=10)
            if i >= 50:
                latencies.append(time.perf_counter() - t0)
        queue.shutdown()
    return {
        "enqueue_per_s": jobs / enqueue_s,
        "process_per_s": jobs / process_s,
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
    }


def threadpool_run(jobs: int, samples: int) -> dict[str, float]:
    with ThreadPoolExecutor(2) as pool:
        wait([pool.submit(noop, i) for i in range(500)])
        start = time.perf_counter()
        wait([pool.submit(noop, i) for i in range(jobs)])
        process_s = time.perf_counter() - start
        latencies = []
        for i in range(samples):
            t0 = time.perf_counter()
            pool.submit(noop, i).result()
            latencies.append(time.perf_counter() - t0)
    return {
        "process_per_s": jobs / process_s,
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
    }


def huey_run(db_path: str, jobs: int, samples: int) -> dict[str, float] | None:
    try:
        from huey import SqliteHuey
    except ImportError:
        return None
    huey = SqliteHuey(filename=db_path)
    task = huey.task()(noop)
    start = time.perf_counter()
    results = [task(i) for i in range(jobs)]
    enqueue_s = time.perf_counter() - start
    consumer = huey.create_consumer(workers=2, worker_type="thread", initial_delay=0.001, max_delay=0.05)
    start = time.perf_counter()
    consumer.start()
    try:
        deadline = time.monotonic() + 300
        while huey.pending_count() > 0 or huey.result_count() < jobs:
            if time.monotonic() > deadline:
                raise TimeoutError("huey did not drain")
            time.sleep(0.0005)
        process_s = time.perf_counter() - start
        for r in results[:10]:
            r.get(blocking=True, timeout=10)
        latencies = []
        for i in range(min(samples, 200)):
            t0 = time.perf_counter()
            task(i).get(blocking=True, timeout=10, backoff=1.0, max_delay=0.0005)
            latencies.append(time.perf_counter() - t0)
    finally:
        consumer.stop(graceful=True)
    return {
        "enqueue_per_s": jobs / enqueue_s,
        "process_per_s": jobs / process_s,
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
    }


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:,.3f} ms" if unit == "ms" else f"{value:,.0f}/s"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--latency-samples", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; the median is shown")
    args = parser.parse_args()
    default_workers = os.cpu_count() or 1

    def median_of(run: object, *a: object) -> dict[str, float]:
        runs = [run(*a) for _ in range(args.repeat)]  # type: ignore[operator]
        return {k: statistics.median(r[k] for r in runs) for k in runs[0]}

    rows: list[tuple[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        fresh = (str(Path(tmp) / f"taskito{i}.db") for i in itertools.count())
        for db in (":memory:", "file"):
            for workers in (default_workers, 8):
                runs = [
                    taskito_run(
                        db if db == ":memory:" else next(fresh), workers, args.jobs, args.latency_samples
                    )
                    for _ in range(args.repeat)
                ]
                result = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                rows.append((f"taskito {db} workers={workers}", result))
        rows.append(("ThreadPoolExecutor(2)", median_of(threadpool_run, args.jobs, args.latency_samples)))
        huey = huey_run(str(Path(tmp) / "huey.db"), args.jobs, args.latency_samples)
        rows.append(("huey SqliteHuey workers=2", huey) if huey else ("huey (not installed)", {}))

    baseline = rows[-2][1]["process_per_s"]
    print(f"noop tasks, {args.jobs:,} jobs, median of {args.repeat}, {default_workers} CPUs\n")
    print(f"{'engine':<32} {'enqueue map()':>15} {'process':>12} {'vs pool':>8} {'p50':>10} {'p99':>10}")
    for label, r in rows:
        ratio = f"{r['process_per_s'] / baseline:.2f}x" if "process_per_s" in r else "-"
        print(
            f"{label:<32} {fmt(r.get('enqueue_per_s'), '/s'):>15} {fmt(r.get('process_per_s'), '/s'):>12} "
            f"{ratio:>8} {fmt(r.get('p50_ms'), 'ms'):>10} {fmt(r.get('p99_ms'), 'ms'):>10}"
        )

    print("\ntargets (2 cores): enqueue >= 250,000/s, process >= 50,000/s, 8 workers >= 90% of default,")
    print("p50 < 0.3 ms, p99 < 1.5 ms")
    for db in (":memory:", "file"):
        default = dict(rows)[f"taskito {db} workers={default_workers}"]
        eight = dict(rows)[f"taskito {db} workers=8"]
        checks = [
            ("enqueue", default["enqueue_per_s"] >= TARGETS["enqueue_per_s"]),
            ("process", default["process_per_s"] >= TARGETS["process_per_s"]),
            ("8 workers", eight["process_per_s"] >= TARGETS["eight_vs_default"] * default["process_per_s"]),
            ("p50", default["p50_ms"] < TARGETS["p50_ms"]),
            ("p99", default["p99_ms"] < TARGETS["p99_ms"]),
        ]
        verdict = ", ".join(f"{name} {'met' if ok else 'MISSED'}" for name, ok in checks)
        print(f"  {db:<9} {verdict} (8/default = {eight['process_per_s'] / default['process_per_s']:.2f})")


if __name__ == "__main__":
    main()
