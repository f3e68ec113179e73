"""The pytest plugin, registered through the ``pytest11`` entry point as
``taskito`` (disable it with ``-p no:taskito``).

Fixtures: ``queue`` and ``worker`` (one isolated queue and worker per
test), ``session_queue`` and ``session_worker`` (one for the whole session,
each test seeing only its own jobs), and the override-me fixtures
``taskito_app``, ``taskito_queue_options`` and ``taskito_settings``.
See docs/testing.md.
"""

from __future__ import annotations

import inspect
import itertools
import os
import types
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_taskito._app import DATABASE_SETTINGS, app_settings, check_app, copy_tasks, load_app, redirected
from pytest_taskito._jobs import newest_job_id
from pytest_taskito._settings import Settings, add_options, resolve
from pytest_taskito._teardown import drain, stop_worker
from pytest_taskito._worker import TaskitoWorker
from taskito import Queue

SETTINGS = pytest.StashKey[Settings]()
# The app named by --taskito-app (or its env var or ini key), loaded as the session starts.
APP = pytest.StashKey[Queue | None]()

MARKER = (
    "taskito(workers=N, db='memory'|'file'|'postgres', timeout=SECONDS): "
    "override the taskito plugin's options for one test"
)

# Numbers the PostgreSQL schemas of this process's tests.
_SCHEMAS = itertools.count()


# ── hooks ─────────────────────────────────────────────────────────────────


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER)
    # Bad values stop the run here, as a usage error, before any test runs.
    config.stash[SETTINGS] = resolve(config)


def pytest_sessionstart(session: pytest.Session) -> None:
    # Once, before any test: a bad app is one usage error, not an error in
    # the setup of every test. (Not in pytest_configure: `pytest --help`
    # must work whatever the app does.)
    config = session.config
    settings = config.stash[SETTINGS]
    app = None if settings.app is None else load_app(settings.app, settings.sources.get("app", "taskito_app"))
    config.stash[APP] = app


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = config.stash[SETTINGS]
    overrides = app_fixture_overrides(config)
    described = settings.describe(
        {"app": ("taskito_app fixture", ", ".join(overrides))} if overrides else None
    )
    lines = [f"taskito: {described}"]
    warning = overcommit_warning(config, settings)
    if warning:
        lines.append(warning)
    return lines


def app_fixture_overrides(config: pytest.Config) -> list[str]:
    """Where conftest.py files loaded so far override the ``taskito_app``
    fixture, as ``path:line`` relative to the rootdir. (A conftest.py in a
    folder below the test paths loads during collection, after the header.)"""
    found = []
    for plugin in config.pluginmanager.get_plugins():
        file = getattr(plugin, "__file__", None) if isinstance(plugin, types.ModuleType) else None
        if not file or os.path.basename(file) != "conftest.py":
            continue
        fixture = getattr(plugin, "taskito_app", None)
        if fixture is None or fixture is taskito_app:
            continue
        code = getattr(inspect.unwrap(fixture), "__code__", None)
        where = os.path.relpath(file, config.rootpath)
        found.append(where if code is None else f"{where}:{code.co_firstlineno}")
    return sorted(found)


def xdist_processes(config: pytest.Config) -> int:
    """How many pytest-xdist processes run the tests (1 without xdist)."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        return int(workerinput.get("workercount", 1))
    if getattr(config.option, "dist", "no") != "no":
        return len(getattr(config.option, "tx", None) or ()) or 1
    return 1


def xdist_worker_id(config: pytest.Config) -> str:
    """This process's xdist worker id ("gw0", ...), or "main" without xdist."""
    workerinput = getattr(config, "workerinput", None)
    return "main" if workerinput is None else str(workerinput.get("workerid", "main"))


def overcommit_warning(config: pytest.Config, settings: Settings) -> str | None:
    """A terminal line (not a Python warning: suites that turn warnings into
    errors must still run) when xdist processes times worker threads exceed
    the CPUs, where tests would time out waiting for CPU, not for bugs."""
    processes = xdist_processes(config)
    cpus = os.cpu_count() or 1
    if processes < 2 or processes * settings.workers <= cpus:
        return None
    return (
        f"taskito: WARNING: {processes} xdist processes x {settings.workers} taskito worker threads "
        f"= {processes * settings.workers} > {cpus} CPUs; tasks will wait for CPU "
        "(lower -n or --taskito-workers)"
    )


