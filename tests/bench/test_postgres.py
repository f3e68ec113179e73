"""The postgres DB mode: its URLs and the default DB modes, which cells it
makes, its skips, and (with a server, ``TASKITO_TEST_POSTGRES_URL``) real
cells of procrastinate, pgqueuer and taskito that leave no schema behind."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pytest

from benchmarks import cell as cells
from benchmarks import cli, compare, pg
from benchmarks.engines import ENGINES
from benchmarks.engines.taskito import TaskitoAdapter
from benchmarks.grid import Cell
from benchmarks.schema import COLUMNS
from benchmarks.sweep import Plan, run_cell
from taskito import Queue
from tests.bench.test_sweep import ROOT, bench

PG_URL = os.environ.get("TASKITO_TEST_POSTGRES_URL", "")
ENABLE = (
    "set TASKITO_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/test (a server whose "
    "user may create schemas) to run the harness's PostgreSQL tests"
)
PEERS = ("procrastinate", "pgqueuer")
BENCH_EXTRA = "pip install -e '.[bench]' installs it"


def rows_of(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


# ── URLs and the default DB modes (no server needed) ──────────────────────


def test_passwords_are_replaced_in_every_url_of_a_text() -> None:
    text = "sweep --pg-url postgresql://bob:s3cr%40t@db:5432/x --redis redis://:pw@h:6379"
    assert pg.redact(text) == "sweep --pg-url postgresql://bob:***@db:5432/x --redis redis://:***@h:6379"
    assert pg.redact(pg.DEFAULT_PG_URL) == pg.DEFAULT_PG_URL, "no password, nothing replaced"


def test_the_address_is_read_as_libpq_reads_it() -> None:
    assert pg.address("postgresql://u@db.example:6543/x") == ("db.example", 6543)
    assert pg.address("postgres://u@/x") == ("localhost", 5432)
    assert pg.address("postgresql://u@/x?host=/run/postgresql&port=5433") == ("/run/postgresql", 5433)
    assert pg.check_url("postgresql://u@h:abc/x") is not None
    assert (
        pg.check_url("mysql://u:pw@h/x")
        == "expected postgresql://USER@HOST:PORT/DATABASE, got 'mysql://u:***@h/x'"
    )


@pytest.fixture
def listener() -> Iterator[tuple[socket.socket, list[bytes]]]:
    """A TCP socket on a free port and what its one client sent."""
    server = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []
    yield server, received
    server.close()


def serve_once(server: socket.socket, received: list[bytes], reply: bytes) -> threading.Thread:
    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            received.append(conn.recv(8))
            conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_a_server_answers_when_it_replies_to_an_ssl_request_as_postgresql_does(
    listener: tuple[socket.socket, list[bytes]],
) -> None:
    server, received = listener
    port = server.getsockname()[1]
    thread = serve_once(server, received, b"N")
    assert pg.answers(f"postgresql://u@127.0.0.1:{port}/x", timeout=5)
    thread.join(5)
    assert received == [bytes.fromhex("0000000804d2162f")], "length 8, code 80877103"


def test_something_else_on_the_port_or_nothing_does_not_answer(
    listener: tuple[socket.socket, list[bytes]],
) -> None:
    server, received = listener
    port = server.getsockname()[1]
    thread = serve_once(server, received, b"HTTP/1.1 400 Bad Request\r\n")
    assert not pg.answers(f"postgresql://u@127.0.0.1:{port}/x", timeout=5)
    thread.join(5)
    assert not pg.answers("postgresql://u@127.0.0.1:1/x")
    assert not pg.answers("postgresql://u@/x?host=/no/such/folder")


def parsed(*args: str) -> argparse.Namespace:
    return cli.parser().parse_args(["sweep", *args])


def test_the_default_db_modes_gain_postgres_only_where_a_server_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pg, "answers", lambda url, timeout=1.0: url == "postgresql://u:pw@up:5432/x")
    up = parsed("--pg-url", "postgresql://u:pw@up:5432/x")
    assert cli.with_postgres(up) == (
        "a PostgreSQL server answers at postgresql://u:***@up:5432/x: postgres added to the DB modes"
    )
    assert up.db == ["memory", "file", "redis", "postgres"]
    down = parsed("--pg-url", "postgresql://u@down:5432/x")
    assert "no PostgreSQL server answers at postgresql://u@down:5432/x" in str(cli.with_postgres(down))
    assert down.db == ["memory", "file", "redis"]
    # A --db given is what runs, server or not, even when it names the default modes.
    given = parsed("--pg-url", "postgresql://u:pw@up:5432/x", "--db", "memory,file,redis")
    assert cli.with_postgres(given) is None
    assert given.db == ["memory", "file", "redis"]


def test_a_url_that_is_not_postgresql_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        cli.main(["--pg-url", "mysql://root:pw@h/x", "--out", str(tmp_path / "never.csv")])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "argument --pg-url: expected postgresql://USER@HOST:PORT/DATABASE" in err
    assert "pw@" not in err


def test_the_plan_runs_the_peers_in_one_worker_process_and_taskito_both_ways(tmp_path: Path) -> None:
    plan = Plan(
        engines=["taskito", "procrastinate", "pgqueuer", "huey"],
        dbs=["postgres"],
        workers=[2],
        tasks=["noop"],
        jobs=10,
        repeat=1,
        samples=1,
        warmup=1,
        cell_timeout=1,
        out=tmp_path / "x.csv",
        placements=["thread", "process"],
        pg_url="postgresql://u@db:5432/x",
    )
    cells_ = plan.cells()
    assert [(c.engine, c.placement, c.processes) for c in cells_] == [
        ("taskito", "thread", 0),
        ("taskito", "process", 1),
        ("procrastinate", "process", 1),
        ("pgqueuer", "process", 1),
    ]
    assert {c.pg_url for c in cells_} == {"postgresql://u@db:5432/x"}
    assert plan.unsupported() == [
        f"huey: no cells: it runs on {', '.join(ENGINES['huey'].modes)}, not on --db postgres"
    ]
    assert Cell.from_json(cells_[2].to_json()) == cells_[2]
    # A cell written before the postgres mode has the default server.
    old = '{"engine": "taskito", "db": "file", "workers": 2, "task": "noop", "jobs": 10, "repetition": 1, '
    old += '"samples": 5, "warmup": 0}'
    assert Cell.from_json(old).pg_url == pg.DEFAULT_PG_URL


def test_without_a_server_the_postgres_cells_are_skipped_and_no_password_is_written(tmp_path: Path) -> None:
    out = tmp_path / "down.csv"
    url = "postgresql://bench:s3cret@127.0.0.1:1/test"
    proc = bench(
        "--engines", "taskito,procrastinate", "--db", "memory,postgres", "--placement", "thread",
        "--workers", "1", "--jobs", "10", "--repeat", "1", "--samples", "2", "--warmup", "2",
        "--pg-url", url, "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = rows_of(out)
    assert [(r["engine"], r["db"], r["status"]) for r in rows] == [
        ("taskito", "memory", "ok"),
        ("taskito", "postgres", "skipped"),
        ("procrastinate", "postgres", "skipped"),
    ]
    for row in rows[1:]:
        no_server = (
            "cannot connect to PostgreSQL at postgresql://bench:***@127.0.0.1:1/test (" in row["error"]
        )
        assert no_server or "is not installed" in row["error"], row["error"]
        assert row["backend"] == "postgres"
    # The engine's SQLite cells ran: it is skipped on postgres alone.
    assert f"taskito on postgres: skipped: {rows[1]['error']}" in proc.stderr
    assert f"procrastinate: skipped: {rows[2]['error']}" in proc.stderr
    assert rows[0]["command"].endswith("--pg-url postgresql://bench:***@127.0.0.1:1/test --out " + str(out))
    assert "s3cret" not in out.read_text() + proc.stdout + proc.stderr


# ── Against a server ──────────────────────────────────────────────────────


@pytest.fixture
def pg_url() -> str:
    """The test server's URL; a test run that names one fails if it does not answer."""
    if not PG_URL:
        pytest.skip(ENABLE)
    assert pg.answers(PG_URL, timeout=5), (
        f"TASKITO_TEST_POSTGRES_URL is set, but nothing answers at {pg.redact(PG_URL)}"
    )
    return PG_URL


