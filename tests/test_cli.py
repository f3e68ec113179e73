"""The ``taskito`` command, run as a real subprocess."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TextIO

import pytest

from taskito import Queue, TaskFailedError
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
    assert f"worker starting: database {tmp_path / 'jobs.db'}, 3 thread(s)" in err
    assert app.queue.stats()["running"] == 0
    # At the default level (INFO), jobs that succeed log nothing.
    assert not [job.id for job in jobs if job.id in err], err


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
    assert "received SIGINT: stopping gracefully" in err and "send it again (Ctrl-C) to stop now" in err
    assert "Traceback" not in err


class StderrLines:
    """Reads a process's stderr as it comes, so a test can wait for a line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        assert proc.stderr is not None
        self._reader = threading.Thread(target=self._read, args=(proc.stderr,), daemon=True)
        self._reader.start()

    def _read(self, stream: TextIO) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def join(self) -> str:
        """Everything the process wrote, once it has exited."""
        self._reader.join(timeout=30)
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 30) -> None:
        with self._changed:
            found = self._changed.wait_for(lambda: any(text in line for line in self.lines), timeout)
        assert found, f"no line with {text!r} in {self.lines}"


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_second_signal_stops_at_once_and_hands_the_job_back(
    app: ModuleType, tmp_path: Path, sig: signal.Signals, status: int
) -> None:
    worker = taskito(tmp_path, "worker", "--app", "cliapp:queue", "--queues", "slow,default")
    stderr = StderrLines(worker)
    job = app.wait_for.delay(str(tmp_path / "never"))  # runs until interrupted
    try:
        while job.status != "running":
            with pytest.raises(TimeoutError):
                job.result(timeout=0.05)
        worker.send_signal(sig)
        stderr.wait_for("stopping gracefully")
        worker.send_signal(sig)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
        err = stderr.join()
        for pipe in (worker.stdout, worker.stderr):
            assert pipe is not None
            pipe.close()
    assert worker.returncode == status, err
    assert f"received {sig.name} again: stopping now" in err
    assert "Traceback" not in err
    # Back in the queue as if it never started: the operator stopped it.
    record = job.to_dict()
    assert (record["status"], record["attempt"], record["started_at"]) == ("pending", 0, None)


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


def test_info_lists_periodic_tasks_with_their_next_run(tmp_path: Path) -> None:
    (tmp_path / "cronapp.py").write_text(
        textwrap.dedent(
            f"""
            from taskito import Queue
            queue = Queue({str(tmp_path / "cron.db")!r})

            @queue.periodic(cron="0 3 * * *", name="nightly", timezone="Asia/Tokyo")
            def nightly():
                pass
            """
        )
    )
    proc = taskito(tmp_path, "info", "--app", "cronapp:queue")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    [line] = [line for line in out.splitlines() if "nightly" in line and "0 3 * * *" in line]
    assert "(Asia/Tokyo), next run " in line and "T18:00:00+00:00" in line
    assert "no worker has recorded it yet" in line
    proc = taskito(tmp_path, "info", "--app", "cronapp:queue", "--json")
    out, _ = proc.communicate(timeout=60)
    [row] = json.loads(out)["periodic"]
    assert (row["name"], row["task_name"], row["registered"]) == ("nightly", "nightly", False)


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
        assert shown["db_path"] == url and shown["stats"]["complete"] == 1


ASYNC_APP = """
import asyncio
from taskito import Queue

queue = Queue(db_path={db!r}, workers=1)

@queue.task(name="nap")
async def nap(i):
    await asyncio.sleep(0.01)
    return i
"""


def test_the_worker_runs_coroutines_up_to_async_concurrency(tmp_path: Path) -> None:
    (tmp_path / "asyncapp.py").write_text(ASYNC_APP.format(db=str(tmp_path / "a.db")))
    worker = taskito(tmp_path, "worker", "--app", "asyncapp:queue", "--async-concurrency", "50")
    try:
        with Queue(str(tmp_path / "a.db")) as producer:
            nap = producer.task(name="nap")(lambda i: i)
            assert [j.result(timeout=30) for j in nap.map([(i,) for i in range(100)])] == list(range(100))
    finally:
        worker.send_signal(signal.SIGTERM)
        _out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    proc = taskito(tmp_path, "worker", "--app", "asyncapp:queue", "--async-concurrency", "0")
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "--async-concurrency must be at least 1" in err


