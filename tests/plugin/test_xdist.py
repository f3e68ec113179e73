"""Under pytest-xdist: one database per process, and a warning when the
processes' worker threads outnumber the CPUs."""

from __future__ import annotations

import pytest

from .conftest import SUBPROCESS_LIMIT, cpu_count

PER_PROCESS = """
import os
import pytest

@pytest.mark.parametrize("i", range(4))
def test_one_database_per_process(i, queue, worker):
    me = os.environ["PYTEST_XDIST_WORKER"]
    assert queue.db_path.endswith(f"taskito-{me}.db"), queue.db_path

    @queue.task()
    def whoami():
        return os.environ["PYTEST_XDIST_WORKER"]

    assert worker.run_until_complete([whoami.delay()]) == [me]

@pytest.mark.parametrize("i", range(2))
def test_session_database_per_process(i, session_queue, session_worker):
    me = os.environ["PYTEST_XDIST_WORKER"]
    assert session_queue.db_path.endswith(f"taskito-{me}.db"), session_queue.db_path
"""


@pytest.mark.slow
def test_each_xdist_process_has_its_own_database(project: pytest.Pytester) -> None:
    project.makepyfile(PER_PROCESS)
    threads = cpu_count()  # so that 2 processes x threads always exceed the CPUs
    result = project.runpytest_subprocess(
        "-p",
        "xdist",
        "-n",
        "2",
        "--taskito-db=file",
        f"--taskito-workers={threads}",
        timeout=SUBPROCESS_LIMIT,
    )
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(
        [
            f"taskito: WARNING: 2 xdist processes x {threads} taskito worker threads = {2 * threads} "
            f"> {cpu_count()} CPUs; tasks will wait for CPU (lower -n or --taskito-workers)"
        ]
    )


def test_no_warning_without_xdist(project: pytest.Pytester) -> None:
    project.makepyfile("def test_x(): pass")
    result = project.runpytest(f"--taskito-workers={cpu_count() * 4}")
    result.assert_outcomes(passed=1)
    assert "WARNING" not in result.stdout.str()
