from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from taskito import Queue
from tests.postgres import scratch_schema

# The plugin's own tests (tests/plugin) run generated projects.
pytest_plugins = ["pytester"]

MakeQueue = Callable[..., Queue]


@pytest.fixture(params=["memory", "file", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    """Every test using the queues below runs on each database kind: SQLite
    in memory and in a file, and PostgreSQL (skipped without a server; see
    tests/postgres.py)."""
    return str(request.param)


@pytest.fixture
def database(backend: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """``Queue()`` keyword arguments for the test's own database: a fresh
    PostgreSQL schema is dropped after the test."""
    if backend == "memory":
        yield {"db_path": ":memory:"}
    elif backend == "file":
        yield {"db_path": str(tmp_path / "db" / "tasks.db")}
    else:
        with scratch_schema() as options:
            yield options


@pytest.fixture
def make_queue(database: dict[str, Any]) -> Iterator[MakeQueue]:
    """Creates Queues on the test's database and closes them afterwards.
    Queues made with the same ``db_path`` share a database; on PostgreSQL
    every Queue of the test shares its schema."""
    made: list[Queue] = []

    def make(**options: Any) -> Queue:
        if "db_url" in database:
            options.pop("db_path", None)
        for key, value in database.items():
            options.setdefault(key, value)
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
