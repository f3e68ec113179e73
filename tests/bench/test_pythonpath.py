"""Under --python, the other interpreter's engine is the one imported: by the
probe, by the cell and by its worker processes, even when the sweep runs
from this tree's root, whose own ``taskito`` would otherwise shadow it."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import pythonpath, sweep
from benchmarks.engines.base import WorkerProcess
from benchmarks.grid import Cell
from tests.bench.test_sweep import ROOT, bench

TREE_TASKITO = str((ROOT / "taskito").resolve())


@pytest.fixture
def venv(tmp_path: Path) -> tuple[Path, Path]:
    """A venv made by this interpreter with a copy of this tree's taskito
    installed in it (as a release of it, or another project of the same
    name, would be), and nothing else: (its python, its taskito's folder)."""
    home = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(home)], check=True)
    (site,) = home.glob("lib/python*/site-packages")
    shutil.copytree(ROOT / "taskito", site / "taskito", ignore=shutil.ignore_patterns("__pycache__"))
    return home / "bin" / "python", (site / "taskito").resolve()


def test_the_probe_imports_the_other_interpreters_taskito_from_the_trees_root(
    venv: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    python, installed = venv
    monkeypatch.chdir(ROOT)  # where `python -m benchmarks` runs: the tree's taskito is right here
    answer = sweep.probe(Cell("taskito@venv", "file", 1, "noop", 10, 1, 1, 0), str(python))
    assert answer["available"], answer["reason"]
    assert answer["engine_path"] == str(installed)
    assert answer["python_executable"] == str(python)


def test_cells_and_their_worker_processes_import_the_other_interpreters_taskito(
    venv: tuple[Path, Path], tmp_path: Path
) -> None:
    python, installed = venv
    out = tmp_path / "venv.csv"
    proc = bench(
        "sweep", "--engines", "taskito@venv", "--python", f"taskito@venv={python}", "--db", "file",
        "--placement", "thread,process", "--workers", "1", "--jobs", "10", "--repeat", "1", "--samples", "2",
        "--warmup", "2", "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["placement"], r["status"]) for r in rows] == [("thread", "ok"), ("process", "ok")]
    assert {r["engine_path"] for r in rows} == {str(installed)}
    assert {r["python_executable"] for r in rows} == {str(python)}


def test_a_worker_process_imports_benchmarks_from_the_tree_and_nothing_else(
    venv: tuple[Path, Path], tmp_path: Path
) -> None:
    python, installed = venv
    code = "import benchmarks, taskito; print(benchmarks.__file__); print(taskito.__file__)"
    worker = WorkerProcess([str(python), "-c", code], tmp_path, "imports")
    worker.start()
    assert worker.proc is not None
    assert worker.proc.wait(30) == 0, worker.tail()
    benchmarks_file, taskito_file = worker.log.read_text().split()
    assert Path(benchmarks_file).parent == tmp_path / pythonpath.FOLDER / "benchmarks"
    assert Path(benchmarks_file).resolve().parent == pythonpath.PACKAGE
    assert Path(taskito_file).resolve().parent == installed


def test_the_exposed_folder_holds_only_benchmarks_and_is_made_once(tmp_path: Path) -> None:
    path = pythonpath.expose(tmp_path)
    assert pythonpath.expose(tmp_path) == path
    assert [p.name for p in path.iterdir()] == ["benchmarks"]
    assert (path / "benchmarks").resolve() == pythonpath.PACKAGE
    env = pythonpath.environment(path, {"PYTHONPATH": "/elsewhere"})
    assert env["PYTHONPATH"] == f"{path}{os.pathsep}/elsewhere"
    # The cell's folder goes, and the link with it, not what it points to.
    shutil.rmtree(tmp_path)
    assert (pythonpath.PACKAGE / "cell.py").exists()


def test_taskito_ref_without_an_interpreter_of_its_own_is_skipped_saying_how(tmp_path: Path) -> None:
    out = tmp_path / "ref.csv"
    proc = bench(
        "sweep", "--engines", "taskito-ref", "--db", "file", "--workers", "1", "--jobs", "10",
        "--repeat", "1", "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 1, "no cell finished"
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["placement"], r["status"]) for r in rows] == [("thread", "skipped"), ("process", "skipped")]
    assert "--python taskito-ref=" in rows[0]["error"]
    assert "taskito-ref: skipped: no --python taskito-ref=..." in proc.stderr


def test_taskito_ref_refuses_an_interpreter_whose_taskito_is_this_trees() -> None:
    answer = sweep.probe(Cell("taskito-ref", "file", 1, "noop", 10, 1, 1, 0), sys.executable)
    assert not answer["available"]
    assert f"the taskito this interpreter imports is this tree's ({TREE_TASKITO})" in answer["reason"]
