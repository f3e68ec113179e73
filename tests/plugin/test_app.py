"""Pointing the fixtures at a user's application Queue: its tasks run on the
test's isolated database, and the app is exactly as it was afterwards."""

from __future__ import annotations

import inspect
from contextlib import ExitStack
from pathlib import Path

import pytest

from pytest_taskito._app import DECIDED_BY_THE_PLUGIN, copy_tasks
from pytest_taskito._settings import Settings
from pytest_taskito.plugin import make_queue
from taskito import JsonSerializer, Queue, TaskMiddleware
from tests.postgres import scratch_schema

from .conftest import ini

# An application module as a user would write it: its Queue on a real
# database file, tasks that enqueue other tasks, and code that enqueues by name.
MYAPP = """
from taskito import Queue, JsonSerializer

queue = Queue(db_path="appdata/app.db", default_retry=5, serializer=JsonSerializer(), lease_duration=20)

@queue.task(max_retries=0, priority=3, queue="math")
def double(x):
    return 2 * x

@queue.task(name="app.chain")
def chain(x):
    return double.delay(x).id

def signup(user):
    return queue.enqueue("app.chain", args=(len(user),))
"""

USES_APP = """
import pytest
import myapp
from taskito import SerializationError

ORIGINAL = myapp.queue.settings

def test_app_tasks_run_on_the_test_database(queue, worker):
    assert queue is not myapp.queue
    assert myapp.queue.db_path == queue.db_path != ORIGINAL["db_path"]
    assert worker.run_until_complete([myapp.double.delay(21)]) == [42]
    job = myapp.signup("ada")  # enqueue by name, from app code
    worker.wait_idle()
    assert job.result(timeout=0) is not None
    assert queue.stats()["completed"] == 3
    assert myapp.queue.stats() == queue.stats()
    assert myapp.queue.get_job(job.id).status == "complete"

def test_the_app_settings_and_serializer_carry_over(queue, worker):
    assert queue.default_retry == 5 and queue.lease_duration == 20
    assert queue.tasks["app.chain"].fn is myapp.chain.fn
    double = queue.tasks[myapp.double.name]
    assert (double.max_retries, double.priority, double.queue_name) == (0, 3, "math")
    # The app's JSON serializer: a tuple comes back a list, a set cannot go.
    assert worker.run_until_complete([myapp.double.delay((1,))]) == [[1, 1]]
    with pytest.raises(SerializationError):
        myapp.double.delay({1})

def test_a_failing_test_restores_the_app_too(queue):
    myapp.double.delay(1)
    raise AssertionError("on purpose")

def test_the_app_is_restored_between_tests():
    assert myapp.queue.settings == ORIGINAL
    assert myapp.queue.stats()["pending"] == 0
"""


def test_an_app_named_in_the_ini(project: pytest.Pytester) -> None:
    project.makepyfile(myapp=MYAPP, test_uses_app=USES_APP)
    project.makeini(ini("taskito_app = myapp:queue", "pythonpath = ."))
    result = project.runpytest()
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["taskito: *app=myapp:queue (ini taskito_app)"])
    # Nothing reached the app's real database.
    with Queue(project.path / "appdata" / "app.db") as real:
        assert sum(real.stats().values()) == 0


def test_an_apps_workflows_run_on_the_test_database(project: pytest.Pytester) -> None:
    project.makepyfile(myapp=MYAPP)
    project.makepyfile(
        test_workflows="""
        import myapp
        import taskito

        def test_a_chord_of_chains_runs_on_the_test_database(queue, worker):
            doubled = taskito.chain(myapp.double.s(1), myapp.double.s(), myapp.double.s())
            total = taskito.chord(taskito.group(doubled, myapp.double.s(5)), myapp.double.s())
            last = total.delay()
            worker.wait_idle()
            # The JSON serializer: the chord's body doubles the list [8, 10].
            assert last.result(timeout=0) == [8, 10, 8, 10]
            assert queue.stats()["completed"] == 5
        """
    )
    project.makeini(ini("taskito_app = myapp:queue", "pythonpath = ."))
    result = project.runpytest()
    result.assert_outcomes(passed=1)
    with Queue(project.path / "appdata" / "app.db") as real:
        assert sum(real.stats().values()) == 0


