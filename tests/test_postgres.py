"""Choosing PostgreSQL: what selects it, what is refused, and a server that
cannot be reached. The rest of the suite runs on PostgreSQL too, through the
``backend`` fixture (tests/conftest.py); tests/test_postgres_processes.py
runs worker processes on it."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from taskito import InvalidArgumentError, Queue, StorageConnectionError, StorageError
from tests.postgres import scratch_schema


@pytest.fixture
def postgres() -> Iterator[dict[str, str]]:
    with scratch_schema() as options:
        yield options


def with_password(url: str) -> str:
    """``url`` with a password the trust-auth test server ignores."""
    return re.sub(r"^(postgres(?:ql)?://)([^:@/]+)@", r"\1\2:hunter2@", url)


@pytest.mark.parametrize("scheme", ["postgresql://", "postgres://"])
def test_a_postgres_url_alone_selects_postgres(postgres: dict[str, str], scheme: str) -> None:
    url = scheme + with_password(postgres["db_url"]).partition("://")[2]
    with Queue(db_url=url, schema=postgres["schema"]) as q:
        assert q.settings["backend"] == "postgres"
        assert "hunter2" not in repr(q) and "hunter2" not in q.db_path
        assert repr(q).startswith(f"<Queue '{scheme}") and f"schema={postgres['schema']!r}" in repr(q)

        @q.task()
        def add(a: int, b: int) -> int:
            return a + b

        q.start_worker()
        assert add.delay(2, 3).result(timeout=10) == 5


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"backend": "mysql"}, "backend must be"),
        ({"backend": "postgres"}, "needs db_url"),
        ({"db_url": "mysql://h/d"}, "must start with postgresql://"),
        ({"backend": "sqlite", "db_url": "postgresql://h/d"}, "db_url is for"),
        ({"db_url": "postgresql://127.0.0.1:1/d", "schema": "bad name"}, "schema must be"),
        ({"db_url": "postgresql://127.0.0.1:1/d", "connect_timeout": 0}, "connect_timeout"),
    ],
)
def test_bad_storage_settings_raise_typed_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        Queue(**options)


def test_a_refused_connection_names_the_server_never_the_password() -> None:
    started = time.monotonic()
    with pytest.raises(StorageConnectionError) as info:
        Queue(db_url="postgresql://app:hunter2@127.0.0.1:1/jobs", connect_timeout=3)
    assert time.monotonic() - started < 3
    assert isinstance(info.value, ConnectionError) and isinstance(info.value, StorageError)
    assert "127.0.0.1:1" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_a_server_that_never_answers_fails_within_connect_timeout() -> None:
    # Accepts connections (the kernel's backlog does) and never says a word.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(StorageConnectionError, match=f"127.0.0.1:{port}.*no answer within"):
            Queue(db_url=f"postgresql://app:hunter2@127.0.0.1:{port}/jobs", connect_timeout=0.5)
        assert time.monotonic() - started < 3


def test_drop_schema_is_for_postgres_queues(postgres: dict[str, str]) -> None:
    with Queue(":memory:") as q, pytest.raises(InvalidArgumentError):
        q.drop_schema()
    q = Queue(**postgres)

    @q.task()
    def noop() -> None: ...

    noop.delay()
    q.drop_schema()
    assert q.closed
    with Queue(**postgres) as fresh:
        assert sum(fresh.stats().values()) == 0
