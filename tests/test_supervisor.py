"""Worker processes under a supervisor (``taskito worker --processes N``,
``queue.run_worker(processes=N, app=...)``), as real processes: a child
killed mid-run is replaced and loses no job, signals drain every child,
children that cannot start make the supervisor give up, and ``taskito
info`` shows who supervises whom."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskito import InvalidArgumentError, Queue
from taskito._supervisor import process_count
from tests.cluster import REPO, Cluster, wait_until

pytestmark = pytest.mark.slow


def children_of(supervisor: int) -> list[int]:
    """The live worker processes a supervisor started (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if (
            b"--supervised-by" in args
            and args[args.index(b"--supervised-by") + 1] == str(supervisor).encode()
        ):
            found.append(int(entry))
    return found


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    yield c
    for proc in c.procs:
        orphans = children_of(proc.pid)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for pid in orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    c.stop_all()


@pytest.fixture
def producer(cluster: Cluster) -> Iterator[Queue]:
    """The test's own Queue on the cluster's database, knowing the task names."""
    q = Queue(cluster.db, lease_duration=1.0, heartbeat_interval=0.2)
    for name in ("record", "work", "held"):
        q.task(name=name, retry_backoff=0)(_placeholder)
    yield q
    q.close()


def _placeholder(*args: Any) -> None:
    raise AssertionError("runs only in the worker processes")


def supervise(cluster: Cluster, processes: int = 2, threads: int = 2) -> subprocess.Popen[str]:
    """``taskito worker --processes`` on the ledger app, its output in the cluster's logs."""
    return cluster.start_worker(threads, "--processes", str(processes), "--workers", str(threads))


def live_pids(producer: Queue) -> set[int]:
    return {w["pid"] for w in producer.workers()}


def test_a_killed_worker_process_is_restarted_and_no_job_is_lost(cluster: Cluster, producer: Queue) -> None:
    total = 400
    supervisor = supervise(cluster)
    wait_until(lambda: len(live_pids(producer)) == 2, 60, "two worker processes")
    first = live_pids(producer)
    jobs = producer.tasks["work"].map([(i, 0.005) for i in range(total)])
    wait_until(lambda: producer.stats()["complete"] >= total // 4, 60, "a quarter of the jobs")
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: producer.stats()["complete"] == total, 120, "every job")
    stats = producer.stats()
    assert stats == {**stats, "complete": total, "running": 0, "pending": 0, "dead": 0}
    runs = collections.Counter(row[0] for row in cluster.ledger_rows())
    assert set(runs) == {job.id for job in jobs}, "every job ran"
    # Only the jobs the victim held ran twice: their leases expired and
    # another worker process ran them again.
    records = {j.id: j.to_dict() for j in jobs}
    for job_id, count in runs.items():
        if count > 1:
            assert (records[job_id]["error"] or "").startswith("WorkerLost")
    # A replacement took the victim's place.
    wait_until(
        lambda: len(live_pids(producer)) == 2 and victim not in live_pids(producer),
        60,
        "the replacement, and the victim's registration lapsing",
    )
    replacement = (live_pids(producer) - first).pop()
    logs = cluster.logs()
    assert f"worker process {victim} exited with signal SIGKILL" in logs
    assert f"worker process {replacement} started, replacing {victim}" in logs
    assert supervisor.poll() is None, "the supervisor keeps going"
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=30) == 0


def test_sigterm_to_the_supervisor_drains_every_worker_process(cluster: Cluster, producer: Queue) -> None:
    total = 200
    supervisor = supervise(cluster)
    wait_until(lambda: len(live_pids(producer)) == 2, 60, "two worker processes")
    children = live_pids(producer)
    jobs = producer.tasks["work"].map([(i, 0.02) for i in range(total)])
    wait_until(lambda: producer.stats()["complete"] >= 20, 60, "some completions")
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=60) == 0
    logs = cluster.logs()
    for pid in children:
        assert f"worker process {pid} exited with status 0" in logs, logs[-3000:]
    assert logs.count("the supervisor received SIGTERM: stopping gracefully") == 2
    assert "Traceback" not in logs
    stats = producer.stats()
    assert stats["running"] == 0 and stats["claimed"] == 0, "nothing stranded"
    assert stats["complete"] + stats["pending"] == total
    assert producer.workers() == [], "both unregistered"
    # What was handed back runs once, on the next worker.
    supervise(cluster)
    for job in jobs:
        job.result(timeout=60)
    runs = collections.Counter(row[0] for row in cluster.ledger_rows())
    assert max(runs.values()) == 1, "a job ran twice"