# ── override-me fixtures ──────────────────────────────────────────────────


@pytest.fixture(scope="session")
def taskito_app(pytestconfig: pytest.Config) -> Queue | None:
    """Your application's Queue (``--taskito-app`` / ``taskito_app`` ini), or None.

    Override it in conftest.py to return your Queue object. Its tasks then
    run on each test's isolated queue, and the app enqueues there too."""
    return pytestconfig.stash.get(APP, None)


@pytest.fixture(scope="session")
def taskito_queue_options() -> dict[str, Any]:
    """Extra ``Queue(...)`` keyword arguments for test queues (default none).

    Override it in conftest.py, e.g. ``{"default_retry": 0}``. The database
    and worker threads come from --taskito-db and --taskito-workers."""
    return {}


@pytest.fixture
def taskito_settings(request: pytest.FixtureRequest) -> Settings:
    """The plugin's settings for this test: options, then ``@pytest.mark.taskito``."""
    return request.config.stash[SETTINGS].with_markers(request.node.iter_markers("taskito"))


# ── per-test queue and worker ─────────────────────────────────────────────


def database(settings: Settings, config: pytest.Config, where: Path | None, name: str) -> dict[str, Any]:
    """``Queue()`` keyword arguments for a test database named ``name``: in
    memory, a file in ``where``, or a PostgreSQL schema of its own (named
    after this xdist process, so parallel processes never share one)."""
    worker = xdist_worker_id(config)
    if settings.db == "memory":
        return {"db_path": ":memory:"}
    if settings.db == "file":
        assert where is not None
        return {"db_path": str(where / f"taskito-{worker}.db")}
    schema = f"taskito_{worker}_{os.getpid()}_{name}"
    return {"backend": "postgres", "db_url": settings.db_url, "schema": schema}


def make_queue(
    database: Mapping[str, Any],
    settings: Settings,
    app: Queue | None,
    options: Mapping[str, Any],
    stack: ExitStack,
) -> Queue:
    """A test Queue on ``database``, closed by ``stack`` (with the app, if
    any, pointed at it until then); a PostgreSQL schema is dropped then."""
    if not isinstance(options, Mapping):
        raise pytest.UsageError(f"taskito_queue_options must be a dict, got {type(options).__name__}")
    clash = sorted(DATABASE_SETTINGS & set(options))
    if clash:
        raise pytest.UsageError(f"taskito_queue_options cannot set {clash[0]}: use --taskito-db")
    if "workers" in options:
        raise pytest.UsageError("taskito_queue_options cannot set workers: use --taskito-workers")
    kwargs: dict[str, Any] = {"workers": settings.workers, "shutdown_timeout": settings.timeout}
    if app is not None:
        app = check_app(app)
        kwargs.update(app_settings(app))
    kwargs.update(options)
    kwargs.update(database)
    test_queue = Queue(**kwargs)
    # drop_schema() closes the queue first.
    stack.callback(test_queue.drop_schema if "db_url" in database else test_queue.close)
    if app is not None:
        stack.enter_context(redirected(app, test_queue))
    return test_queue


def close_queue(test_queue: Queue, stack: ExitStack, timeout: float, what: str) -> None:
    """Stops any worker still running on the queue (one a test started
    itself), puts the app back and closes the queue; then fails the test if
    tasks were left running."""
    try:
        failure = stop_worker(test_queue, timeout, what)
    finally:
        stack.close()
    if failure:
        pytest.fail(failure, pytrace=False)


@pytest.fixture
def queue(
    request: pytest.FixtureRequest,
    taskito_settings: Settings,
    taskito_app: Queue | None,
    taskito_queue_options: dict[str, Any],
) -> Iterator[Queue]:
    """A fresh Queue on a database of its own, closed (and a PostgreSQL
    schema dropped) after the test."""
    where: Path | None = request.getfixturevalue("tmp_path") if taskito_settings.db == "file" else None
    db = database(taskito_settings, request.config, where, str(next(_SCHEMAS)))
    with ExitStack() as stack:
        test_queue = make_queue(db, taskito_settings, taskito_app, taskito_queue_options, stack)
        yield test_queue
        close_queue(test_queue, stack.pop_all(), taskito_settings.timeout, "queue teardown")