def test_an_apps_hooks_run_around_its_tasks_on_the_test_database(project: pytest.Pytester) -> None:
    project.makepyfile(
        myapp=MYAPP
        + """
seen = []

@queue.before_task
def before(task_name, args, kwargs):
    seen.append(("before", task_name, args))

@queue.on_success
def succeeded(task_name, args, kwargs, result):
    seen.append(("success", task_name, result))
"""
    )
    project.makepyfile(
        test_hooks="""
        import myapp

        def test_the_apps_hooks_run(worker):
            assert worker.run_until_complete([myapp.double.delay(4)]) == [8]
            assert myapp.seen == [("before", myapp.double.name, [4]), ("success", myapp.double.name, 8)]
        """
    )
    project.makeini(ini("taskito_app = myapp:queue", "pythonpath = ."))
    project.runpytest().assert_outcomes(passed=1)


def test_an_app_and_options_given_by_overriding_fixtures(project: pytest.Pytester) -> None:
    project.makepyfile(myapp=MYAPP)
    project.makeconftest(
        """
        import pytest
        import myapp

        @pytest.fixture(scope="session")
        def taskito_app():
            return myapp.queue

        @pytest.fixture(scope="session")
        def taskito_queue_options():
            return {"default_retry": 0, "result_ttl": 60}
        """
    )
    project.makepyfile(
        """
        import myapp

        def test_options_win_over_the_app(queue, worker):
            assert (queue.default_retry, queue.result_ttl, queue.lease_duration) == (0, 60, 20)
            assert myapp.queue.default_retry == 0, "the app enqueues with the test queue's defaults"
            assert worker.run_until_complete([myapp.double.delay(2)]) == [4]

        def test_session_fixtures_redirect_the_app_too(session_queue, session_worker):
            assert myapp.queue.db_path == session_queue.db_path
            assert session_worker.run_until_complete([myapp.double.delay(3)]) == [6]

        def test_after_a_session_fixture(queue):
            # The session queue holds the app until the session ends; a test's
            # own queue takes it over for the test, then hands it back.
            assert myapp.queue.db_path == queue.db_path

        def test_after_without_fixtures(request):
            session_queue = request.getfixturevalue("session_queue")
            assert myapp.queue.db_path == session_queue.db_path
        """
    )
    project.makeini(ini("pythonpath = ."))
    result = project.runpytest()
    result.assert_outcomes(passed=4)
    # The header says where the app comes from: the fixture, at its line.
    result.stdout.fnmatch_lines(["taskito: *, app=taskito_app fixture (conftest.py:4)"])
    with Queue(project.path / "appdata" / "app.db") as real:
        assert sum(real.stats().values()) == 0
    # The ini names another app: the fixture wins, and the header says so.
    project.makeini(ini("pythonpath = .", "taskito_app = myapp:queue"))
    result = project.runpytest("-k", "test_options_win_over_the_app")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "taskito: *, app=taskito_app fixture "
            "(conftest.py:4; overrides app=myapp:queue from ini taskito_app)"
        ]
    )


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (
            "taskito_app = nosuchmodule:queue",
            "the app 'nosuchmodule:queue' (from ini taskito_app): cannot import 'nosuchmodule'*",
        ),
        (
            "taskito_app = myapp:nope",
            "the app 'myapp:nope' (from ini taskito_app): myapp has no attribute 'nope'",
        ),
        (
            "taskito_app = myapp:double",
            "the app 'myapp:double' (from ini taskito_app) must be a taskito.Queue (or None), got TaskWrapper",
        ),
        (
            "taskito_app = broken:queue",
            "the app 'broken:queue' (from ini taskito_app): importing 'broken' failed: "
            "ZeroDivisionError: division by zero",
        ),
    ],
)
def test_a_bad_app_is_one_usage_error_at_startup(project: pytest.Pytester, setup: str, message: str) -> None:
    project.makepyfile(
        myapp=MYAPP,
        broken="import taskito\nqueue = taskito.Queue(':memory:')\n1 / 0\n",
        test_x="def test_x(queue): pass\ndef test_y(queue): pass\ndef test_z(): pass",
    )
    project.makeini(ini(setup, "pythonpath = ."))
    result = project.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])
    assert result.stderr.str().count("ERROR") == 1, "one error for the run, none per test"
    result.stdout.no_fnmatch_line("*test_x*")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ('{"db_path": "x.db"}', "taskito_queue_options cannot set db_path: use --taskito-db"),
        ('{"workers": 4}', "taskito_queue_options cannot set workers: use --taskito-workers"),
        ('[("default_retry", 1)]', "taskito_queue_options must be a dict, got list"),
    ],
)
def test_bad_queue_options_are_reported(project: pytest.Pytester, options: str, message: str) -> None:
    project.makeconftest(
        f"""
        import pytest

        @pytest.fixture(scope="session")
        def taskito_queue_options():
            return {options}
        """
    )
    project.makepyfile("def test_x(queue): pass")
    result = project.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*UsageError: {message}"])


