"""Ctrl-C of a sweep: a real ``python -m benchmarks`` sent SIGINT while a
cell runs with its `taskito worker` process. It kills the cell and the
worker, has the schemas the cell listed dropped, keeps the rows already
written, says where they are and exits with status 130, no traceback."""

from __future__ import annotations

import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from benchmarks import cli, compare
from benchmarks.pg import SCHEMAS_FILE
from tests.bench.test_sweep import ROOT, read

# The schema a cell of the postgres mode would have listed (engines/pgcell.py).
SCHEMA = "bench_interrupted_cell"


def stand_in_python(tmp_path: Path, dropped: Path) -> Path:
    """An interpreter that runs every cell as it is, but first lists a
    PostgreSQL schema in the folder of the io_sleep cell, as a cell of the
    postgres mode does before it makes one; and that answers the sweep's
    ``cleanup`` call for a cell's folder by noting the schemas listed there
    in ``dropped``, as the real one drops them (tested with a server in
    test_postgres.py). Its arguments: -c BOOT run|probe|cleanup CELL_JSON [FOLDER]."""
    python = tmp_path / "python"
    real = shlex.quote(sys.executable)
    result = shlex.quote(f'BENCH-RESULT {{"dropped": ["{SCHEMA}"]}}')
    python.write_text(
        "#!/bin/sh\n"
        'case "$3" in\n'
        f'  run) case "$4" in *io_sleep*) echo {SCHEMA} > "$5/{SCHEMAS_FILE}";; esac;;\n'
        f'  cleanup) cat "$5/{SCHEMAS_FILE}" >> {shlex.quote(str(dropped))}; echo {result}; exit 0;;\n'
        "esac\n"
        f'exec {real} "$@"\n'
    )
    python.chmod(0o755)
    return python


def lines_of(stream: Iterable[str]) -> queue.Queue[str | None]:
    """The lines of a text stream as they come, then None at its end."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def wait_for_line(lines: queue.Queue[str | None], wanted: Callable[[str], bool], timeout: float) -> list[str]:
    """The lines read until one that is ``wanted`` (included)."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        assert line is not None, "the sweep ended first:\n" + "".join(seen)
        seen.append(line)
        if wanted(line):
            return seen


def processes_in(folder: Path) -> dict[int, str]:
    """Living processes whose working directory is in ``folder``: a cell
    and its worker processes run in the cell's folder. pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone, or not ours to read
            continue
        if cwd.startswith(str(folder)):
            found[int(entry.name)] = command
    return found


def still_running(pid: int, command: str) -> bool:
    """Whether ``pid`` is alive and still runs ``command`` (not a reused pid)."""
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        ) == command
    except OSError:
        return False


def wait_for_worker(folder: Path, timeout: float) -> dict[int, str]:
    """The processes in ``folder`` once a `taskito worker` is among them.
    Polls /proc: nothing tells this test when the cell starts its worker."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = processes_in(folder)
        if any(" worker " in command for command in found.values()):
            return found
        time.sleep(0.05)
    pytest.fail(f"no `taskito worker` process started in {folder} within {timeout}s")


@pytest.mark.slow
def test_ctrl_c_kills_the_running_cell_keeps_the_rows_written_and_exits_130(tmp_path: Path) -> None:
    out, work, dropped = tmp_path / "stopped.csv", tmp_path / "work", tmp_path / "dropped"
    work.mkdir()
    python = stand_in_python(tmp_path, dropped)
    # Two cells, each with one `taskito worker` process: noop, whose 3,000
    # warm-up jobs take a second or two, then io_sleep, whose 3,000 take 15 s
    # (5 ms each on one worker): Ctrl-C comes while it warms up.
    command = [
        sys.executable, "-m", "benchmarks", "sweep", "--engines", "taskito", "--python", f"taskito={python}",
        "--db", "file", "--placement", "process", "--workers", "1", "--tasks", "noop,io_sleep",
        "--jobs", "20", "--repeat", "1", "--samples", "2", "--warmup", "3000",
        "--workdir", str(work), "--out", str(out),
    ]  # fmt: skip
    with subprocess.Popen(
        command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as sweep:
        assert sweep.stderr is not None and sweep.stdout is not None
        try:
            errors = lines_of(sweep.stderr)
            before = wait_for_line(errors, lambda line: line.startswith("[1/2] "), timeout=90)
            assert " ok " in before[-1], "".join(before)
            running = wait_for_worker(work, timeout=60)
            sweep.send_signal(signal.SIGINT)
            assert sweep.wait(timeout=60) == 130
        finally:
            if sweep.poll() is None:
                sweep.kill()
                sweep.wait()
        after = []
        while (line := errors.get(timeout=10)) is not None:
            after.append(line)
        stdout = sweep.stdout.read()

    assert "Traceback" not in "".join(after) + stdout, "".join(after)
    assert after == [
        f"dropped the schemas the cell left: {SCHEMA}\n",
        f"stopped by Ctrl-C: 1 of 2 cells finished; their rows are in {out}\n",
    ], after
    # The cell and its worker, killed; the cell's folder, removed.
    assert processes_in(work) == {}, "the interrupted cell or its worker outlived the sweep"
    assert not any(still_running(pid, command) for pid, command in running.items())
    assert list(work.iterdir()) == []
    # The schemas it listed, handed to the cleanup that drops them.
    assert dropped.read_text().split() == [SCHEMA]
    # The row of the cell that finished, in a CSV that compare reads.
    _, rows = read(out)
    assert [(r["task"], r["status"]) for r in rows] == [("noop", "ok")]
    assert len(compare.load(out)) == 1
    assert cli.main(["compare", str(out)]) == 0


def test_ctrl_c_while_engines_are_probed_writes_nothing_and_exits_130(tmp_path: Path) -> None:
    out, probing = tmp_path / "never.csv", tmp_path / "probing"
    # An interpreter whose probe says it started, then never answers.
    python = tmp_path / "python"
    python.write_text(
        f'#!/bin/sh\nif [ "$3" = probe ]; then touch {shlex.quote(str(probing))}; exec sleep 300; fi\n'
        f'exec {shlex.quote(sys.executable)} "$@"\n'
    )
    python.chmod(0o755)
    command = [
        sys.executable, "-m", "benchmarks", "sweep", "--engines", "taskito", "--python", f"taskito={python}",
        "--db", "memory", "--placement", "thread", "--workers", "1", "--out", str(out),
    ]  # fmt: skip
    with subprocess.Popen(
        command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as sweep:
        try:
            wait_for_file(probing, timeout=60)
            sweep.send_signal(signal.SIGINT)
            stdout, stderr = sweep.communicate(timeout=60)
        finally:
            if sweep.poll() is None:
                sweep.kill()
                sweep.communicate()
    assert sweep.returncode == 130
    assert "Traceback" not in stderr + stdout, stderr
    assert stderr.splitlines()[-1] == "stopped by Ctrl-C before the first cell: nothing written"
    assert not out.exists()


def wait_for_file(path: Path, timeout: float) -> None:
    """Returns once ``path`` exists. Polls: the probe has no other way to say it started."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"{path} did not appear within {timeout}s")
        time.sleep(0.05)
