"""--taskito-db=postgres: each test on a schema of its own on the server of
--taskito-db-url (env TASKITO_DB_URL, ini taskito_db_url), dropped at
teardown; each xdist process its own names. Needs the test server (see
tests/postgres.py)."""

from __future__ import annotations

import re

import pytest

from taskito import Queue
from tests.postgres import drop_schema, server_url

from .conftest import SUBPROCESS_LIMIT, ini

# Each test records its schema (in schemas.txt: xdist processes' output is
# not shown) and leaves a job in it.
RECORD_SCHEMAS = """
import os
import pytest

def record(schema):
    with open("schemas.txt", "a") as f:
        f.write(os.environ.get("PYTEST_XDIST_WORKER", "main") + " " + schema + "\\n")

@pytest.mark.parametrize("i", range(3))
def test_schema(i, queue, worker):
    record(queue.settings["schema"])
    assert "secret" not in repr(queue) and "secret" not in queue.db_path

    @queue.task()
    def double(n):
        return 2 * n

    assert worker.run_until_complete([double.delay(i)]) == [2 * i]
    assert queue.stats()["completed"] == 1, "its own schema: no other test's jobs"

def test_session(session_queue, session_worker):
    record(session_queue.settings["schema"])
"""


def with_password(url: str) -> str:
    """``url`` with a password the trust-auth test server ignores."""
    return re.sub(r"^(postgres(?:ql)?://)([^:@/]+)@", r"\1\2:secret@", url)


def schemas(project: pytest.Pytester) -> list[tuple[str, str]]:
    """(xdist worker, schema) of each test, as the tests recorded them."""
    lines = (project.path / "schemas.txt").read_text().splitlines()
    return [(worker, schema) for worker, schema in (line.split() for line in lines)]


def assert_dropped(url: str, names: list[str]) -> None:
    """Each schema is gone: reopened, it is empty."""
    for name in names:
        with Queue(db_url=url, schema=name) as reopened:
            assert sum(reopened.stats().values()) == 0, name
        drop_schema(url, name)


def test_each_test_gets_a_schema_dropped_at_teardown(project: pytest.Pytester) -> None:
    url = server_url()
    project.makepyfile(RECORD_SCHEMAS)
    result = project.runpytest("--taskito-db=postgres", f"--taskito-db-url={with_password(url)}")
    result.assert_outcomes(passed=4)
    shown = with_password(url).replace(":secret@", "@")
    result.stdout.fnmatch_lines([f"taskito: *db=postgres (--taskito-db), db_url={shown} (--taskito-db-url)*"])
    assert "secret" not in result.stdout.str()
    names = [schema for _, schema in schemas(project)]
    assert len(set(names)) == 4, names
    assert_dropped(url, names)


def test_the_env_var_and_ini_key_name_the_server(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = server_url()
    project.makepyfile(RECORD_SCHEMAS)
    monkeypatch.setenv("TASKITO_DB_URL", url)
    result = project.runpytest("--taskito-db=postgres")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["taskito: *db_url=* (env TASKITO_DB_URL)*"])
    monkeypatch.delenv("TASKITO_DB_URL")
    project.makeini(ini("taskito_db = postgres", f"taskito_db_url = {url}"))
    result = project.runpytest()
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["taskito: *db=postgres (ini taskito_db), db_url=* (ini taskito_db_url)*"])


def test_postgres_without_a_server_is_a_usage_error(project: pytest.Pytester) -> None:
    project.makepyfile("def test_never_runs(): raise AssertionError")
    result = project.runpytest("--taskito-db=postgres")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: taskito: db=postgres needs a server: --taskito-db-url*"])
    result = project.runpytest("--taskito-db-url=mysql://x")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: taskito: bad value for --taskito-db-url: expected a PostgreSQL URL*"]
    )


@pytest.mark.slow
def test_each_xdist_process_names_its_own_schemas(project: pytest.Pytester) -> None:
    url = server_url()
    project.makepyfile(RECORD_SCHEMAS)
    result = project.runpytest_subprocess(
        "-p", "xdist", "-n", "2", "--taskito-db=postgres", f"--taskito-db-url={url}", timeout=SUBPROCESS_LIMIT
    )
    result.assert_outcomes(passed=4)
    seen = schemas(project)
    assert {worker for worker, _ in seen} == {"gw0", "gw1"}, seen
    for worker, schema in seen:
        assert schema.startswith(f"taskito_{worker}_"), (worker, schema)
    assert_dropped(url, [schema for _, schema in seen])
