"""The sweep end to end: tiny grids through ``python -m benchmarks``, cells in
real subprocesses, the CSV they leave."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import importlib.util
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import taskito
import taskito._native
from benchmarks.grid import Cell
from benchmarks.schema import COLUMNS, METRICS
from benchmarks.sweep import Plan, Progress, _redis_to_itself, run_cell

ROOT = Path(__file__).resolve().parent.parent.parent
HUEY = importlib.util.find_spec("huey") is not None


def bench(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def git_head() -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_tiny_sweep_writes_one_row_per_cell_with_provenance(tmp_path: Path) -> None:
    engines = ["taskito", "huey"] if HUEY else ["taskito"]
    out = tmp_path / "tiny.csv"
    args = ["sweep", "--engines", ",".join(engines), "--db", "memory,file", "--workers", "1,2"]
    args += ["--placement", "thread"]
    args += ["--jobs", "30", "--repeat", "1", "--samples", "5", "--warmup", "5", "--out", str(out)]
    proc = bench(*args)
    assert proc.returncode == 0, proc.stderr

    columns, rows = read(out)
    assert columns == list(COLUMNS)
    assert len(rows) == len(engines) * 2 * 2
    cells = {(r["engine"], r["db"], r["workers"]) for r in rows}
    assert cells == {(e, db, w) for e in engines for db in ("memory", "file") for w in ("1", "2")}
    head = git_head()
    native = Path(taskito._native.__file__ or "")
    for row in rows:
        assert row["status"] == "ok", row["error"]
        assert (row["task"], row["jobs"], row["repetition"], row["latency_samples"]) == (
            "noop",
            "30",
            "1",
            "5",
        )
        assert row["git_commit"] == head
        assert row["git_dirty"] in ("True", "False")
        assert row["cpu_count"] == str(os.cpu_count())
        assert row["cpu_model"]
        assert row["os"] == platform.platform()
        assert row["python_version"] == platform.python_version()
        assert row["python_executable"] == sys.executable
        assert row["sweep_id"] == rows[0]["sweep_id"]
        assert row["command"].startswith("python -m benchmarks sweep --engines")
        assert row["backend"] == {"memory": "memory", "file": "sqlite"}[row["db"]]
        assert float(row["drain_per_s"]) > 0
        # The drain's start-up and its rate, from completion times: together
        # no longer than the cell.
        startup, drain_s = float(row["first_completion_s"]), (30 - 1) / float(row["drain_per_s"])
        assert startup > 0 and startup + drain_s < float(row["cell_seconds"])
        assert float(row["enqueue_map_per_s"]) > 0
        assert float(row["enqueue_delay_per_s"]) > 0
        assert 0 < float(row["latency_rtt_p50_ms"]) <= float(row["latency_rtt_p99_ms"])
        # Python alone is more than 5 MiB; a PSS total of 1 GiB would be a sum gone wrong.
        assert 5 < float(row["peak_pss_mb"]) < 1024
        assert row["failures"] == "0"
    for row in rows:
        if row["engine"] == "taskito":
            assert row["engine_version"] == taskito.__version__
            # Which build ran: the tree's package and a hash of its compiled engine.
            assert row["engine_path"] == str((ROOT / "taskito").resolve())
            assert f"sha256:{sha256(native)[:16]} mtime " in row["engine_build"]
            assert row["durability"] == {"memory": "memory", "file": "normal"}[row["db"]]
            # taskito stores its timestamps: enqueue to finish is at most the round trip.
            assert 0 < float(row["latency_stored_p50_ms"]) <= float(row["latency_rtt_p99_ms"])

    # Progress while it ran, then the comparison table.
    assert f"[1/{len(rows)}] taskito memory workers=1 noop" in proc.stderr
    assert "ETA" in proc.stderr
    assert "| taskito  | memory |" in proc.stdout or "| taskito | memory |" in proc.stdout


def test_an_engine_that_cannot_run_is_skipped_with_its_reason(tmp_path: Path) -> None:
    out = tmp_path / "skip.csv"
    # Nothing listens on port 1: Celery is skipped whether or not it is installed.
    proc = bench(
        "--engines", "taskito,celery", "--db", "memory,redis", "--placement", "thread", "--workers", "1",
        "--jobs", "10",
        "--repeat", "2", "--samples", "2", "--warmup", "2", "--redis", "redis://127.0.0.1:1",
        "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    _, rows = read(out)
    by_engine = {e: [r for r in rows if r["engine"] == e] for e in ("taskito", "celery")}
    assert [r["status"] for r in by_engine["taskito"]] == ["ok", "ok"]
    assert [r["status"] for r in by_engine["celery"]] == ["skipped", "skipped"]
    reason = by_engine["celery"][0]["error"]
    assert "is not installed" in reason or "no Redis server at redis://127.0.0.1:1" in reason
    assert f"celery: skipped: {reason}" in proc.stderr
    assert all(r[m] == "" for r in by_engine["celery"] for m in METRICS)


def test_a_hung_cell_is_killed_at_the_time_limit_and_the_sweep_goes_on(tmp_path: Path) -> None:
    out, work = tmp_path / "hung.csv", tmp_path / "work"
    work.mkdir()
    # A warm-up of 100,000 five-millisecond jobs on one worker takes minutes.
    proc = bench(
        "--engines", "taskito", "--db", "memory", "--placement", "thread", "--tasks", "io_sleep",
        "--workers", "1,2",
        "--warmup", "100000", "--jobs", "2", "--repeat", "1", "--cell-timeout", "1",
        "--workdir", str(work), "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 1, "no cell finished"
    _, rows = read(out)
    assert [r["status"] for r in rows] == ["timeout", "timeout"]
    for row in rows:
        assert row["error"] == "killed after 1s"
        assert 1 <= float(row["cell_seconds"]) < 10
        assert row["drain_per_s"] == ""
    assert list(work.iterdir()) == [], "each cell's folder is removed"
    assert "- taskito memory workers=2 io_sleep rep 1: timeout: killed after 1s" in proc.stdout


def test_workers_a_crashed_cell_left_in_their_own_session_are_killed(tmp_path: Path) -> None:
    # An "interpreter" whose cells start a worker the way WorkerProcess does
    # (its own session, out of reach of the cell's process group), then die
    # without stopping it, as a cell killed by the OOM killer would.
    marker = f"bench-orphan-{os.getpid()}-{tmp_path.name}"
    pidfile, python = tmp_path / "worker.pid", tmp_path / "python"
    spawn = (
        "import subprocess, sys\n"
        f"worker = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)', {marker!r}],"
        " start_new_session=True)\n"
        f"open({str(pidfile)!r}, 'w').write(str(worker.pid))\n"
        "sys.exit(3)\n"
    )
    real = shlex.quote(sys.executable)
    python.write_text(
        f'#!/bin/sh\nif [ "$3" = run ]; then exec {real} -c {shlex.quote(spawn)}; fi\nexec {real} "$@"\n'
    )
    python.chmod(0o755)
    out = tmp_path / "crash.csv"
    try:
        proc = bench(
            "--engines", "taskito", "--python", f"taskito={python}", "--db", "memory", "--placement", "thread",
            "--workers", "1",
            "--jobs", "2", "--repeat", "1", "--out", str(out),
        )  # fmt: skip
        assert proc.returncode == 1, proc.stderr
        _, rows = read(out)
        assert [r["status"] for r in rows] == ["error"]
        worker = int(pidfile.read_text())
        assert not running(worker, marker), "the crashed cell's worker outlived the sweep"
    finally:
        if pidfile.exists() and running(int(pidfile.read_text()), marker):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


def running(pid: int, marker: str) -> bool:
    """Whether ``pid`` is alive and still the process with ``marker`` on its command line."""
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return False


def test_an_engine_can_run_under_another_interpreter(tmp_path: Path) -> None:
    # A wrapper around this interpreter that notes each use and imports a
    # copy of taskito installed outside this tree, as a released one would be.
    installed = tmp_path / "site"
    shutil.copytree(ROOT / "taskito", installed / "taskito", ignore=shutil.ignore_patterns("__pycache__"))
    used, python = tmp_path / "used", tmp_path / "python"
    python.write_text(
        f'#!/bin/sh\necho "$1" >> {shlex.quote(str(used))}\n'
        f'PYTHONPATH={shlex.quote(str(installed))} exec {shlex.quote(sys.executable)} "$@"\n'
    )
    python.chmod(0o755)
    out = tmp_path / "two.csv"
    proc = bench(
        "--engines", "taskito,taskito@other", "--python", f"taskito@other={python}", "--db", "memory",
        "--placement", "thread",
        "--workers", "1", "--jobs", "10", "--repeat", "1", "--samples", "2", "--warmup", "0",
        "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    _, rows = read(out)
    assert [(r["engine"], r["status"]) for r in rows] == [("taskito", "ok"), ("taskito@other", "ok")]
    assert used.read_text().split() == ["-c", "-c"], "the probe and the one cell of taskito@other"
    tree, other = rows
    assert tree["engine_path"] == str((ROOT / "taskito").resolve())
    assert tree["git_commit"] == git_head()
    # This tree's commit says nothing about the other taskito: its own path and build do.
    assert other["engine_path"] == str((installed / "taskito").resolve())
    assert (other["git_commit"], other["git_branch"], other["git_dirty"]) == ("", "", "")
    assert other["engine_build"].startswith(Path(taskito._native.__file__ or "").name + " sha256:")
    assert "taskito@other memory workers=1 noop" in proc.stderr


def test_a_cell_that_fails_is_recorded_as_an_error(tmp_path: Path) -> None:
    cell = Cell("taskito", "memory", 1, "no_such_task", 10, 1, 1, 1)
    row = run_cell(cell, sys.executable, timeout=60, workdir=tmp_path)
    assert row["status"] == "error"
    assert "KeyError: 'no_such_task'" in row["error"]
    assert "drain_per_s" not in row


def test_plan_puts_repetitions_outermost_and_each_engine_in_its_modes(tmp_path: Path) -> None:
    plan = Plan(
        engines=["taskito", "celery", "threadpool"],
        dbs=["file", "redis"],
        workers=[1, 4],
        tasks=["noop"],
        jobs=10,
        repeat=2,
        samples=1,
        warmup=1,
        cell_timeout=1,
        out=tmp_path / "x.csv",
    )
    cells = plan.cells()
    # Celery's prefork children run one task each: 4 workers are 4 processes.
    assert [(c.repetition, c.engine, c.db, c.processes, c.workers) for c in cells] == [
        (rep, engine, db, *shape)
        for rep in (1, 2)
        for engine, db, shapes in (
            ("taskito", "file", [(0, 1), (0, 4)]),
            ("celery", "redis", [(1, 1), (4, 1)]),
        )
        for shape in shapes
    ]
    assert plan.unsupported() == ["threadpool: no cells: it runs on memory, not on --db file,redis"]


def test_progress_estimates_time_left_from_each_engines_own_cells() -> None:
    cells = [Cell(e, "memory", 1, "noop", 10, r, 1, 1) for r in (1, 2) for e in ("taskito", "huey")]
    lines: list[str] = []
    progress = Progress(cells, lines.append)
    progress.done(0, {"status": "ok", "error": "", "cell_seconds": 1.0, "drain_per_s": 5.0})
    progress.done(1, {"status": "timeout", "error": "killed after 3s", "cell_seconds": 3.0})
    # Left: one taskito cell (1 s each so far) and one huey cell (3 s).
    assert lines[1].endswith("ETA 4s")
    assert "[2/4] huey memory workers=1 noop" in lines[1]
    assert "timeout" in lines[1] and "killed after 3s" in lines[1]
    # After the first cell, huey's time is guessed from the mean of all cells so far.
    assert lines[0].endswith("ETA 3s")


def test_redis_cells_hold_their_servers_databases_while_they_run(tmp_path: Path) -> None:
    """Every Redis cell flushes the same two databases: while one runs, a
    cell of another sweep on the same server cannot start; other servers
    and other backends are not held up."""
    redis_cell = Cell("celery", "redis", 1, "noop", 10, 1, 1, 1)
    other_server = dataclasses.replace(redis_cell, redis_url="redis://127.0.0.1:6380")
    sqlite_cell = Cell("taskito", "file", 1, "noop", 10, 1, 1, 1)
    with _redis_to_itself(redis_cell):
        with pytest.raises(BlockingIOError), _redis_to_itself(redis_cell, blocking=False):
            pass
        with _redis_to_itself(other_server, blocking=False), _redis_to_itself(sqlite_cell, blocking=False):
            pass
    with _redis_to_itself(redis_cell, blocking=False):
        pass