def run_taskito(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskito", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The command's one line on stderr, checked to be a usage/app error without a traceback."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


HELPER = """\
def ratio(a, b):
    return a / b
"""


@pytest.mark.parametrize("command", ["info", "worker"])
@pytest.mark.parametrize(
    ("source", "where"),
    [
        # Raised in the module's own code, in a function it calls at import.
        (
            "from taskito import Queue\nqueue = Queue('q.db')\ndef f():\n    return 1 / 0\nf()\n",
            "myapp.py:4: ZeroDivisionError: division by zero",
        ),
        # Raised inside the standard library: the user's line that called it.
        (
            "import json\nfrom taskito import Queue\nqueue = Queue('q.db')\njson.loads('{')\n",
            "myapp.py:4: JSONDecodeError: Expecting property name",
        ),
        # Raised in another module of the user's: the innermost line, there.
        ("import helper\nhelper.ratio(1, 0)\n", "helper.py:2: ZeroDivisionError: division by zero"),
        ("x = (\n", "myapp.py:1: SyntaxError: '(' was never closed"),
        (
            "import missing_dependency\n",
            "myapp.py:1: ModuleNotFoundError: No module named 'missing_dependency'",
        ),
        # Taskito's own error, at the line of the app that made the Queue.
        (
            "from taskito import Queue\n\nqueue = Queue(workers=-1)\n",
            "myapp.py:3: InvalidArgumentError: workers",
        ),
    ],
)
def test_an_import_failure_names_the_line_that_raised(
    tmp_path: Path, command: str, source: str, where: str
) -> None:
    (tmp_path / "myapp.py").write_text(source)
    (tmp_path / "helper.py").write_text(HELPER)
    line = one_error_line(run_taskito(tmp_path, command, "--app", "myapp:queue"))
    assert line.startswith(f"taskito: error: importing 'myapp' failed: {where}"), line


def test_a_script_that_exits_at_import_is_reported_the_same_way(tmp_path: Path) -> None:
    # A script that does its work at import: reads its own command line, then exits.
    (tmp_path / "report.py").write_text(
        "import sys\nfrom taskito import Queue\nqueue = Queue('q.db')\n"
        "print('report for', sys.argv[1:])\nsys.exit(3)\n"
    )
    line = one_error_line(run_taskito(tmp_path, "worker", "--app", "report:queue"))
    assert "importing 'report' failed: report.py:5: SystemExit: 3" in line
    assert (
        'the module exits when imported: if it is a script, put its work under `if __name__ == "__main__":`'
        in line
    )


def test_a_module_that_starts_a_worker_at_import_is_told_how_to_fix_it(tmp_path: Path) -> None:
    (tmp_path / "eager.py").write_text(
        "from taskito import Queue\nqueue = Queue('q.db')\n\n@queue.task()\ndef f():\n    pass\n\n"
        "queue.start_worker()\n"
    )
    line = one_error_line(run_taskito(tmp_path, "worker", "--app", "eager:queue"))
    assert line == (
        "taskito: error: importing 'eager' started a worker (it calls start_worker() or run_worker() "
        'at import), and `taskito worker` runs its own: put that call under `if __name__ == "__main__":`'
    )


def test_a_module_that_closes_its_queue_at_import_is_told_how_to_fix_it(tmp_path: Path) -> None:
    (tmp_path / "oneshot.py").write_text(
        "from taskito import Queue\nqueue = Queue('q.db')\nprint(queue.stats())\nqueue.close()\n"
    )
    line = one_error_line(run_taskito(tmp_path, "info", "--app", "oneshot:queue"))
    assert "'oneshot:queue' is a closed Queue: importing 'oneshot' closed it" in line
    assert '`if __name__ == "__main__":`' in line


QUICKSTART = """
from taskito import Queue

queue = Queue(db_path="tasks.db", workers=4)


@queue.task(max_retries=3)
def resize(path: str, width: int) -> str:
    return f"{path} resized to {width}px"


if __name__ == "__main__":
    print(resize.name)
    print(resize.delay("cat.png", width=640).result(timeout=30))
"""


def test_the_quickstart_runs_as_a_script_and_a_worker(tmp_path: Path) -> None:
    (tmp_path / "quickstart.py").write_text(QUICKSTART)
    package = tmp_path / "shop"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "jobs.py").write_text(QUICKSTART.replace("tasks.db", "shop.db"))
    workers = [
        taskito(tmp_path, "worker", "--app", "quickstart:queue"),
        taskito(tmp_path, "worker", "--app", "shop.jobs:queue"),
    ]
    try:
        for producer, name in [
            (["quickstart.py"], "quickstart.resize"),
            (["-m", "quickstart"], "quickstart.resize"),
            (["-m", "shop.jobs"], "shop.jobs.resize"),
        ]:
            proc = subprocess.run(
                [sys.executable, *producer], cwd=tmp_path, capture_output=True, text=True, timeout=60
            )
            assert proc.returncode == 0, proc.stderr
            assert proc.stdout.splitlines() == [name, "cat.png resized to 640px"]
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
            worker.communicate(timeout=30)


def test_a_task_defined_in_a_script_without_a_file_is_named_main(tmp_path: Path) -> None:
    code = "from taskito import Queue\nq = Queue(':memory:')\n@q.task()\ndef f(): pass\nprint(f.name)\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert proc.stdout.strip() == "__main__.f", proc.stderr