def test_every_queue_setting_is_copied_unless_the_plugin_decides_it(tmp_path: Path) -> None:
    # Every Queue() parameter is in Queue.settings (signing_key through the
    # serializer that holds it), and the app gives each a value other than
    # its default: a setting the plugin forgot to copy would show.
    parameters = inspect.signature(Queue.__init__).parameters
    # The app is on PostgreSQL, so that its database settings differ from
    # the defaults too (skipped without a server; see tests/postgres.py).
    app_database = ExitStack()
    postgres = app_database.enter_context(scratch_schema())
    app_values = {
        "db_path": str(tmp_path / "app.db"),
        "workers": 3,
        "default_retry": 9,
        "default_timeout": 44.0,
        "default_priority": 6,
        "result_ttl": 600.0,
        "serializer": JsonSerializer(),
        "durability": "full",
        "lease_duration": 20.0,
        "heartbeat_interval": 2.5,
        "busy_timeout": 7.0,
        "shutdown_timeout": 12.0,
        "jobs_per_gil": 5,
        "signing_key": b"k",
        "max_payload_size": 4096,
        "prefetch": 4,
        "unknown_task_grace": 60.0,
        "backend": "postgres",
        "db_url": postgres["db_url"],
        "schema": postgres["schema"],
        "connect_timeout": 3.0,
        "async_concurrency": 7,
        "middleware": [TaskMiddleware()],
        "queue_rate_limits": {"emails": "10/s"},
    }
    assert list(app_values) == list(parameters)[1:], "a new Queue() parameter needs a value here"
    with app_database, Queue(**app_values) as app, ExitStack() as stack:
        assert list(app.settings) == [name for name in app_values if name != "signing_key"]
        for name, value in app.settings.items():
            assert value != parameters[name].default, name
        settings = Settings(workers=2, db="memory", timeout=1.5, app=None)
        test_queue = make_queue({"db_path": ":memory:"}, settings, app, {}, stack)
        copied = {name: value for name, value in app.settings.items() if name not in DECIDED_BY_THE_PLUGIN}
        assert {name: test_queue.settings[name] for name in copied} == copied
        assert test_queue.settings["serializer"] is app.settings["serializer"]
        decided = {name: test_queue.settings[name] for name in DECIDED_BY_THE_PLUGIN}
        assert decided == {
            "db_path": ":memory:",
            "backend": "sqlite",
            "db_url": None,
            "schema": "taskito",
            "workers": 2,
            "shutdown_timeout": 1.5,
        }


def test_every_task_option_is_copied(tmp_path: Path) -> None:
    with Queue(tmp_path / "q.db") as queue:

        @queue.task(
            name="t",
            max_retries=7,
            retry_backoff=2.5,
            timeout=9,
            priority=4,
            queue="q",
            soft_timeout=3,
            retry_on=[KeyError],
            dont_retry_on=ValueError,
        )
        def t() -> None: ...

        options = set(inspect.signature(Queue.task).parameters) - {"self", "fn"}
        assert set(t.options) == options
        with Queue(":memory:") as test_queue:
            copy_tasks(queue, test_queue)
            assert test_queue.tasks["t"].options == t.options


def test_hook_functions_are_copied_once_each() -> None:
    def before(*args: object) -> None: ...

    def dead(*args: object) -> None: ...

    with Queue(":memory:") as queue, Queue(":memory:") as test_queue:
        queue.before_task(before)
        queue.on_dead(dead)
        copy_tasks(queue, test_queue)
        copy_tasks(queue, test_queue)  # again when its worker starts: nothing twice
        assert test_queue.hooks() == queue.hooks()
        assert test_queue.hooks()["before_task"] == [before]
