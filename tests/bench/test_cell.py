"""The cell's arithmetic: percentiles and the drain, on small exact inputs;
the order of its idle-gap round trips."""

from __future__ import annotations

import time
from typing import Any

import pytest

from benchmarks.cell import after_idle_gaps, drain, percentile, percentiles
from benchmarks.engines.base import Adapter
from benchmarks.grid import Cell


def test_percentile_is_the_nearest_rank() -> None:
    hundred = [float(i) for i in range(100, 0, -1)]  # 100..1, unsorted on purpose
    assert percentile(hundred, 99) == 99.0, "p99 of 100 samples is the 99th smallest, not the maximum"
    assert percentile(hundred, 95) == 95.0
    assert percentile(hundred, 50) == 50.0
    assert percentile(hundred, 100) == 100.0
    assert percentile(hundred, 1) == 1.0
    # ceil(n * p / 100): p50 of 4 is the 2nd, p95 of 20 the 19th, p99 of 101 the 100th.
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 21)], 95) == 19.0
    assert percentile([float(i) for i in range(1, 102)], 99) == 100.0
    # Too few samples for the rank to fall short of the top: the largest.
    assert percentile([float(i) for i in range(1, 11)], 99) == 10.0
    assert percentile([7.0], 50) == 7.0


def test_percentiles_are_in_milliseconds_and_none_without_samples() -> None:
    assert percentiles([i / 1000 for i in range(1, 101)]) == pytest.approx((50.0, 95.0, 99.0))
    assert percentiles([]) is None


@pytest.mark.parametrize(("samples", "percent"), [([], 50), ([1.0], 0), ([1.0], 101)])
def test_percentile_refuses_what_has_no_rank(samples: list[float], percent: int) -> None:
    with pytest.raises(ValueError):
        percentile(samples, percent)


START = 1_800_000_000.0  # Unix time, as the engines record it


def test_drain_splits_start_up_from_the_rate_of_running_workers() -> None:
    # Workers took 0.5 s to finish their first job, then one job per millisecond.
    times = [START + 0.5 + i / 1000 for i in range(1000)]
    first_completion_s, rate = drain(times[::-1], START, START + 10)
    assert first_completion_s == pytest.approx(0.5)
    assert rate == pytest.approx(1000)


def test_drain_rate_does_not_depend_on_how_much_was_done_at_any_moment() -> None:
    # The pool finishes the whole backlog within 4 ms of starting: what a
    # 2 ms poll read as 250,000/s or 500/s depending on when it looked.
    times = [START + 0.000_05 + i * 0.000_004 for i in range(1000)]
    first_completion_s, rate = drain(times, START, START + 1)
    # A float holds Unix time to about 0.24 µs.
    assert first_completion_s == pytest.approx(0.000_05, abs=1e-6)
    assert rate == pytest.approx(250_000, rel=1e-3)


def test_drain_without_an_interval_has_no_rate() -> None:
    assert drain([START + 1, START + 1], START, START + 2) == (pytest.approx(1.0), None)


@pytest.mark.parametrize(
    ("times", "message"),
    [
        ([START + 1, None, None], "2 of the drain's 3 jobs have no completion time"),
        ([START - 0.001, START + 1], "fall outside the drain"),  # before the workers started
        ([START + 1, START + 3], "fall outside the drain"),  # after the times were read
        ([START + 1], "at least 2 jobs"),
    ],
)
def test_drain_refuses_times_that_cannot_be_the_drains(times: list[float | None], message: str) -> None:
    with pytest.raises((RuntimeError, ValueError), match=message):
        drain(times, START, START + 2)


class Recorder(Adapter):
    """An engine that runs each job as it is enqueued, noting every call and when."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []

    def note(self, call: str) -> None:
        self.calls.append((call, time.monotonic()))

    def describe(self) -> dict[str, str]:
        return {}

    def start_workers(self) -> None:
        self.note("start")

    def stop_workers(self) -> None:
        self.note("stop")

    def enqueue_one(self, arg: int) -> int:
        self.note(f"enqueue {arg}")
        return arg

    def finished(self) -> int:
        return 0

    def finished_at(self, handles: list[Any]) -> list[float | None]:
        return []

    def result(self, handle: Any, timeout: float) -> Any:
        self.note(f"result {handle}")
        return handle

    def failures(self, handles: list[Any]) -> int:
        return 0

    def check(self) -> None:
        self.note("check")


def test_idle_round_trips_each_follow_a_gap_and_a_check_of_the_workers() -> None:
    adapter = Recorder()
    cell = Cell("taskito", "file", 1, "noop", 10, 1, 0, 0, idle_samples=3, idle_gap=0.02)
    start = time.monotonic()
    seconds, jobs = after_idle_gaps(adapter, cell)
    assert jobs == [0, 1, 2]
    assert len(seconds) == 3 and all(s >= 0 for s in seconds)
    assert [call for call, _ in adapter.calls] == [
        "check", "enqueue 0", "result 0", "check", "enqueue 1", "result 1", "check", "enqueue 2", "result 2",
    ]  # fmt: skip
    # Each round trip starts at least a gap after the previous one ended.
    ends = [start] + [at for call, at in adapter.calls if call.startswith("result")]
    starts = [at for call, at in adapter.calls if call.startswith("enqueue")]
    assert all(begin - end >= 0.02 for begin, end in zip(starts, ends, strict=False))


def test_no_idle_samples_take_no_time() -> None:
    adapter = Recorder()
    assert after_idle_gaps(adapter, Cell("taskito", "file", 1, "noop", 10, 1, 0, 0, idle_gap=60)) == ([], [])
    assert adapter.calls == []
