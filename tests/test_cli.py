"""The ``taskito`` command, run as a real subprocess."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from taskito import Queue
from tests.postgres import scratch_schema

APP = """
from taskito import Queue

queue = Queue(db_path={db!r}, workers=2)

@queue.task()
def add(a, b):
    return a + b

@queue.task(queue="slow")
def wait_for(path):
    import os, time
    # Runs until the test creates `path` (the test signals the worker first).
    while not os.path.exists(path):
        time.sleep(0.01)
    return "finished"

not_a_queue = 42
"""


@pytest.fixture
def app(tmp_path: Path) -> Iterator[ModuleType]:
    """The app module, written to tmp_path and imported here as the producer."""
    (tmp_path / "cliapp.py").write_text(APP.format(db=str(tmp_path / "jobs.db")))
    spec = importlib.util.spec_from_file_location("cliapp", tmp_path / "cliapp.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    module.queue.close()


def taskito(cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "taskito", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_worker_runs_jobs_and_stops_on_sigterm(app: ModuleType, tmp_path: Path) -> None:
    worker = taskito(tmp_path, "worker", "--app", "cliapp:queue", "--workers", "3")
    try:
        jobs = app.add.map([(i, i) for i in range(200)])
        assert [j.result(timeout=30, poll_interval=0.01) for j in jobs] == [2 * i for i in range(200)]
    finally:
        worker.send_signal(signal.SIGTERM)
        _out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert "3 thread(s)" in err
    assert app.queue.stats()["running"] == 0


def test_sigint_lets_the_running_job_finish(app: ModuleType, tmp_path: Path) -> None:
    worker = taskito(tmp_path, "worker", "--app", "cliapp:queue", "--queues", "slow,default")
    flag = tmp_path / "go"
    job = app.wait_for.delay(str(flag))
    try:
        # Wait until the worker runs the job, then interrupt it mid-job.
        while job.status != "running":
            with pytest.raises(TimeoutError):
                job.result(timeout=0.05)
        worker.send_signal(signal.SIGINT)
        flag.touch()
        _out, err = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, err
    assert job.result(timeout=5) == "finished"
    assert "stopping the worker" in err


@pytest.mark.parametrize(
    ("app_spec", "message"),
    [
        ("cliapp", "must look like 'module:attribute'"),
        ("nosuchmodule:queue", "no such module"),
        ("cliapp:missing", "has no attribute 'missing'"),
        ("cliapp:not_a_queue", "is a int, not a taskito.Queue"),
    ],
)
def test_bad_app_names_get_a_clear_message(
    app: ModuleType, tmp_path: Path, app_spec: str, message: str
) -> None:
    proc = taskito(tmp_path, "worker", "--app", app_spec)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert message in err
    assert "Traceback" not in err


def test_info_prints_tasks_and_counts(app: ModuleType, tmp_path: Path) -> None:
    app.add.delay(1, 2)
    proc = taskito(tmp_path, "info", "--app", "cliapp:queue", "--json")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    info = json.loads(out)
    assert info["tasks"] == ["cliapp.add", "cliapp.wait_for"]
    assert info["stats"]["pending"] == 1
    proc = taskito(tmp_path, "info", "--app", "cliapp:queue")
    out, _ = proc.communicate(timeout=60)
    assert "cliapp.add" in out and "pending" in out


def test_run_worker_in_a_script_stops_on_sigterm(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from taskito import Queue
            q = Queue({str(tmp_path / "s.db")!r}, workers=1)

            @q.task(name="ping")
            def ping():
                return "pong"

            q.run_worker()
            print("returned", flush=True)
            """
        )
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    with Queue(str(tmp_path / "s.db")) as producer:

        @producer.task(name="ping")
        def ping() -> None: ...

        # A job done proves the worker (and its signal handlers) are running.
        assert ping.delay().result(timeout=30, poll_interval=0.01) == "pong"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "returned" in out


def test_a_bad_log_level_is_a_usage_error(app: ModuleType, tmp_path: Path) -> None:
    proc = taskito(tmp_path, "worker", "--app", "cliapp:queue", "--log-level", "loud")
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "invalid choice: 'LOUD'" in err


def test_db_url_runs_the_apps_tasks_on_a_postgres_database(tmp_path: Path) -> None:
    # The app's own Queue is a SQLite file; --db-url serves its tasks from
    # PostgreSQL instead, in the app's schema.
    with scratch_schema() as postgres:
        app = APP.format(db=str(tmp_path / "jobs.db")).replace(
            "workers=2)", f"workers=2, schema={postgres['schema']!r})"
        )
        (tmp_path / "pgapp.py").write_text(app)
        url = postgres["db_url"]
        with Queue(**postgres) as producer:
            producer.task(name="pgapp.add")(lambda a, b: a + b)
            job = producer.enqueue("pgapp.add", (2, 3))
            worker = taskito(tmp_path, "worker", "--app", "pgapp:queue", "--db-url", url)
            try:
                assert job.result(timeout=30) == 5
            finally:
                worker.send_signal(signal.SIGTERM)
                out, err = worker.communicate(timeout=30)
            assert worker.returncode == 0, err
            assert url.partition("://")[2] in err, "the log names the database it serves"
        info = taskito(tmp_path, "info", "--app", "pgapp:queue", "--db-url", url, "--json")
        out, err = info.communicate(timeout=30)
        assert info.returncode == 0, err
        shown = json.loads(out)
        assert shown["db_path"] == url and shown["stats"]["completed"] == 1
