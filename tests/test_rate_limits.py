"""Rate limits in one process: what rate_limit= and queue_rate_limits=
accept and refuse, and limited jobs waiting (never failing) while the rest
run. Across processes: tests/test_schedule_processes.py."""

from __future__ import annotations

import pytest

from taskito import InvalidArgumentError
from tests.conftest import MakeQueue


@pytest.mark.parametrize("rate", ["", "10", "10/d", "0/s", "-5/m", "ten/s", "5/s/m"])
def test_a_bad_rate_raises_at_the_call_naming_the_field(make_queue: MakeQueue, rate: str) -> None:
    queue = make_queue()
    with pytest.raises(InvalidArgumentError, match=r"^rate_limit must"):
        queue.task(name="limited", rate_limit=rate)(lambda: None)
    assert "limited" not in queue.tasks
    with pytest.raises(InvalidArgumentError, match=r"^queue_rate_limits\['emails'\] must"):
        make_queue(queue_rate_limits={"emails": rate})
    with pytest.raises(InvalidArgumentError, match=r"^rate_limit must"):
        queue.task(name="limited", rate_limit=10)(lambda: None)  # type: ignore[arg-type]


def test_limited_jobs_wait_for_their_rate_while_others_run(make_queue: MakeQueue) -> None:
    queue = make_queue(queue_rate_limits={"slow": "10/s"})

    @queue.task(name="throttled", queue="slow", retry_backoff=0)
    def throttled() -> None:
        pass

    @queue.task(name="quick", rate_limit="1000/s")
    def quick() -> None:
        pass

    slow = throttled.map([() for _ in range(12)])
    fast = quick.map([() for _ in range(300)])
    queue.start_worker()
    for job in fast + slow:
        job.result(timeout=30)
    starts = sorted(job.to_dict()["started_at"] for job in slow)
    # One at once, then ten a second.
    assert starts[-1] - starts[0] >= 11 / 10 * 0.9, starts
    fast_done = max(job.to_dict()["finished_at"] for job in fast)
    assert fast_done < starts[-1], "the other task's jobs did not wait behind the limited ones"
    assert all(job.to_dict()["attempt"] == 1 for job in slow + fast)
    assert queue.stats()["complete"] == 312
    assert queue.settings["queue_rate_limits"] == {"slow": "10/s"}
    assert queue.tasks["quick"].options["rate_limit"] == "1000/s"
