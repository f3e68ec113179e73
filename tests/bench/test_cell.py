"""The cell's arithmetic: percentiles and the drain, on small exact inputs."""

from __future__ import annotations

import pytest

from benchmarks.cell import percentile, percentiles


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