def test_a_second_signal_stops_every_worker_process_at_once(cluster: Cluster, producer: Queue) -> None:
    supervisor = supervise(cluster, threads=1)
    job = producer.tasks["held"].delay(str(cluster.tmp / "never"))  # runs until interrupted
    wait_until(lambda: len(cluster.ledger_rows()) == 1, 60, "the job to start")
    supervisor.send_signal(signal.SIGINT)
    wait_until(lambda: "the supervisor received SIGINT: stopping gracefully" in cluster.logs(), 30, "a stop")
    supervisor.send_signal(signal.SIGINT)
    assert supervisor.wait(timeout=60) == 130
    logs = cluster.logs()
    assert "the supervisor received SIGINT again: stopping now" in logs
    assert "exited with status 130" in logs
    record = job.to_dict()
    assert (record["status"], record["attempt"], record["started_at"]) == ("pending", 0, None)


def taskito_worker(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskito", "worker", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_an_app_that_fails_to_import_makes_the_supervisor_give_up_at_once(tmp_path: Path) -> None:
    (tmp_path / "broken_app.py").write_text("import os\n\nraise RuntimeError('no config here')\n")
    started = time.monotonic()
    proc = taskito_worker(tmp_path, "--app", "broken_app:queue", "--processes", "2")
    elapsed = time.monotonic() - started
    assert proc.returncode == 2, proc.stderr
    assert elapsed < 10, f"took {elapsed:.1f}s"
    errors = [line for line in proc.stderr.splitlines() if line.startswith("taskito: error:")]
    assert len(errors) == 1, proc.stderr
    assert re.fullmatch(
        r"taskito: error: worker process \d+ could not start: importing 'broken_app' failed: "
        r"broken_app\.py:3: RuntimeError: no config here; giving up",
        errors[0],
    ), errors[0]
    assert "gave up" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_worker_process_that_keeps_dying_at_start_up_is_given_up_on(tmp_path: Path) -> None:
    # Not an error the worker can name: it just dies, every time.
    (tmp_path / "dying_app.py").write_text("import os\n\nos._exit(3)\n")
    proc = taskito_worker(tmp_path, "--app", "dying_app:queue", "--processes", "1")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("before it started; starting another in") == 4
    assert "could not start (5 times in a row): it exited with status 3; giving up" in proc.stderr


def test_memory_databases_are_refused_for_worker_processes(tmp_path: Path) -> None:
    (tmp_path / "memory_app.py").write_text("from taskito import Queue\n\nqueue = Queue(':memory:')\n")
    proc = taskito_worker(tmp_path, "--app", "memory_app:queue", "--processes", "2")
    assert proc.returncode == 2, proc.stderr
    assert "a :memory: database is private to one process" in proc.stderr
    with Queue(":memory:") as queue, pytest.raises(InvalidArgumentError, match=":memory:"):
        queue.run_worker(processes=2, app="memory_app:queue")


def test_processes_takes_a_count_or_auto(tmp_path: Path) -> None:
    assert process_count("auto") == len(os.sched_getaffinity(0))
    assert process_count(3) == process_count("3") == 3
    for bad in (0, "0", "many", -1, True):
        with pytest.raises(InvalidArgumentError):
            process_count(bad)  # type: ignore[arg-type]
    proc = taskito_worker(tmp_path, "--app", "x:queue", "--processes", "none")
    assert proc.returncode == 2
    assert "--processes must be a positive number or 'auto'" in proc.stderr
    with Queue(str(tmp_path / "q.db")) as queue, pytest.raises(InvalidArgumentError, match="app="):
        queue.run_worker(processes=2)


def test_info_groups_worker_processes_under_their_supervisor(cluster: Cluster, producer: Queue) -> None:
    supervisor = supervise(cluster)
    wait_until(lambda: len(live_pids(producer)) == 2, 60, "two worker processes")
    env = cluster.env()
    command = [sys.executable, "-m", "taskito", "info", "--app", cluster.app]
    out = subprocess.run([*command, "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    live = json.loads(out.stdout)["live_workers"]
    assert [w["supervisor"] for w in live] == [supervisor.pid] * 2
    text = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60).stdout
    assert f"supervisor pid {supervisor.pid}: 2 worker process(es)" in text, text


SCRIPT = """
import os
import threading

from taskito import Queue

queue = Queue({db!r}, workers=1)


@queue.task(name="whose")
def whose() -> int:
    threading.Event().wait(0.01)  # a little work
    return os.getpid()


if __name__ == "__main__":
    queue.run_worker(processes=2, app="script_app:queue")
    print("returned", flush=True)
"""


def test_run_worker_with_processes_supervises_them_from_a_script(tmp_path: Path) -> None:
    db = str(tmp_path / "script.db")
    (tmp_path / "script_app.py").write_text(textwrap.dedent(SCRIPT.format(db=db)))
    # Run from elsewhere: the children still find the script's module.
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "script_app.py")], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        with Queue(db) as producer:
            whose = producer.task(name="whose")(_placeholder)
            wait_until(lambda: len(producer.workers()) == 2, 60, "two worker processes")
            children = {w["pid"] for w in producer.workers()}
            pids = {job.result(timeout=30) for job in whose.map([()] * 40)}
            assert pids <= children and proc.pid not in pids
            assert children == set(children_of(proc.pid))
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert "returned" in out