def stderr_lines_until(proc: subprocess.Popen[str], text: str) -> list[str]:
    """stderr lines read up to the first one containing ``text``."""
    assert proc.stderr is not None
    lines: list[str] = []
    while not lines or text not in lines[-1]:
        line = proc.stderr.readline()
        assert line, "".join(lines)
        lines.append(line)
    return lines


def test_the_worker_warns_when_no_task_is_registered(tmp_path: Path) -> None:
    (tmp_path / "empty.py").write_text(
        f"from taskito import Queue\nqueue = Queue({str(tmp_path / 'e.db')!r})\n"
    )
    worker = taskito(tmp_path, "worker", "--app", "empty:queue")
    try:
        with Queue(str(tmp_path / "e.db")) as observer:
            # Listed as serving the database: it is running (and handles SIGTERM).
            wait_for(lambda: len(observer.workers()) == 1, "the worker to register")
    finally:
        worker.send_signal(signal.SIGTERM)
        _out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    warnings = [line for line in err.splitlines() if " WARNING " in line]
    assert len(warnings) == 1, err
    assert "no task is registered on empty:queue: this worker runs only jobs of its own tasks" in warnings[0]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Looks at ``condition`` every 10 ms until it holds."""
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        tick.wait(0.01)


MEMORY_APP = """
import threading
from taskito import Queue

queue = Queue(":memory:")

@queue.task()
def ping():
    return "pong"

def announce():
    # Returns once a worker runs the job: then the worker handles SIGTERM.
    print(ping.delay().result(timeout=30), flush=True)

threading.Thread(target=announce, daemon=True).start()
"""


def test_the_worker_warns_about_a_memory_database(tmp_path: Path) -> None:
    (tmp_path / "memapp.py").write_text(MEMORY_APP)
    worker = taskito(tmp_path, "worker", "--app", "memapp:queue")
    assert worker.stdout is not None
    assert worker.stdout.readline() == "pong\n"
    worker.send_signal(signal.SIGTERM)
    _out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    warnings = [line for line in err.splitlines() if " WARNING " in line]
    assert len(warnings) == 1, err
    assert "memapp:queue is on :memory:, a database private to this process" in warnings[0]
    assert "no other process can enqueue jobs for this worker" in warnings[0]


def test_a_relative_database_path_is_resolved_once_and_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "relapp.py").write_text(
        "from taskito import Queue\nqueue = Queue('data/jobs.db')\n\n@queue.task()\ndef f():\n    return 1\n"
    )
    worker = taskito(tmp_path, "worker", "--app", "relapp:queue")
    try:
        start = stderr_lines_until(worker, "worker starting")[-1]
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=30)
    absolute = tmp_path / "data" / "jobs.db"
    assert f"database {absolute} (relative path data/jobs.db resolved against {tmp_path})" in start
    # In-process: the Queue keeps the file it was created on after a chdir.
    monkeypatch.chdir(tmp_path)
    with Queue("data/jobs.db") as q:
        monkeypatch.chdir(tmp_path / "data")
        assert q.db_path == str(absolute)
        assert q.stats()["pending"] == 0
    assert not (tmp_path / "data" / "data").exists()


JSON_APP = """
import time
from taskito import Queue

queue = Queue({db!r}, workers=2)

@queue.task()
def ok():
    return 1

@queue.task(timeout=0.2, max_retries=0)
def spins():
    while True:
        time.sleep(0.01)
"""


def test_json_logs_are_one_object_per_line(tmp_path: Path) -> None:
    db = str(tmp_path / "j.db")
    (tmp_path / "jsonapp.py").write_text(JSON_APP.format(db=db))
    worker = taskito(tmp_path, "worker", "--app", "jsonapp:queue", "--log-format", "json")
    try:
        with Queue(db) as producer:
            ok = producer.task(name="jsonapp.ok")(lambda: None).delay()
            # The timeout travels with the job: the producer's options decide it.
            spins = producer.task(name="jsonapp.spins", timeout=0.2, max_retries=0)(lambda: None).delay()
            assert ok.result(timeout=30) == 1
            with pytest.raises(TaskFailedError):
                spins.result(timeout=30)
    finally:
        worker.send_signal(signal.SIGTERM)
        _out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    entries = [json.loads(line) for line in err.splitlines()]
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries), err
    assert all(entry["logger"].startswith("taskito.") for entry in entries), err
    assert entries[0]["logger"] == "taskito.cli"
    assert entries[0]["message"].startswith(f"worker starting: database {db}, 2 thread(s)")
    timed_out = [entry for entry in entries if entry.get("job_id") == spins.id]
    # The timeout (then the interrupted attempt's late outcome, discarded).
    assert timed_out, err
    assert timed_out[0]["level"] == "WARNING"
    assert "attempt 1 ran past its timeout" in timed_out[0]["message"]
    # At the default level (INFO), a job that succeeds logs nothing.
    assert ok.id not in err
