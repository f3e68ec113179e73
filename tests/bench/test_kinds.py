"""Issue 13's and 12's additions to the harness, through tiny real sweeps:
the cpu_ms, async_sleep and chain kinds, the peers' own process pools, and
the reasons given where an engine cannot run a kind. A peer runs where its
package is installed (the bench extra) and, on Redis, a server answers at
127.0.0.1:6379; elsewhere its rows must be skipped with the probe's reason."""

from __future__ import annotations

import csv
import importlib.util
import socket
from pathlib import Path

import pytest

from benchmarks import cli
from benchmarks.cell import jobs_per_unit
from benchmarks.grid import Cell
from benchmarks.sweep import Plan, shape
from benchmarks.tasks import CHAIN_LENGTH, async_sleep, cpu_ms
from tests.bench.test_sweep import bench


def redis_answers() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
    except OSError:
        return False
    return True


REDIS = redis_answers()


def runs_here(engine: str) -> bool:
    """Whether the peer's package is installed and its server (Redis) answers."""
    package = {"taskiq": "taskiq_redis"}.get(engine, engine)
    installed = importlib.util.find_spec(package) is not None
    return installed and (engine == "huey" or REDIS)


def rows_of(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def tiny(tmp_path: Path, *args: str) -> list[dict[str, str]]:
    out = tmp_path / "tiny.csv"
    proc = bench(
        "sweep", *args, "--repeat", "1", "--samples", "3", "--warmup", "10", "--out", str(out), timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return rows_of(out)


def assert_ran_or_skipped(row: dict[str, str]) -> bool:
    """True if the row ran (and is sound); False if its peer cannot run here and it says why."""
    if row["engine"] != "taskito" and not runs_here(row["engine"]):
        assert row["status"] == "skipped" and row["error"], row
        return False
    assert row["status"] == "ok", row["error"]
    assert float(row["drain_per_s"]) > 0
    assert row["failures"] == "0"
    return True


def test_cpu_ms_runs_in_each_engines_own_processes(tmp_path: Path) -> None:
    rows = tiny(
        tmp_path, "--engines", "taskito,huey,celery,dramatiq", "--db", "file,redis", "--tasks", "cpu_ms",
        "--processes", "1,2", "--workers", "1,2", "--jobs", "20",
    )  # fmt: skip
    ran = {
        (r["engine"], r["placement"], r["processes"], r["workers"]): r
        for r in rows
        if assert_ran_or_skipped(r)
    }
    shapes = {(r["engine"], r["placement"], r["processes"], r["workers"]) for r in rows}
    # Each engine's processes x workers as it runs them: Huey's process workers and
    # Celery's prefork children take one task each (2 x 2 are 4 of them), once.
    assert shapes == {
        *(("taskito", "process", p, w) for p in "12" for w in "12"),
        ("taskito", "thread", "0", "1"), ("taskito", "thread", "0", "2"),
        ("huey", "thread", "0", "1"), ("huey", "thread", "0", "2"),
        *(("huey", "process", p, "1") for p in "124"),
        *(("celery", "process", p, "1") for p in "124"),
        *(("dramatiq", "process", p, w) for p in "12" for w in "12"),
    }  # fmt: skip
    assert len(rows) == len(shapes), "each shape once"
    assert ran["taskito", "process", "2", "1"]["engine_setup"].startswith(
        "`taskito worker --app benchmarks.apps.taskito_app:queue --processes 2 --workers 1 "
    )
    expected_setups = {
        ("huey", "process", "4", "1"): "--worker-type=process --workers=4",
        ("celery", "process", "2", "1"): "celery worker --pool=prefork --concurrency=2",
        ("dramatiq", "process", "2", "2"): "dramatiq --processes=2 --threads=2",
    }
    for key, setup in expected_setups.items():
        if key in ran:
            assert setup in ran[key]["engine_setup"], ran[key]["engine_setup"]
    assert all(r["task"] == "cpu_ms" and r["async_concurrency"] == "" for r in rows)


def test_async_sleep_runs_on_event_loops_and_engines_without_one_say_why(
    tmp_path: Path,
) -> None:
    rows = tiny(
        tmp_path, "--engines", "taskito,saq,taskiq,huey,celery", "--db", "file,redis", "--tasks", "async_sleep",
        "--placement", "thread,process", "--workers", "2", "--jobs", "40", "--async-concurrency", "20",
    )  # fmt: skip
    by_engine: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_engine.setdefault(row["engine"], []).append(row)
        assert row["async_concurrency"] == "20"
    for row in by_engine["taskito"]:
        assert assert_ran_or_skipped(row)
        assert (
            "async_concurrency=20" in row["engine_setup"] or "--async-concurrency 20" in row["engine_setup"]
        )
        # 40 jobs of 5 ms, 20 at once: far faster than one after the other (200/s).
        assert float(row["drain_per_s"]) > 400
    for engine in ("saq", "taskiq"):
        (row,) = by_engine[engine]  # one process of one event loop
        assert (row["placement"], row["processes"], row["workers"]) == ("process", "1", "1")
        if assert_ran_or_skipped(row):
            assert "20" in row["engine_setup"]
    if runs_here("huey"):
        assert {r["error"] for r in by_engine["huey"]} == {
            "Huey refuses coroutine functions (its error says to wrap them in asyncio.run())"
        }
    if runs_here("celery"):
        assert {r["error"] for r in by_engine["celery"]} == {
            "Celery has no async tasks: it runs no coroutine function"
        }
    assert all(r["status"] == "skipped" for e in ("huey", "celery") for r in by_engine[e])


def test_chains_count_every_step_and_time_no_enqueue(tmp_path: Path) -> None:
    rows = tiny(
        tmp_path, "--engines", "taskito,huey,celery,dramatiq", "--db", "file,redis", "--tasks", "chain",
        "--placement", "thread,process", "--workers", "2", "--jobs", "40",
    )  # fmt: skip
    for row in rows:
        assert (row["task"], row["jobs"]) == ("chain", "40")
        if assert_ran_or_skipped(row):
            # What a chain stores when enqueued differs by engine: not timed.
            assert (row["enqueue_delay_per_s"], row["enqueue_map_per_s"]) == ("", "")
            assert float(row["latency_rtt_p50_ms"]) > 0
    assert {r["engine"] for r in rows} == {"taskito", "huey", "celery", "dramatiq"}


def test_shapes_fold_workers_into_single_task_processes_and_drop_them_beside_event_loops() -> None:
    assert shape("taskito", "process", 2, 3) == (2, 3)
    assert shape("dramatiq", "process", 2, 3) == (2, 3)
    assert shape("celery", "process", 2, 3) == (6, 1)
    assert shape("rq", "process", 1, 2) == (2, 1)
    assert shape("huey", "process", 2, 2) == (4, 1)
    assert shape("huey", "thread", 0, 2) == (0, 2)
    assert shape("saq", "process", 2, 8) == (2, 1)


def test_the_plan_runs_one_cell_per_shape_and_gives_only_async_kinds_a_concurrency(tmp_path: Path) -> None:
    plan = Plan(
        engines=["celery", "saq"], dbs=["redis"], workers=[1, 2], tasks=["noop", "async_sleep"], jobs=10,
        repeat=1, samples=1, warmup=0, cell_timeout=1, out=tmp_path / "x.csv", processes=[1, 2],
        async_concurrency=50,
    )  # fmt: skip
    cells = [(c.engine, c.task, c.processes, c.workers, c.async_concurrency) for c in plan.cells()]
    assert cells == [
        ("celery", "noop", 1, 1, 0),
        ("celery", "noop", 2, 1, 0),  # 1 x 2 and 2 x 1: one cell
        ("celery", "async_sleep", 1, 1, 50),
        ("celery", "async_sleep", 2, 1, 50),
        ("celery", "noop", 4, 1, 0),
        ("celery", "async_sleep", 4, 1, 50),
        ("saq", "noop", 1, 1, 0),
        ("saq", "async_sleep", 1, 1, 50),
        ("saq", "noop", 2, 1, 0),
        ("saq", "async_sleep", 2, 1, 50),
    ]


def test_chain_cells_take_whole_chains(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert jobs_per_unit(Cell("huey", "file", 1, "chain", 10 * CHAIN_LENGTH, 1, 1, 0)) == CHAIN_LENGTH
    assert jobs_per_unit(Cell("huey", "file", 1, "noop", 15, 1, 1, 0)) == 1
    with pytest.raises(ValueError, match="whole chains of 10 jobs: got 15 jobs"):
        jobs_per_unit(Cell("huey", "file", 1, "chain", 15, 1, 1, 0))
    with pytest.raises(SystemExit) as exit:
        cli.main(["--tasks", "noop,chain", "--jobs", "15", "--out", str(tmp_path / "never.csv")])
    assert exit.value.code == 2
    assert "--jobs 15: chain cells run whole chains of 10 jobs" in capsys.readouterr().err


def test_the_task_bodies_return_their_argument() -> None:
    import asyncio

    assert cpu_ms(7) == 7
    assert asyncio.run(async_sleep(9)) == 9