@pytest.fixture
def worker(queue: Queue, taskito_settings: Settings, taskito_app: Queue | None) -> Iterator[TaskitoWorker]:
    """A worker on ``queue`` with --taskito-workers threads, stopped after the
    test within --taskito-timeout (the test fails, naming the stuck tasks,
    if they do not finish)."""
    with _running_worker(queue, taskito_app, taskito_settings, "worker teardown"):
        yield TaskitoWorker(queue, threads=taskito_settings.workers, timeout=taskito_settings.timeout)


@contextmanager
def _running_worker(queue: Queue, app: Queue | None, settings: Settings, what: str) -> Iterator[None]:
    """A worker on ``queue`` (serving ``app``'s tasks too) for the block; on
    leaving it, the worker is stopped and the test fails if tasks were stuck."""
    if app is not None:
        copy_tasks(app, queue)
    queue.start_worker(workers=settings.workers)
    yield
    failure = stop_worker(queue, settings.timeout, what)
    if failure:
        pytest.fail(failure, pytrace=False)


# ── one queue and worker for the session ──────────────────────────────────


@dataclass
class _Session:
    queue: Queue
    settings: Settings


@pytest.fixture(scope="session")
def _taskito_session(
    pytestconfig: pytest.Config,
    taskito_app: Queue | None,
    taskito_queue_options: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[_Session]:
    settings = pytestconfig.stash[SETTINGS]
    where = tmp_path_factory.mktemp("taskito-session") if settings.db == "file" else None
    db = database(settings, pytestconfig, where, "session")
    with ExitStack() as stack:
        session_queue = make_queue(db, settings, taskito_app, taskito_queue_options, stack)
        yield _Session(session_queue, settings)
        close_queue(session_queue, stack.pop_all(), settings.timeout, "session queue teardown")


@pytest.fixture(scope="session")
def _taskito_session_worker(_taskito_session: _Session, taskito_app: Queue | None) -> Iterator[None]:
    session = _taskito_session
    with _running_worker(session.queue, taskito_app, session.settings, "session worker teardown"):
        yield


@dataclass
class _TestScope:
    queue: Queue
    since: str | None
    settings: Settings


@pytest.fixture
def _taskito_session_scope(_taskito_session: _Session, taskito_settings: Settings) -> Iterator[_TestScope]:
    """Gives a test the session queue, with only its own jobs in view; after
    it, cancels its jobs that did not start, lets running ones finish, so
    that nothing of it runs during the next test, and deletes every final
    job, so that the next test starts on an empty database."""
    fixed = [key for key in ("workers", "db") if taskito_settings.sources.get(key) == "marker"]
    if fixed:
        raise pytest.UsageError(
            f"@pytest.mark.taskito({fixed[0]}=...) cannot change the session queue and worker; "
            "use the queue and worker fixtures for this test"
        )
    session_queue = _taskito_session.queue
    scope = _TestScope(session_queue, newest_job_id(session_queue), taskito_settings)
    yield scope
    failure = drain(session_queue, scope.since, taskito_settings.timeout, "session test teardown")
    session_queue.purge_finished()
    session_queue.purge_dead()
    if failure:
        pytest.fail(failure, pytrace=False)


@pytest.fixture
def session_queue(_taskito_session_scope: _TestScope) -> Queue:
    """The session's Queue, emptied of the earlier tests' jobs."""
    return _taskito_session_scope.queue


@pytest.fixture
def session_worker(_taskito_session_worker: None, _taskito_session_scope: _TestScope) -> TaskitoWorker:
    """The session's worker, started once, seen through this test's jobs only."""
    scope = _taskito_session_scope
    return TaskitoWorker(
        scope.queue,
        threads=scope.settings.workers,
        timeout=scope.settings.timeout,
        since=scope.since,
    )
