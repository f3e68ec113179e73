"""Running an application's tasks against a test's isolated queue.

The application's ``Queue`` already exists, on its own database, with its
tasks registered. For the length of a test (or session) the plugin:

1. builds a fresh test ``Queue`` on the test database, with the app's
   settings (``Queue.settings``: the app's serializer object included)
   unless the user overrides them;
2. registers every task of the app on the test queue under the same name,
   with the same options and function, so the test worker can run them;
3. points the app at the test queue's database with ``Queue.redirect``, so
   that ``task.delay()``, ``app.enqueue(name)``, ``app.stats()``,
   ``app.get_job()`` and every ``JobResult`` they return go to the test
   database, with the test queue's serializer and defaults.

Everything is put back on exit, in reverse order, also when the test fails.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from taskito import Queue

# The Queue settings the plugin decides itself instead of copying them from
# the app: the database, the thread count, and how long closing may wait
# (--taskito-db and --taskito-db-url, --taskito-workers, --taskito-timeout).
DATABASE_SETTINGS = frozenset({"db_path", "backend", "db_url", "schema"})
DECIDED_BY_THE_PLUGIN = DATABASE_SETTINGS | {"workers", "shutdown_timeout"}


def load_app(spec: str, source: str = "taskito_app") -> Queue:
    """The ``taskito.Queue`` named by ``"package.module:attribute"``, given
    by ``source`` (the flag, environment variable or ini key it came from).
    Raises ``pytest.UsageError`` when it cannot: the plugin loads it once,
    as the session starts, so that a bad app stops the run with one error."""
    what = f"the app {spec!r} (from {source})"
    module_name, _, attribute = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise pytest.UsageError(f"{what}: cannot import {module_name!r}: {exc}") from None
    except Exception as exc:
        # One line, not a traceback through pytest's start-up.
        raise pytest.UsageError(
            f"{what}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise pytest.UsageError(f"{what}: {module_name} has no attribute {attribute!r}") from None
    return check_app(target, what)


def check_app(app: object, what: str = "the taskito_app fixture") -> Queue:
    if not isinstance(app, Queue):
        raise pytest.UsageError(f"{what} must be a taskito.Queue (or None), got {type(app).__name__}")
    if app.closed:
        raise pytest.UsageError(f"{what} is a closed Queue")
    return app


def app_settings(app: Queue) -> dict[str, Any]:
    """The app's Queue settings, as keyword arguments for a test Queue: all
    but those the plugin decides. The serializer object carries the signing
    key, if the app has one."""
    return {name: value for name, value in app.settings.items() if name not in DECIDED_BY_THE_PLUGIN}


@contextmanager
def redirected(app: Queue, test_queue: Queue) -> Iterator[None]:
    """Registers the app's tasks on ``test_queue`` and points the app at the
    test queue's database until exit."""
    copy_tasks(app, test_queue)
    with app.redirect(test_queue):
        yield


def copy_tasks(app: Queue, test_queue: Queue) -> None:
    """Registers on ``test_queue`` the app's tasks and hook functions it does
    not have yet. (Its middleware comes with its settings; its periodic
    schedules are not copied: a test runs a periodic task by calling or
    enqueueing it, never on the clock.)

    Called when the test queue is made and again when its worker starts, so
    tasks and hooks the app registers in between (a module imported by a
    fixture) run too."""
    have = test_queue.tasks
    for name, task in app.tasks.items():
        if name in have:
            continue
        test_queue.task(**task.options)(task.fn)
    registered = test_queue.hooks()
    for kind, functions in app.hooks().items():
        register = getattr(test_queue, kind)
        for fn in functions:
            if not any(fn is known for known in registered[kind]):
                register(fn)
