"""``GroupResult``: the jobs of a group (``taskito.group``), and waiting for
all of them."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, overload

from taskito.exceptions import JobTimeoutError

if TYPE_CHECKING:
    from taskito.result import JobResult

# The statuses a job never leaves.
FINAL_STATUSES = frozenset({"complete", "dead", "cancelled", "expired"})


class GroupResult(Sequence["JobResult"]):
    """The jobs of a group, in the group's order: a sequence of
    ``JobResult`` (``group.apply()`` in the reference project returns the
    list; ``.jobs`` is that list), plus ways to wait for all of them."""

    __slots__ = ("jobs",)

    def __init__(self, jobs: list[JobResult]) -> None:
        self.jobs = jobs

    def results(self, timeout: float | None = 30.0) -> list[Any]:
        """Waits for every member and returns their results in order. Raises
        as ``JobResult.result()`` does for the first member (in order) that
        did not complete; ``timeout`` bounds the whole wait."""
        deadline = _Deadline(timeout)
        try:
            return [job.result(timeout=deadline.remaining()) for job in self.jobs]
        except JobTimeoutError:
            raise deadline.missed() from None

    async def aresults(self, timeout: float | None = 30.0) -> list[Any]:
        """``results()`` for asyncio: the waits never block the event loop."""
        deadline = _Deadline(timeout)
        try:
            return [await job.aresult(timeout=deadline.remaining()) for job in self.jobs]
        except JobTimeoutError:
            raise deadline.missed() from None

    def join(self, timeout: float | None = 30.0) -> list[Any]:
        """``results()``, by Celery's name."""
        return self.results(timeout)

    def ready(self) -> bool:
        """Whether every member has ended (one read per member)."""
        return all(job.status in FINAL_STATUSES for job in self.jobs)

    def completed_count(self) -> int:
        """How many members completed (one read per member)."""
        return sum(job.status == "complete" for job in self.jobs)

    @overload
    def __getitem__(self, index: int) -> JobResult: ...
    @overload
    def __getitem__(self, index: slice) -> list[JobResult]: ...
    def __getitem__(self, index: int | slice) -> JobResult | list[JobResult]:
        return self.jobs[index]

    def __len__(self) -> int:
        return len(self.jobs)

    def __repr__(self) -> str:
        return f"<GroupResult {[job.id for job in self.jobs]}>"


class _Deadline:
    """One timeout shared by the waits for a group's members."""

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self.at = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        return None if self.at is None else max(0.0, self.at - time.monotonic())

    def missed(self) -> JobTimeoutError:
        return JobTimeoutError(f"the group's jobs did not all finish within {self.timeout}s")
