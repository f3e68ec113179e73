"""The PostgreSQL server the tests run on, named by TASKITO_TEST_POSTGRES_URL.

Without the variable, or when its server cannot be reached, PostgreSQL tests
are skipped with a line that says how to run them; in CI (TASKITO_CI=1) they
fail instead, so a CI run without the server cannot pass silently."""

from __future__ import annotations

import functools
import itertools
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from taskito import Queue, StorageError

URL_ENV = "TASKITO_TEST_POSTGRES_URL"
EXAMPLE_URL = "postgresql://postgres@127.0.0.1:5432/test"
_names = itertools.count()


@functools.cache
def _problem() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None if they can."""
    url = os.environ.get(URL_ENV, "").strip()
    if not url:
        return f"{URL_ENV} is not set"
    try:
        # Opening creates the schema: drop it again.
        Queue(db_url=url, backend="postgres", schema=fresh_schema(), connect_timeout=5).drop_schema()
    except StorageError as exc:
        return f"{URL_ENV} is set but its server cannot be reached: {exc}"
    return None


def server_url() -> str:
    """The test server's URL; skips the test (fails it in CI) without one."""
    problem = _problem()
    if problem is None:
        return os.environ[URL_ENV].strip()
    if os.environ.get("TASKITO_CI") == "1":
        pytest.fail(f"{problem}: CI (TASKITO_CI=1) must run the PostgreSQL tests", pytrace=False)
    pytest.skip(f"{problem}; run the PostgreSQL tests with {URL_ENV}={EXAMPLE_URL}")


def fresh_schema() -> str:
    """A schema name no other test (or test process) uses."""
    return f"pytest_{os.getpid()}_{next(_names)}_{uuid.uuid4().hex[:8]}"


def drop_schema(url: str, schema: str) -> None:
    Queue(db_url=url, backend="postgres", schema=schema).drop_schema()


@contextmanager
def scratch_schema() -> Iterator[dict[str, str]]:
    """Queue keyword arguments for a fresh schema on the test server,
    dropped on exit."""
    url = server_url()
    schema = fresh_schema()
    try:
        yield {"db_url": url, "schema": schema}
    finally:
        drop_schema(url, schema)
