"""The README's Python examples run as written, and its deployment advice holds."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_the_readme_has_examples() -> None:
    assert BLOCKS


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(code: str, tmp_path: Path) -> None:
    # A fresh interpreter in a fresh folder: the example's files land there.
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    if "cat.png resized to 640px" in code:
        assert proc.stdout.splitlines() == [
            "cat.png resized to 640px",
            "['a.png resized to 100px', 'b.png resized to 200px']",
        ]
    if 'report.s("rows")' in code:  # the workflows example: its comments hold
        assert proc.stdout.splitlines() == ["106 rows: 24", "[3, 7] [6, 22, 17] [0, 2, 4, 6, 8, 10]"]


def test_the_two_setup_commands_exist() -> None:
    setup = README.read_text().split("## Set up", 1)[1]
    block = re.search(r"```sh\n(.*?)```", setup, re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["scripts/bench", "scripts/test"]
    for command in commands:
        script = README.parent / command
        assert script.is_file() and os.access(script, os.X_OK), command


def test_the_systemd_unit_outlasts_the_graceful_shutdown() -> None:
    import configparser
    import inspect
    import shlex

    from taskito import Queue
    from taskito.cli import _parser

    unit_text = re.search(r"```ini\n(.*?)```", README.read_text(), re.S)
    assert unit_text is not None
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # keep the keys as systemd spells them
    unit.read_string(unit_text.group(1))
    service = unit["Service"]
    default_grace = inspect.signature(Queue).parameters["shutdown_timeout"].default
    assert float(service["TimeoutStopSec"]) > default_grace
    assert (service["KillSignal"], service["Restart"]) == ("SIGTERM", "on-failure")
    # The command line is one the CLI accepts.
    command = shlex.split(service["ExecStart"])
    assert command[0].endswith("/taskito")
    args = _parser().parse_args(command[1:])
    assert (args.command, args.log_format) == ("worker", "json")


def test_the_backup_commands_copy_a_database_in_use(tmp_path: Path) -> None:
    if shutil.which("sqlite3") is None:
        pytest.skip("needs the sqlite3 shell")
    from taskito import Queue

    backups = README.read_text().split("### Backing up the database", 1)[1]
    block = re.search(r"```sh\n(.*?)```", backups, re.S)
    assert block is not None
    commands = [line for line in block.group(1).splitlines() if line.startswith("sqlite3 ")]
    assert len(commands) == 2
    db = tmp_path / "tasks.db"
    (tmp_path / "backups").mkdir()
    with Queue(db) as q:
        task = q.task(name="t")(lambda: None)
        task.map([()] * 500)
        # While the Queue has the file open, with commits still in the -wal.
        for command in commands:
            command = command.replace("/srv/myapp/tasks.db", str(db))
            command = command.replace("/backups/", f"{tmp_path}/backups/")
            proc = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, proc.stderr
        task.map([()] * 10)
    copies = sorted((tmp_path / "backups").iterdir())
    assert len(copies) == 2
    for copy in copies:
        with Queue(copy) as restored:
            assert restored.stats()["pending"] == 500, copy