@pytest.fixture
def psycopg() -> Any:
    return pytest.importorskip("psycopg", reason=f"the postgres mode needs psycopg ({BENCH_EXTRA})")


def bench_schemas(psycopg: Any, url: str) -> set[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(r"SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench\_%'").fetchall()
    return {name for (name,) in rows}


@pytest.mark.slow
def test_a_tiny_postgres_sweep_runs_the_peers_beside_taskito_and_leaves_no_schema(
    pg_url: str, psycopg: Any, tmp_path: Path
) -> None:
    before = bench_schemas(psycopg, pg_url)
    out = tmp_path / "pg.csv"
    proc = bench(
        "sweep", "--engines", "procrastinate,pgqueuer,taskito", "--db", "postgres", "--workers", "2",
        "--jobs", "40", "--repeat", "1", "--samples", "5", "--warmup", "5", "--pg-url", pg_url,
        "--out", str(out),
        timeout=240,
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr
    with out.open(newline="") as f:
        assert list(csv.DictReader(f).fieldnames or []) == list(COLUMNS)
    rows = rows_of(out)
    assert [(r["engine"], r["placement"], r["processes"]) for r in rows] == [
        ("procrastinate", "process", "1"),
        ("pgqueuer", "process", "1"),
        ("taskito", "thread", "0"),
        ("taskito", "process", "1"),
    ]
    ran = 0
    for row in rows:
        assert (row["db"], row["backend"]) == ("postgres", "postgres")
        installed = importlib.util.find_spec(row["engine"]) is not None
        if row["engine"] in PEERS and not installed:
            assert row["status"] == "skipped" and "is not installed" in row["error"]
            continue
        if row["engine"] == "taskito" and row["status"] == "skipped":
            # Until taskito's PostgreSQL backend lands: the probe says what its Queue raised.
            assert "has no working PostgreSQL backend: Queue(backend='postgres'" in row["error"]
            continue
        assert row["status"] == "ok", row["error"]
        ran += 1
        assert re.fullmatch(r"postgresql \d+(\.\d+)*", row["store_version"]), row["store_version"]
        assert re.fullmatch(r"fsync=(on|off) synchronous_commit=\w+", row["durability"]), row["durability"]
        assert row["failures"] == "0"
        assert float(row["enqueue_map_per_s"]) > 0 and float(row["enqueue_delay_per_s"]) > 0
        assert float(row["drain_per_s"]) > 0 and float(row["first_completion_s"]) > 0
        assert 0 < float(row["latency_rtt_p50_ms"]) <= float(row["latency_rtt_p99_ms"])
        # Each engine stores when a job was enqueued and when it finished.
        assert 0 < float(row["latency_stored_p50_ms"]) <= float(row["latency_stored_p99_ms"])
    assert bench_schemas(psycopg, pg_url) <= before, "every cell dropped its schema"
    if ran == 0:
        pytest.skip(f"no engine could run on PostgreSQL here: procrastinate and pgqueuer: {BENCH_EXTRA}")
    # The peers each ran their own command: the tables do not name one for all.
    if {r["engine"] for r in rows if r["status"] == "ok"} == set(PEERS):
        assert "Workers ran as 1 process in every row." in compare.render(compare.load(out))


@pytest.mark.slow
def test_the_schema_of_a_cell_killed_at_its_time_limit_is_dropped_by_the_sweep(
    pg_url: str, psycopg: Any, tmp_path: Path
) -> None:
    pytest.importorskip("procrastinate", reason=f"this cell is procrastinate's ({BENCH_EXTRA})")
    before = bench_schemas(psycopg, pg_url)
    # 20,000 five-millisecond jobs to warm up on one worker: minutes; killed after 10 s,
    # long after the cell made its schema (its first second).
    cell = Cell(
        engine="procrastinate",
        db="postgres",
        workers=1,
        task="io_sleep",
        jobs=2,
        repetition=1,
        samples=1,
        warmup=20000,
        placement="process",
        processes=1,
        pg_url=pg_url,
    )
    row = run_cell(cell, sys.executable, timeout=10, workdir=tmp_path)
    assert row["status"] == "timeout"
    assert re.match(r"dropped the schemas the cell left: bench_procrastinate_[0-9a-f]{8}\n", row["error"]), (
        row
    )
    assert row["error"].endswith("killed after 10s")
    assert bench_schemas(psycopg, pg_url) <= before
    assert list(tmp_path.iterdir()) == [], "the cell's folder is removed"


@pytest.mark.slow
def test_ctrl_c_of_a_sweep_drops_the_schema_of_the_cell_it_stopped(
    pg_url: str, psycopg: Any, tmp_path: Path
) -> None:
    pytest.importorskip("procrastinate", reason=f"this cell is procrastinate's ({BENCH_EXTRA})")
    before = bench_schemas(psycopg, pg_url)
    out = tmp_path / "stopped.csv"
    # 20,000 five-millisecond jobs to warm up on one worker: minutes.
    command = [
        sys.executable, "-m", "benchmarks", "sweep", "--engines", "procrastinate", "--db", "postgres",
        "--workers", "1", "--tasks", "io_sleep", "--jobs", "2", "--repeat", "1", "--samples", "1",
        "--warmup", "20000", "--pg-url", pg_url, "--out", str(out),
    ]  # fmt: skip
    with subprocess.Popen(
        command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as sweep:
        try:
            made = wait_for_new_schema(psycopg, pg_url, before, "bench_procrastinate_", timeout=60)
            sweep.send_signal(signal.SIGINT)
            _, stderr = sweep.communicate(timeout=60)
        finally:
            if sweep.poll() is None:
                sweep.kill()
                sweep.communicate()
    assert sweep.returncode == 130, stderr
    assert stderr.splitlines()[-2:] == [
        f"dropped the schemas the cell left: {made}",
        f"stopped by Ctrl-C before any cell finished: {out} has only the header",
    ], stderr
    assert made not in bench_schemas(psycopg, pg_url)


def wait_for_new_schema(psycopg: Any, url: str, before: set[str], prefix: str, timeout: float) -> str:
    """The name of a schema starting with ``prefix`` not in ``before``, once
    there is one. Polls the server: nothing else says when a cell has made
    its schema."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = {name for name in bench_schemas(psycopg, url) - before if name.startswith(prefix)}
        if new:
            return new.pop()
        time.sleep(0.05)
    pytest.fail(f"no cell made a schema within {timeout}s")


def test_a_cell_schema_is_listed_before_it_is_made_and_dropped_with_all_in_it(
    pg_url: str, psycopg: Any, tmp_path: Path
) -> None:
    from benchmarks.engines import pgcell

    made = pgcell.CellSchema(pg_url, tmp_path, "probe-me", create=True)
    assert re.fullmatch(r"bench_probe_me_[0-9a-f]{8}", made.name)
    assert pgcell.listed(tmp_path) == [made.name]
    made.conn.execute(psycopg.sql.SQL("CREATE TABLE {} (id int)").format(made.table("jobs")))
    left = pgcell.CellSchema(pg_url, tmp_path, "left", create=True)
    assert pgcell.listed(tmp_path) == [made.name, left.name]
    made.close()
    assert pgcell.listed(tmp_path) == [left.name]
    left.conn.close()  # as a killed cell would: never dropped
    assert left.name in bench_schemas(psycopg, pg_url)
    assert pgcell.drop_listed(pg_url, tmp_path) == [left.name]
    assert not bench_schemas(psycopg, pg_url) & {made.name, left.name}
    assert not (tmp_path / pg.SCHEMAS_FILE).exists()


def test_a_wrong_password_is_unavailable_without_the_password(pg_url: str, psycopg: Any) -> None:
    from benchmarks.engines import base, pgcell

    host, port = pg.address(pg_url)
    user = urlsplit(pg_url).username or "postgres"
    where = (
        f"@/bench_no_such_db?host={host}&port={port}"
        if host.startswith("/")
        else f"@{host}:{port}/bench_no_such_db"
    )
    with pytest.raises(base.Unavailable) as raised:
        pgcell.connect(f"postgresql://{user}:s3cret{where}")
    assert str(raised.value).startswith(f"cannot connect to PostgreSQL at postgresql://{user}:***{where} (")
    assert "s3cret" not in str(raised.value)


def test_taskito_cells_on_postgres_hand_the_queue_its_backend_url_and_schema(
    pg_url: str, psycopg: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the harness asks of taskito's PostgreSQL backend, answered by a
    stand-in that keeps the jobs in SQLite but makes the schema, as the
    backend will: the cell's wiring is tested before the backend lands."""

    class PostgresStandIn(Queue):
        calls: ClassVar[list[dict[str, Any]]] = []

        def __init__(self, *, backend: str, db_url: str, schema: str, **options: Any) -> None:
            type(self).calls.append({"backend": backend, "db_url": db_url, "schema": schema, **options})
            with psycopg.connect(db_url, autocommit=True) as conn:
                conn.execute(
                    psycopg.sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(psycopg.sql.Identifier(schema))
                )
            super().__init__(db_path=str(tmp_path / f"{schema}.db"), **options)

    monkeypatch.setattr(TaskitoAdapter, "queue_class", PostgresStandIn)
    before = bench_schemas(psycopg, pg_url)
    cell = Cell("taskito", "postgres", 1, "noop", 20, 1, 3, 3, pg_url=pg_url)
    TaskitoAdapter.probe(cell)
    (probed,) = PostgresStandIn.calls
    assert probed["schema"].startswith("bench_taskito_probe_")
    work = tmp_path / "cell"
    work.mkdir()
    adapter = TaskitoAdapter(cell, work)
    try:
        call = PostgresStandIn.calls[-1]
        assert {k: call[k] for k in ("backend", "db_url", "schema")} == {
            "backend": "postgres",
            "db_url": pg_url,
            "schema": adapter.schema.name if adapter.schema else None,
        }
        assert "db_path" not in call and "durability" not in call, "SQLite's settings stay with SQLite"
        measured = cells.measure(adapter, cell)
        described = adapter.describe()
    finally:
        adapter.close()
    assert measured["failures"] == 0 and measured["drain_per_s"] > 0
    assert described["store_version"].startswith("postgresql ")
    assert described["durability"].startswith("fsync=")
    assert bench_schemas(psycopg, pg_url) <= before, "the probe's and the cell's schemas were dropped"
