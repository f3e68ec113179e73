"""benchmarks.targets: its configurations, the median of its runs, and one tiny run."""

from __future__ import annotations

import importlib.util
import os
import re

import pytest

from benchmarks import pool_targets, targets


def test_the_default_and_eight_workers_are_one_configuration_on_eight_cpus() -> None:
    assert [c.label for c in targets.configs(2)] == [
        "taskito :memory: workers=2",
        "taskito :memory: workers=8",
        "taskito file workers=2",
        "taskito file workers=8",
        "ThreadPoolExecutor(2)",
        "huey SqliteHuey workers=2",
    ]
    assert [c.label for c in targets.configs(8)][:2] == [
        "taskito :memory: workers=8",
        "taskito file workers=8",
    ]


def test_median_is_taken_over_the_runs_that_measured_the_metric() -> None:
    runs = [{"drain_per_s": 1.0}, {"drain_per_s": 3.0}, {"drain_per_s": None}, {"drain_per_s": 10.0}]
    medians = targets.median(runs)
    assert medians["drain_per_s"] == 3.0
    assert medians["latency_rtt_p50_ms"] is None


def test_a_tiny_run_prints_every_configuration_the_notes_and_the_verdicts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--jobs", "20", "--latency-samples", "5", "--warmup", "5", "--repeat", "1"]
    args += ["--cross-samples", "3", "--idle-samples", "2", "--idle-gap", "0.05", "--groups", "engine,cross"]
    assert targets.main(args) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    pool = next(line for line in lines if line.startswith("ThreadPoolExecutor(2)"))
    assert pool.split()[1] == "-", "the pool has no enqueue figure"
    assert " 1.00x " in pool
    assert "its process figure includes a submit() per job" in out
    if importlib.util.find_spec("huey") is not None:
        assert any(line.startswith("huey SqliteHuey workers=2") for line in lines)
    for db in (":memory:", "file"):
        verdict = next(line for line in lines if line.startswith(f"  {db} "))
        assert all(f"{name} " in verdict for name in ("enqueue", "process", "8 workers", "p50", "p99"))

    # Across processes: every target with its value and PASS or MISS.
    assert any(line.startswith(f"taskito file workers={os.cpu_count()}, 1 process ") for line in lines)
    cross = lines[lines.index(next(line for line in lines if line.startswith("cross-process targets"))) :]
    verdicts = [line for line in cross if line.startswith("  ")]
    assert [line.split("  ")[1] for line in verdicts] == [
        "round trip, back to back",
        "round trip, after 0.05 s idle",
        "drain, 2 processes / threads",
    ]
    for line in verdicts[:2]:
        assert re.search(r"p50 [\d.,]+ ms (PASS|MISS), p99 [\d.,]+ ms (PASS|MISS)$", line), line
    assert re.search(r"[\d.]+x (PASS|MISS) \([\d,]+/s / [\d,]+/s\)$", verdicts[2]), verdicts[2]


def test_the_cross_process_configurations_are_one_and_two_worker_processes() -> None:
    one, two = targets.cross_configs(2, samples=200)
    assert (one.label, one.placement, one.processes, one.samples, one.idle) == (
        "taskito file workers=2, 1 process",
        "process",
        1,
        200,
        True,
    )
    assert (two.label, two.processes, two.idle) == ("taskito file workers=2, 2 processes", 2, False)


# A run small enough to finish in seconds, were a bad flag let through.
TINY = ["--jobs", "20", "--latency-samples", "2", "--warmup", "2", "--repeat", "1"]
TINY += ["--cross-samples", "2", "--idle-samples", "1", "--idle-gap", "0.01", "--cell-timeout", "60"]


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--warmup", "-1", "must be at least 0, got -1"),
        ("--cell-timeout", "0", "must be at least 0.001, got 0.0"),
        ("--cell-timeout", "-5", "must be at least 0.001, got -5.0"),
        ("--cell-timeout", "nan", "'nan' is not a finite number"),
        ("--idle-gap", "0", "must be at least 0.001, got 0.0"),
        ("--idle-gap", "inf", "'inf' is not a finite number"),
        ("--jobs", "1", "must be at least 2, got 1"),
        ("--jobs", "2.5", "'2.5' is not a whole number"),
        ("--jobs", "many", "'many' is not a number"),
        ("--repeat", "0", "must be at least 1, got 0"),
        ("--latency-samples", "0", "must be at least 1, got 0"),
        ("--cross-samples", "-3", "must be at least 1, got -3"),
        ("--idle-samples", "0", "must be at least 1, got 0"),
    ],
)
def test_a_bad_numeric_flag_is_one_usage_error(
    flag: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit:
        targets.main([*TINY, flag, value])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m benchmarks.targets ")
    assert err.splitlines()[-1] == f"python -m benchmarks.targets: error: argument {flag}: {message}"


def test_the_cross_process_group_alone_brings_the_in_process_drain_it_is_set_against(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = [*TINY, "--groups", "cross"]
    assert targets.main(args) == 0
    out = capsys.readouterr().out
    assert f"taskito file workers={os.cpu_count()} " in out
    assert re.search(r"drain, 2 processes / threads +[\d.]+x (PASS|MISS)", out)
    assert not any(line.startswith("ThreadPoolExecutor(2) ") for line in out.splitlines())
    assert "issue 13 targets" not in out


def test_issue_13s_targets_each_print_a_value_and_a_verdict_or_why_not(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = [
        *TINY,
        "--groups",
        "issue13",
        "--cpu-jobs",
        "20",
        "--async-jobs",
        "40",
        "--async-concurrency",
        "20",
    ]
    assert targets.main(args) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for label in (pool_targets.CPU_PROCESSES, pool_targets.CPU_THREADS, pool_targets.ASYNC_TASKITO):
        assert any(line.startswith(label + " ") for line in lines), label
    verdicts = [
        line for line in lines[lines.index(next(x for x in lines if x.startswith("issue 13 targets"))) :]
    ]
    verdicts = [line.strip() for line in verdicts if line.startswith("  ")]
    names = [
        "cpu_ms, 2 processes x 1 / 1 process x 2 threads",
        "cpu_ms, 2 processes x 1 / Celery prefork, 2 processes",
        "async_sleep, 1 taskito worker process",
        "async_sleep, taskito / saq (1 process each)",
        "async_sleep, taskito / taskiq (1 process each)",
        "noop, 2 processes x 1 / 1 process x 2 threads",
    ]
    assert [line[:58].strip() for line in verdicts] == names
    measured = r"[\d.,]+(x|/s) (PASS|MISS)"
    for line in verdicts:
        # A peer that cannot run here (no Redis, not installed) says so instead of a number.
        assert re.search(measured, line) or "not measured: " in line, line
    # taskito's own are always measured.
    for line in (verdicts[0], verdicts[2], verdicts[5]):
        assert re.search(measured, line), line
