"""The PyPI reference as an engine, under an interpreter that has it:
BENCH_TASKITO_REF_PYTHON=/path/to/venv/bin/python (a venv with ``pip install
taskito``). Without it there is nothing to run these against."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from benchmarks import provenance
from tests.bench.test_sweep import ROOT, bench

REFERENCE = os.environ.get("BENCH_TASKITO_REF_PYTHON", "")

pytestmark = pytest.mark.skipif(
    not REFERENCE, reason="set BENCH_TASKITO_REF_PYTHON to the python of a venv with the PyPI taskito"
)


def test_the_reference_runs_with_its_workers_in_threads_and_in_taskito_worker_processes(
    tmp_path: Path,
) -> None:
    out = tmp_path / "ref.csv"
    proc = bench(
        "sweep", "--engines", "taskito-ref", "--python", f"taskito-ref={REFERENCE}", "--db", "file",
        "--placement", "thread,process", "--workers", "2", "--jobs", "20", "--repeat", "1", "--samples", "3",
        "--warmup", "3", "--idle-samples", "1", "--idle-gap", "0.05", "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["placement"], r["processes"], r["status"]) for r in rows] == [
        ("thread", "0", "ok"),
        ("process", "1", "ok"),
    ], [r["error"] for r in rows]
    for row in rows:
        assert not provenance.vouches_for(ROOT, row["engine_path"]), (
            "this tree's taskito is not the reference"
        )
        assert row["python_executable"] == REFERENCE
        assert row["engine_build"].startswith("_taskito") and " sha256:" in row["engine_build"]
        assert row["store_version"].startswith("sqlite 3.")
        assert float(row["drain_per_s"]) > 0 and row["failures"] == "0"
        assert float(row["latency_rtt_idle_p50_ms"]) > 0
    assert "1 x `taskito worker --app benchmarks.apps.taskito_app:queue`" in rows[1]["engine_setup"]
