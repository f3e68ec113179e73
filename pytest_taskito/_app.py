"""Running an application's tasks against a test's isolated queue.

The application's ``Queue`` already exists, on its own database, with its
tasks registered. For the length of a test (or session) the plugin:

1. builds a fresh test ``Queue`` on the test database, with the app's
   settings (and the app's serializer object) unless the user overrides them;
2. registers every task of the app on the test queue under the same name,
   with the same options and function, so the test worker can run them;
3. points the app at the test queue's storage: the app attributes that
   enqueueing and reading jobs use (``REDIRECTED``) are set to the test
   queue's, so ``task.delay()``, ``app.enqueue(name)``, ``app.stats()``,
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

# The Queue attributes that enqueue(), TaskWrapper.delay/apply_async/map,
# stats(), get_job(), list_jobs(), cancel_job() and JobResult read. The
# plugin's tests check this list against Queue's attributes, so a new one
# cannot be forgotten silently.
REDIRECTED = ("_engine", "_serializer", "db_path", "default_retry", "default_timeout", "default_priority")

# Queue attributes that are not settings to carry over to a test queue, or
# that the plugin decides itself (the database, the thread count, and how
# long closing may wait: --taskito-db, --taskito-workers, --taskito-timeout).
NOT_COPIED = frozenset(
    {"_engine", "_finalizer", "_tasks", "_worker_lock", "db_path", "workers", "shutdown_timeout"}
)

# Settings that Queue() takes under the name of the attribute it stores.
_SETTINGS = (
    "default_retry",
    "default_timeout",
    "default_priority",
    "result_ttl",
    "durability",
    "lease_duration",
    "heartbeat_interval",
    "jobs_per_gil",
    "busy_timeout",
    "max_payload_size",
)


def load_app(spec: str, source: str = "taskito_app") -> Queue:
    """The ``taskito.Queue`` named by ``"package.module:attribute"``, given
    by ``source`` (the flag, environment variable or ini key it came from)."""
    what = f"the app {spec!r} (from {source})"
    module_name, _, attribute = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise pytest.UsageError(f"{what}: cannot import {module_name!r}: {exc}") from exc
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
    """The app's Queue settings, as keyword arguments for a test Queue. The
    serializer object carries the signing key, if the app has one."""
    settings = {name: getattr(app, name) for name in _SETTINGS}
    settings["serializer"] = app._serializer
    return settings


@contextmanager
def redirected(app: Queue, test_queue: Queue) -> Iterator[None]:
    """Registers the app's tasks on ``test_queue`` and points the app at the
    test queue's storage until exit."""
    copy_tasks(app, test_queue)
    saved = {name: getattr(app, name) for name in REDIRECTED}
    try:
        for name in REDIRECTED:
            setattr(app, name, getattr(test_queue, name))
        yield
    finally:
        for name, value in saved.items():
            setattr(app, name, value)


def copy_tasks(app: Queue, test_queue: Queue) -> None:
    """Registers on ``test_queue`` the app's tasks it does not have yet.

    Called when the test queue is made and again when its worker starts, so
    tasks the app registers in between (a module imported by a fixture) run
    too."""
    have = test_queue.tasks
    for name, task in app.tasks.items():
        if name in have:
            continue
        test_queue.task(**task.options)(task.fn)
