"""``Queue``: the one object a taskito user creates."""

from __future__ import annotations

import datetime
import logging
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar, overload

import taskito._client as _client
from taskito import _async, _hooks, _job_options, _native, _options, periodic
from taskito._job_options import UniqueKeyFunction
from taskito._native import NativeQueue
from taskito._queue_jobs import JobsAPI
from taskito._queue_schedule import ScheduleAPI
from taskito._queue_worker import WorkerAPI
from taskito._storage import Storage
from taskito.context import _current
from taskito.exceptions import (
    InvalidArgumentError,
    UnknownTaskError,
)
from taskito.middleware import TaskMiddleware
from taskito.result import JobResult
from taskito.serializers import Serializer, SignedSerializer, resolve
from taskito.task import TaskWrapper

logger = logging.getLogger("taskito.worker")


P = ParamSpec("P")
R = TypeVar("R")


class Queue(JobsAPI, WorkerAPI, ScheduleAPI):
    """A task queue on one database.

    ``db_path`` is a SQLite file (its folders are created; the file is made
    readable by its owner only) or ``":memory:"`` for a private in-memory
    database. ``db_url="postgresql://user:password@host:5432/database"``
    (or ``postgres://``) puts the queue in PostgreSQL instead, so that
    workers on many machines share it: its tables live in ``schema``
    (created on first use), and ``connect_timeout`` seconds is how long
    reaching the server may take before ``StorageConnectionError``.
    ``backend`` (``"sqlite"`` or ``"postgres"``) is needed only for a
    ``key=value`` connection string; the password never appears in logs,
    errors or ``repr``. A relative ``db_path`` is resolved against the current folder
    when the Queue is created, so ``db_path`` is always absolute.
    ``workers`` is how many tasks a worker of this queue runs at
    once (0: the CPU count). ``default_retry`` is how many times a failing
    job is retried, ``default_timeout`` the seconds an attempt may run,
    ``result_ttl`` the seconds completed jobs are kept (None: forever).
    ``durability="full"`` makes every enqueue survive a power cut, not only
    a crash of the process. Idle workers and result waiters in other
    processes on the same machine are woken as soon as work or a result is
    committed (see docs/architecture.md); where that cannot work, they poll
    within 50 ms.

    ``prefetch`` is how many jobs a worker may hold beyond those its idle
    executors start (None: about 5 ms of work at the rate it measures, so
    none for slow jobs; 0: only what idle executors start). A worker runs
    only jobs of tasks registered on it; a job whose task no worker has ever
    registered is dead-lettered ``unknown_task_grace`` seconds after it was
    enqueued (None: it waits for ever).

    ``lease_duration`` (at least 1 s) is how long a worker holds a job
    without renewing its lease; jobs of a worker that died run again after
    it. ``heartbeat_interval`` (default a fifth of the lease, at most a
    third) is how often a worker renews its leases.
    ``signing_key`` HMAC-signs every payload and result and refuses to
    decode one that does not carry a valid signature. Arguments that
    serialize to more than ``max_payload_size`` bytes are refused at enqueue.

    ``async_concurrency`` is how many coroutine tasks (``async def``) a
    worker runs at once on its event loop, beside its ``workers`` threads.

    ``middleware`` (``TaskMiddleware`` instances) runs around every attempt
    of every task, before the task's own. ``queue_rate_limits`` maps queue
    names to rates such as ``"10/s"``: jobs of that queue start at most that
    often, across every worker of the database (see ``task(rate_limit=)``).
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str] = ".taskito/taskito.db",
        workers: int = 0,
        default_retry: int = 3,
        default_timeout: float | None = 300,
        default_priority: int = 0,
        result_ttl: float | None = None,
        serializer: Serializer | str | None = None,
        durability: str = "normal",
        *,
        lease_duration: float = 10.0,
        heartbeat_interval: float | None = None,
        busy_timeout: float = 5.0,
        shutdown_timeout: float = 30.0,
        jobs_per_gil: int = 32,
        signing_key: bytes | str | None = None,
        max_payload_size: int = 16 * 1024 * 1024,
        prefetch: int | None = None,
        unknown_task_grace: float | None = 300.0,
        backend: str | None = None,
        db_url: str | None = None,
        schema: str = "taskito",
        connect_timeout: float = 10.0,
        async_concurrency: int = 100,
        middleware: list[TaskMiddleware] | None = None,
        queue_rate_limits: dict[str, str] | None = None,
    ) -> None:
        storage = Storage.resolve(db_path, backend, db_url, schema, connect_timeout)
        # The spelling a relative path was given in, and the folder it was
        # resolved against: `taskito worker` shows both, so an operator sees
        # which file a relative path meant.
        self._relative_db_path = storage.relative
        workers = _options.count("workers", workers)
        # Executor threads of a worker this Queue starts (workers() lists the
        # workers that serve the database).
        self.worker_threads = workers or os.cpu_count() or 1
        retry = _options.count("default_retry", default_retry)
        timeout = _options.optional_seconds("default_timeout", default_timeout, allow_zero=False)
        priority = _options.priority(default_priority)
        self.result_ttl = _options.optional_seconds("result_ttl", result_ttl, allow_zero=False)
        self.lease_duration = _options.lease_duration(lease_duration)
        heartbeat = heartbeat_interval if heartbeat_interval is not None else self.lease_duration / 5
        self.heartbeat_interval = _options.heartbeat_interval(heartbeat, self.lease_duration)
        self.shutdown_timeout = _options.seconds("shutdown_timeout", shutdown_timeout)
        self.jobs_per_gil = _options.count("jobs_per_gil", jobs_per_gil, minimum=1)
        self.busy_timeout = _options.seconds("busy_timeout", busy_timeout, allow_zero=False)
        if not isinstance(durability, str):
            raise TypeError(f"durability must be 'normal' or 'full', got {durability!r}")
        self.durability = durability
        self.max_payload_size = _options.count("max_payload_size", max_payload_size, minimum=1)
        self.prefetch = None if prefetch is None else _options.count("prefetch", prefetch)
        self.unknown_task_grace = _options.optional_seconds(
            "unknown_task_grace", unknown_task_grace, allow_zero=False
        )
        self.async_concurrency = _options.count("async_concurrency", async_concurrency, minimum=1)
        self._hooks = _hooks.Hooks(middleware or [])
        self.queue_rate_limits, self._queue_rates = _queue_rates(queue_rate_limits)
        self._periodic: dict[str, periodic.Periodic] = {}
        codec = resolve(serializer)
        if signing_key is not None:
            codec = SignedSerializer(codec, signing_key)
        # What enqueueing and reading jobs go through (redirect() swaps it
        # whole); it gets the database once that is open, below.
        self._client = _client.Client(
            storage, codec, default_retry=retry, default_timeout=timeout, default_priority=priority
        )
        self._tasks: dict[str, TaskWrapper[Any, Any]] = {}
        # The engine this Queue's worker runs on, told of tasks registered
        # while it runs.
        self._worker_engine: NativeQueue | None = None
        self._worker_lock = threading.Lock()
        # Where its worker runs coroutine tasks (a thread starts with the first).
        self._event_loop = _async.EventLoop()
        # This Queue's own database, the one close() closes.
        self._storage = storage
        self._engine = storage.open(durability, self.busy_timeout, self.max_payload_size)
        # Stops the worker and closes the database when the Queue is
        # collected or the interpreter exits, whichever comes first.
        self._finalizer = weakref.finalize(
            self, _close_engine, self._engine, self.shutdown_timeout, self._event_loop
        )
        # self._engine stays this Queue's own database, the one close() closes;
        # everything else reaches the database through the client.
        self._client.engine = self._engine
        _warn_if_polling(self._engine)

    # ── settings ─────────────────────────────────────────────────────────

    @property
    def db_path(self) -> str:
        """The database this Queue's jobs go to (a PostgreSQL URL without its
        password): ``target``'s inside ``redirect(target)``."""
        return self._client.db_path

    @property
    def default_retry(self) -> int:
        """Retries of a task registered without ``max_retries`` (target's inside ``redirect``)."""
        return self._client.default_retry

    @default_retry.setter
    def default_retry(self, value: int) -> None:
        self._client.default_retry = value

    @property
    def default_timeout(self) -> float | None:
        """Timeout of a task registered without one (target's inside ``redirect``)."""
        return self._client.default_timeout

    @default_timeout.setter
    def default_timeout(self, value: float | None) -> None:
        self._client.default_timeout = value

    @property
    def default_priority(self) -> int:
        """Priority of a task registered without one (target's inside ``redirect``)."""
        return self._client.default_priority

    @default_priority.setter
    def default_priority(self, value: int) -> None:
        self._client.default_priority = value

    @property
    def settings(self) -> dict[str, Any]:
        """For tooling and plugins: this Queue's settings as keyword arguments
        of ``Queue()``, one per constructor parameter but ``signing_key``
        (the ``serializer`` given is then the signing one that holds it), so
        ``Queue(**queue.settings)`` makes a queue like this one. A new dict
        each time: changing it changes nothing. Inside ``redirect(target)``,
        the storage settings (``db_path``, ``backend``, ``db_url``, ``schema``,
        ``connect_timeout``), ``serializer`` and the ``default_*`` are
        target's."""
        storage = self._client.storage.settings()
        return {
            "db_path": storage.pop("db_path"),
            "workers": self.worker_threads,
            "default_retry": self.default_retry,
            "default_timeout": self.default_timeout,
            "default_priority": self.default_priority,
            "result_ttl": self.result_ttl,
            "serializer": self._client.serializer,
            "durability": self.durability,
            "lease_duration": self.lease_duration,
            "heartbeat_interval": self.heartbeat_interval,
            "busy_timeout": self.busy_timeout,
            "shutdown_timeout": self.shutdown_timeout,
            "jobs_per_gil": self.jobs_per_gil,
            "max_payload_size": self.max_payload_size,
            "prefetch": self.prefetch,
            "unknown_task_grace": self.unknown_task_grace,
            **storage,
            "async_concurrency": self.async_concurrency,
            "middleware": list(self._hooks.middleware),
            "queue_rate_limits": dict(self.queue_rate_limits),
        }

    # ── tasks ────────────────────────────────────────────────────────────

    @overload
    def task(self, fn: Callable[P, R]) -> TaskWrapper[P, R]: ...

    @overload
    def task(
        self,
        *,
        name: str | None = None,
        max_retries: int | None = None,
        retry_backoff: float = 1.0,
        timeout: float | None = None,
        priority: int | None = None,
        queue: str = "default",
        soft_timeout: float | None = None,
        retry_on: type[BaseException] | Sequence[type[BaseException]] | None = None,
        dont_retry_on: type[BaseException] | Sequence[type[BaseException]] | None = None,
        rate_limit: str | None = None,
        middleware: list[TaskMiddleware] | None = None,
        unique_key: UniqueKeyFunction | None = None,
    ) -> Callable[[Callable[P, R]], TaskWrapper[P, R]]: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        max_retries: int | None = None,
        retry_backoff: float = 1.0,
        timeout: float | None = None,
        priority: int | None = None,
        queue: str = "default",
        soft_timeout: float | None = None,
        retry_on: type[BaseException] | Sequence[type[BaseException]] | None = None,
        dont_retry_on: type[BaseException] | Sequence[type[BaseException]] | None = None,
        rate_limit: str | None = None,
        middleware: list[TaskMiddleware] | None = None,
        unique_key: UniqueKeyFunction | None = None,
    ) -> Any:
        """Registers a function as a task: ``@queue.task()`` or ``@queue.task``.

        ``name`` defaults to ``module.qualname``; it is how workers find the
        function, so producers and workers must agree on it. A task defined
        in a script (the ``__main__`` module) is named after the module the
        script would be imported as: ``python -m pkg.jobs`` and ``import
        pkg.jobs`` agree, and so do ``python jobs.py`` and ``import jobs``.
        ``max_retries`` failed attempts are retried (``max_retries + 1`` runs at most), after
        ``retry_backoff * 2**(attempt-1)`` seconds with jitter. With
        ``retry_on``, only those exceptions are retried; ``dont_retry_on``
        exceptions never are. ``timeout`` fails (and retries) an attempt that
        runs longer; ``soft_timeout`` makes ``current_job.check_timeout()``
        raise ``TaskTimeoutError`` inside the task once it has passed.
        ``rate_limit`` (``"N/s"``, ``"N/m"`` or ``"N/h"``) lets its jobs start
        at most that often across every worker of the database; a job over
        the limit waits (it never fails or spends an attempt) and other
        tasks' jobs run meanwhile. ``middleware`` runs around its attempts,
        after the Queue's. ``unique_key``, a callable ``(args, kwargs) ->
        str``, gives each job a unique key from its arguments (see
        ``apply_async``); a key given at the call wins.
        """
        checked_retries = None if max_retries is None else _options.count("max_retries", max_retries)
        checked_backoff = _options.seconds("retry_backoff", retry_backoff)
        checked_timeout = _options.optional_seconds("timeout", timeout, allow_zero=False)
        checked_priority = None if priority is None else _options.priority(priority)
        queue_name = _options.name("queue", queue)
        checked_soft = _options.optional_seconds("soft_timeout", soft_timeout, allow_zero=False)
        retry_types = _options.exception_types("retry_on", retry_on)
        no_retry_types = _options.exception_types("dont_retry_on", dont_retry_on)
        rate = None if rate_limit is None else _rate("rate_limit", rate_limit)
        task_middleware = tuple(_hooks.middleware_list("middleware", middleware))
        key_function = _job_options.key_function(unique_key)
        if name is not None:
            _options.name("task name", name)

        def register(fn: Callable[..., Any]) -> TaskWrapper[Any, Any]:
            if not callable(fn):
                raise TypeError(f"@queue.task needs a function, got {fn!r}")
            task_name = name or f"{_import_name(fn.__module__)}.{fn.__qualname__}"
            existing = self._tasks.get(task_name)
            if existing is not None and existing.fn is not fn:
                raise InvalidArgumentError(
                    f"a different function is already registered as task {task_name!r}; "
                    "pass name= to tell them apart"
                )
            wrapper: TaskWrapper[Any, Any] = TaskWrapper(
                self,
                fn,
                name=task_name,
                max_retries=checked_retries,
                retry_backoff=checked_backoff,
                timeout=checked_timeout,
                priority=checked_priority,
                queue_name=queue_name,
                soft_timeout=checked_soft,
                retry_on=retry_types,
                dont_retry_on=no_retry_types,
                rate_limit=rate_limit,
                rate_per_second=rate,
                middleware=task_middleware,
                unique_key=key_function,
            )
            self._tasks[task_name] = wrapper
            if rate is not None:
                self._redeclare()
            if self._worker_engine is not None:
                # A worker claims only jobs of the tasks it knows.
                self._worker_engine.set_tasks(list(self._tasks))
            return wrapper

        return register(fn) if fn is not None else register

    @property
    def tasks(self) -> dict[str, TaskWrapper[Any, Any]]:
        """Registered tasks by name."""
        return dict(self._tasks)

    # ── enqueue ──────────────────────────────────────────────────────────

    def enqueue(
        self,
        task_name: str,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        priority: int | None = None,
        delay: float | None = None,
        queue: str | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,
        unique_key: str | None = None,
        depends_on: JobResult | str | Sequence[JobResult | str] | None = None,
        expires: float | datetime.timedelta | datetime.datetime | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> JobResult:
        """Enqueues a registered task by name (options as ``apply_async``)."""
        return self._registered(task_name).apply_async(
            args,
            kwargs,
            priority=priority,
            delay=delay,
            queue=queue,
            max_retries=max_retries,
            timeout=timeout,
            unique_key=unique_key,
            depends_on=depends_on,
            expires=expires,
            metadata=metadata,
        )

    def enqueue_many(
        self,
        task_name: str,
        args_list: Sequence[tuple[Any, ...] | list[Any]],
        kwargs_list: Sequence[dict[str, Any]] | None = None,
        priority: int | None = None,
        queue: str | None = None,
        delay: float | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,
    ) -> list[JobResult]:
        """Enqueues one job of a registered task per ``args_list`` item (with
        the ``kwargs_list`` item of the same index, if given), all in one
        transaction like ``map()``. Returns the jobs in that order."""
        task = self._registered(task_name)
        if kwargs_list is not None and len(kwargs_list) != len(args_list):
            raise InvalidArgumentError(
                f"kwargs_list has {len(kwargs_list)} items and args_list {len(args_list)}: one each per job"
            )
        calls = [
            _options.call_args(args, None if kwargs_list is None else kwargs_list[i])
            for i, args in enumerate(args_list)
        ]
        return task._submit_calls(
            calls, priority=priority, queue=queue, delay=delay, max_retries=max_retries, timeout=timeout
        )

    def _registered(self, task_name: str) -> TaskWrapper[Any, Any]:
        task = self._tasks.get(task_name) if isinstance(task_name, str) else None
        if task is None:
            _options.name("task_name", task_name)
            raise UnknownTaskError(f"no task named {task_name!r} is registered on this Queue")
        return task

    def close(self) -> None:
        """Stops the worker (see ``shutdown``) and closes the database.
        Threads of this process waiting in ``result()`` or ``aresult()`` on
        it raise ``QueueClosedError``.

        Called from inside a task, it closes the queue in the background once
        that task (and the others running) returned, so that their outcomes
        are recorded; it returns at once."""
        if _current.get() is not None:
            threading.Thread(target=self._finalizer, name="taskito-close").start()
            return
        self._finalizer()

    @property
    def closed(self) -> bool:
        return bool(self._client.engine.closed)

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        storage = self._client.storage
        schema = f" schema={storage.schema!r}" if storage.is_postgres else ""
        return f"<Queue {self.db_path!r}{schema} workers={self.worker_threads}>"

    # ── for tests and tooling ────────────────────────────────────────────

    @contextmanager
    def redirect(self, target: Queue) -> Iterator[None]:
        """For testing: points this Queue at ``target``'s database until the
        block exits.

        Meanwhile, enqueueing and reading jobs through this Queue
        (``task.delay/apply_async/map``, ``enqueue``, ``stats``, ``get_job``,
        ``list_jobs``, ``cancel_job``, ``cancel_running_job``, the dead
        letters, and the ``JobResult``s they return) go to target's database,
        with target's serializer and enqueue defaults; ``db_path`` and the
        ``default_*`` attributes are target's, and so are the worker methods
        (a worker started meanwhile runs on target's database). A
        ``JobResult`` keeps reading the database its job is on after the
        block. This Queue's tasks stay its own, and ``close()`` still closes
        its own database.

        Blocks nest: each exit, also on an exception, puts back what its
        entry replaced, so exit them in reverse order. A target that is
        itself redirected is followed to where it points on entry. This is
        how the pytest plugin runs an application's Queue on a test database.
        """
        if not isinstance(target, Queue):
            raise TypeError(f"redirect() takes a taskito.Queue, got {type(target).__name__}")
        replaced = self._client
        self._client = target._client
        try:
            yield
        finally:
            self._client = replaced

    def drop_schema(self) -> None:
        """For tests and tooling: closes this Queue and deletes its PostgreSQL
        schema with every job in it (``DROP SCHEMA ... CASCADE``). The next
        Queue on that schema starts empty. Raises ``InvalidArgumentError``
        for a SQLite queue."""
        if not self._storage.is_postgres:
            raise InvalidArgumentError("drop_schema() is for PostgreSQL queues; this one is on SQLite")
        self.close()
        self._engine.drop_schema()


def _rate(field: str, value: Any) -> float:
    """A rate such as ``"100/m"`` in jobs per second; ``InvalidArgumentError``
    names ``field``."""
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{field} must be a str such as '100/m', got {value!r}")
    return float(_native.rate_per_second(value, field))


def _queue_rates(limits: Any) -> tuple[dict[str, str], dict[str, float]]:
    """``queue_rate_limits`` as given, and in jobs per second."""
    if limits is None:
        return {}, {}
    if not isinstance(limits, dict):
        raise InvalidArgumentError(f"queue_rate_limits must be a dict of queue name to rate, got {limits!r}")
    rates = {}
    for queue, rate in limits.items():
        _options.name("queue_rate_limits key", queue)
        rates[queue] = _rate(f"queue_rate_limits[{queue!r}]", rate)
    return dict(limits), rates


def _import_name(module: str) -> str:
    """The name ``module`` is imported under elsewhere. A script runs as
    ``__main__``, a name no other process can import: its tasks take the
    name of the module a worker would import instead (``__spec__.name``
    under ``python -m``, else the script file's stem). A script with no
    file (``python -c``, a REPL) keeps ``__main__``."""
    if module != "__main__":
        return module
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        return str(spec.name)
    file = getattr(main, "__file__", None)
    if isinstance(file, str) and file:
        return os.path.splitext(os.path.basename(file))[0]
    return module


# Databases whose wake-up fallback was already logged by this process.
_POLLING_LOGGED: set[str] = set()


def _warn_if_polling(engine: NativeQueue) -> None:
    """Says once per database and process that other processes' work and
    results will be found by polling, and why."""
    reason = engine.wakeup_fallback
    if reason is not None and engine.path not in _POLLING_LOGGED:
        _POLLING_LOGGED.add(engine.path)
        logger.warning(
            "%s: wake-ups between processes are off (%s); other processes' jobs and results "
            "are found by polling, within 50 ms",
            engine.path,
            reason,
        )


def _close_engine(engine: NativeQueue, grace: float | None, event_loop: _async.EventLoop) -> None:
    left = engine.close(grace or 0.0)
    event_loop.close()
    if left:
        logger.warning("%d task(s) were still running when the queue closed", left)
