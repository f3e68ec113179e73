from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from taskito import Queue

# The plugin's own tests (tests/plugin) run generated projects.
pytest_plugins = ["pytester"]

MakeQueue = Callable[..., Queue]


@pytest.fixture(params=["memory", "file"])
def db_path(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every test using this runs on both database kinds."""
    return ":memory:" if request.param == "memory" else str(tmp_path / "db" / "tasks.db")


@pytest.fixture
def make_queue(db_path: str) -> Iterator[MakeQueue]:
    """Creates Queues on the test's database and closes them afterwards."""
    made: list[Queue] = []

    def make(**options: Any) -> Queue:
        options.setdefault("db_path", db_path)
        options.setdefault("workers", 2)
        q = Queue(**options)
        made.append(q)
        return q

    yield make
    for q in made:
        q.close()


@pytest.fixture
def job_queue(make_queue: MakeQueue) -> Queue:
    """A Queue on the test's database (not named ``queue``, which would
    shadow the pytest plugin's fixture of that name)."""
    return make_queue()
