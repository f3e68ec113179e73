"""benchmarks/test_throughput.py: pytest-benchmark tests on the plugin's fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parent.parent.parent / "benchmarks" / "test_throughput.py"


def test_the_benchmarks_run_and_report_jobs_per_second(project: pytest.Pytester) -> None:
    project.makepyfile(test_throughput=BENCHMARKS.read_text())
    report = project.path / "bench.json"
    # Few rounds and little time: this checks that they work, it measures nothing.
    result = project.runpytest(
        "--benchmark-only",
        "--taskito-workers=8",
        "--benchmark-max-time=0.01",
        "--benchmark-min-rounds=1",
        f"--benchmark-json={report}",
    )
    result.assert_outcomes(passed=3)
    benchmarks = {b["name"]: b["extra_info"] for b in json.loads(report.read_text())["benchmarks"]}
    assert set(benchmarks) == {"test_enqueue_with_map", "test_enqueue_and_process", "test_round_trip"}
    for info in benchmarks.values():
        assert info["jobs_per_s"] > 0
    assert benchmarks["test_enqueue_and_process"]["workers"] == 8


def test_the_benchmarks_run_once_when_disabled(project: pytest.Pytester) -> None:
    project.makepyfile(test_throughput=BENCHMARKS.read_text())
    project.runpytest("--benchmark-disable", "--taskito-db=file").assert_outcomes(passed=3)
