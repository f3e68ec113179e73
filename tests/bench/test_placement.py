"""Where the workers run: taskito's cells with ``taskito worker`` processes
beside the measuring one, the grid that places each engine, and what a dead
worker process does to a cell."""

from __future__ import annotations

import csv
import os
import shlex
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import cell as cells
from benchmarks import cli, procs
from benchmarks.engines import taskito_family
from benchmarks.engines.taskito import TaskitoAdapter
from benchmarks.grid import Cell, placement_conflict
from benchmarks.sweep import Plan, run_cell
from tests.bench.test_sweep import bench, running


def rows_of(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_a_tiny_sweep_runs_taskito_workers_in_taskito_worker_processes(tmp_path: Path) -> None:
    out = tmp_path / "placed.csv"
    proc = bench(
        "sweep", "--engines", "taskito", "--db", "memory,file", "--placement", "thread,process",
        "--processes", "1,2", "--workers", "1", "--jobs", "20", "--repeat", "1", "--samples", "3",
        "--warmup", "3", "--idle-samples", "2", "--idle-gap", "0.05", "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = rows_of(out)
    placed = [(r["db"], r["placement"], r["processes"], r["status"]) for r in rows]
    assert placed == [
        ("memory", "thread", "0", "ok"),
        ("memory", "process", "1", "skipped"),
        ("memory", "process", "2", "skipped"),
        ("file", "thread", "0", "ok"),
        ("file", "process", "1", "ok"),
        ("file", "process", "2", "ok"),
    ]
    for row in rows:
        if row["status"] == "skipped":
            assert "an in-memory database belongs to one process" in row["error"]
            continue
        assert row["status"] == "ok", row["error"]
        assert (row["idle_samples"], row["idle_gap_s"]) == ("2", "0.05")
        assert 0 < float(row["latency_rtt_idle_p50_ms"]) <= float(row["latency_rtt_idle_p99_ms"])
        assert float(row["drain_per_s"]) > 0
        assert row["failures"] == "0"
        if row["placement"] == "thread":
            assert row["engine_setup"] == "start_worker(), 1 executor threads"
        else:
            # One process is one `taskito worker`; more, the supervisor its README deploys.
            assert (
                row["engine_setup"]
                == {
                    "1": "1 x `taskito worker --app benchmarks.apps.taskito_app:queue --workers 1 --log-level WARNING`",
                    "2": "`taskito worker --app benchmarks.apps.taskito_app:queue --processes 2 --workers 1 "
                    "--log-level WARNING`: a supervisor of 2 worker processes",
                }[row["processes"]]
            )
    assert "cells with placement=process skipped: memory: an in-memory database" in proc.stderr
    assert "taskito file processes=2 workers=1 noop" in proc.stderr
    # The table says where each row's workers ran.
    assert "| taskito  | file   | threads in the measuring process |" in proc.stdout
    assert "| taskito  | file   | 2 processes, `taskito worker`    |" in proc.stdout


@pytest.fixture
def placed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TaskitoAdapter]:
    """A taskito adapter on a file with ``request.param`` worker processes, workers started."""
    cell = Cell("taskito", "file", 1, "noop", 10, 1, 1, 0, placement="process", processes=request.param)
    adapter = TaskitoAdapter(cell, tmp_path)
    adapter.start_workers()
    try:
        yield adapter
    finally:
        adapter.close()


def worker_pids(adapter: TaskitoAdapter) -> list[int]:
    assert adapter.workers is not None
    pids = [p.pid for p in adapter.workers.processes]
    assert all(pid is not None for pid in pids)
    return [pid for pid in pids if pid is not None]


@pytest.mark.parametrize("placed", [2], indirect=True)
def test_jobs_run_in_the_worker_processes_whose_logs_stay_in_the_cells_folder(
    placed: TaskitoAdapter, tmp_path: Path
) -> None:
    jobs = placed.enqueue_many(range(20))
    assert [placed.result(job, 30) for job in jobs] == list(range(20))
    # One command, `taskito worker --processes 2`: a supervisor whose 2 children run the jobs.
    (supervisor,) = worker_pids(placed)
    children = procs.descendants(supervisor)
    assert len(children) == 2
    ran_in = {job.to_dict()["worker_id"] for job in jobs}
    # A worker's id names its process: host:pid:suffix.
    assert {int(worker.split(":")[1]) for worker in ran_in} <= set(children)
    assert os.getpid() not in children
    assert sorted(p.name for p in tmp_path.glob("*.log")) == ["taskito-worker.log"]
    placed.stop_workers()
    assert not any(running(pid, "taskito") for pid in [supervisor, *children]), "stopped and waited for"


@pytest.mark.parametrize("placed", [1], indirect=True)
def test_a_dead_worker_process_fails_the_wait_at_once_with_its_log(placed: TaskitoAdapter) -> None:
    assert placed.result(placed.enqueue_one(1), 30) == 1
    (pid,) = worker_pids(placed)
    os.kill(pid, signal.SIGKILL)
    job = placed.enqueue_one(2)
    start = time.monotonic()
    with pytest.raises(
        RuntimeError, match=r"worker process taskito-worker exited with -9 \(log .*taskito-worker\.log\)"
    ):
        placed.result(job, cells.RESULT_TIMEOUT)
    assert time.monotonic() - start < 10, "found dead within a check, not at the result's timeout"
    with pytest.raises(RuntimeError, match="exited with -9"):
        cells.wait_finished(placed, placed.finished(), 1)


def test_an_in_memory_database_cannot_have_worker_processes(tmp_path: Path) -> None:
    cell = Cell("taskito", "memory", 1, "noop", 10, 1, 1, 0, placement="process", processes=1)
    reason = placement_conflict(cell)
    assert reason is not None and "worker processes cannot share it" in reason
    with pytest.raises(ValueError, match="worker processes cannot share it"):
        TaskitoAdapter(cell, tmp_path)
    assert placement_conflict(Cell("taskito", "file", 1, "noop", 10, 1, 1, 0, placement="process")) is None
    assert placement_conflict(Cell("taskito", "memory", 1, "noop", 10, 1, 1, 0)) is None
    without_processes = Cell("taskito", "file", 1, "noop", 10, 1, 1, 0, placement="process", processes=0)
    with pytest.raises(ValueError, match="needs at least one worker process, got 0"):
        TaskitoAdapter(without_processes, tmp_path)


def test_worker_processes_run_under_the_cells_interpreter(tmp_path: Path) -> None:
    cell = Cell("taskito", "file", 3, "noop", 10, 1, 1, 0, placement="process", processes=1)
    adapter = TaskitoAdapter(cell, tmp_path)
    try:
        assert adapter.argv[:3] == [sys.executable, "-c", taskito_family.CLI]
        assert adapter.argv[3:] == [
            "worker",
            "--app",
            taskito_family.APP,
            "--workers",
            "3",
            "--log-level",
            "WARNING",
        ]
    finally:
        adapter.close()


def test_the_plan_places_engines_that_can_choose_and_leaves_the_others_where_they_run(tmp_path: Path) -> None:
    plan = Plan(
        engines=["taskito", "huey", "celery"],
        dbs=["file", "redis"],
        workers=[2],
        tasks=["noop"],
        jobs=10,
        repeat=1,
        samples=1,
        warmup=1,
        cell_timeout=1,
        out=tmp_path / "x.csv",
        placements=["process", "thread"],
        processes=[1, 3],
        idle_samples=4,
        idle_gap=0.25,
    )
    # Huey's process workers and Celery's prefork children run one task each:
    # N processes of 2 workers are 2N processes of one.
    assert [(c.engine, c.placement, c.processes, c.workers) for c in plan.cells()] == [
        ("taskito", "process", 1, 2),
        ("taskito", "process", 3, 2),
        ("taskito", "thread", 0, 2),
        ("huey", "process", 2, 1),
        ("huey", "process", 6, 1),
        ("huey", "thread", 0, 2),
        ("celery", "process", 2, 1),
        ("celery", "process", 6, 1),
    ]
    assert {(c.idle_samples, c.idle_gap) for c in plan.cells()} == {(4, 0.25)}
    only_threads = Plan(**{**plan.__dict__, "placements": ["thread"]})
    assert [(c.engine, c.placement) for c in only_threads.cells()] == [
        ("taskito", "thread"),
        ("huey", "thread"),
        ("celery", "process"),
        ("celery", "process"),
    ]


def test_a_cell_travels_as_json_with_its_placement_and_idle_gaps() -> None:
    cell = Cell("taskito", "file", 2, "noop", 10, 1, 5, 0, placement="process", processes=2, idle_samples=3)
    assert Cell.from_json(cell.to_json()) == cell
    assert cell.label() == "taskito file processes=2 workers=2 noop"
    # A cell written before placements existed is a thread cell without idle gaps.
    old = '{"engine": "taskito", "db": "file", "workers": 2, "task": "noop", "jobs": 10, "repetition": 1, '
    old += '"samples": 5, "warmup": 0, "redis_url": "redis://127.0.0.1:6379"}'
    assert (Cell.from_json(old).placement, Cell.from_json(old).processes) == ("thread", 0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--placement", "fork"], "argument --placement: unknown fork"),
        (["--processes", "0"], "argument --processes: must be at least 1, got 0"),
        (["--placement", "thread", "--processes", "2"], "--processes counts worker processes"),
        (["--idle-gap", "0"], "argument --idle-gap: must be at least"),
        (["--idle-samples", "-1"], "argument --idle-samples: must be at least 0"),
    ],
)
def test_bad_placement_options_exit_2(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit:
        cli.main([*args, "--out", str(tmp_path / "never.csv")])
    assert exit.value.code == 2
    assert message in capsys.readouterr().err


def test_the_default_sweep_places_taskito_both_ways_without_idle_gaps() -> None:
    args = cli.parser().parse_args(["sweep"])
    assert (args.placement, args.processes) == (["thread", "process"], [1])
    assert (args.idle_samples, args.idle_gap) == (0, 0.5)


def test_a_failed_cell_keeps_the_end_of_its_worker_logs_in_its_error(tmp_path: Path) -> None:
    # An "interpreter" whose cell leaves a worker log in its folder, then fails.
    python = tmp_path / "python"
    python.write_text(
        '#!/bin/sh\nif [ "$3" = run ]; then printf "starting\\nboom\\n" > "$5/taskito-worker.log"; '
        'echo "RuntimeError: worker exited" >&2; exit 1; fi\n'
        f'exec {shlex.quote(sys.executable)} "$@"\n'
    )
    python.chmod(0o755)
    cell = Cell("taskito", "file", 1, "noop", 10, 1, 1, 0, placement="process", processes=1)
    row = run_cell(cell, str(python), timeout=60, workdir=tmp_path)
    assert row["status"] == "error"
    assert row["error"] == "[taskito-worker.log]\nstarting\nboom\nRuntimeError: worker exited"
