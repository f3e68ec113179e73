"""``Queue``: the one object a taskito user creates."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar, overload

import taskito._client as _client
from taskito import _async, _execution, _logging, _options, _stopping
from taskito._native import NativeQueue
from taskito._storage import Storage
from taskito.context import _current
from taskito.exceptions import (
    InvalidArgumentError,
    JobNotFoundError,
    StorageError,
    TaskitoError,
    UnknownTaskError,
)
from taskito.result import JobCounts, JobResult
from taskito.serializers import Serializer, SignedSerializer, resolve
from taskito.task import TaskWrapper

logger = logging.getLogger("taskito.worker")

# Workers started in this process, on any Queue: the ``taskito worker``
# command tells from it that importing an app started one of its own.
_workers_started = 0

P = ParamSpec("P")
R = TypeVar("R")


class Queue:
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
        """
        checked_retries = None if max_retries is None else _options.count("max_retries", max_retries)
        checked_backoff = _options.seconds("retry_backoff", retry_backoff)
        checked_timeout = _options.optional_seconds("timeout", timeout, allow_zero=False)
        checked_priority = None if priority is None else _options.priority(priority)
        queue_name = _options.name("queue", queue)
        checked_soft = _options.optional_seconds("soft_timeout", soft_timeout, allow_zero=False)
        retry_types = _options.exception_types("retry_on", retry_on)
        no_retry_types = _options.exception_types("dont_retry_on", dont_retry_on)
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
            )
            self._tasks[task_name] = wrapper
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
    ) -> JobResult:
        """Enqueues a registered task by name."""
        task = self._tasks.get(task_name) if isinstance(task_name, str) else None
        if task is None:
            _options.name("task_name", task_name)
            raise UnknownTaskError(f"no task named {task_name!r} is registered on this Queue")
        return task.apply_async(
            args,
            kwargs,
            priority=priority,
            delay=delay,
            queue=queue,
            max_retries=max_retries,
            timeout=timeout,
        )

    # ── jobs ─────────────────────────────────────────────────────────────

    def get_job(self, job_id: str) -> JobResult | None:
        client = self._client
        data = client.engine.get_job(job_id)
        return None if data is None else client.job(job_id, data)

    def list_jobs(
        self,
        status: str | None = None,
        queue: str | None = None,
        task_name: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[JobResult]:
        """Jobs matching every given filter, newest first."""
        client = self._client
        rows = client.engine.list_jobs(
            status,
            queue,
            task_name,
            _options.count("limit", limit),
            _options.count("offset", offset),
        )
        return [client.job(row["id"], row) for row in rows]

    def cancel_job(self, job_id: str) -> bool:
        """Cancels a job that has not started. False if it is running, final or unknown."""
        return bool(self._client.engine.cancel(job_id))

    def cancel_running_job(self, job_id: str) -> bool:
        """Asks a running job to stop: its task sees the request at its next
        ``current_job.check_cancelled()``, which raises ``JobCancelledError``;
        if the task lets it propagate (or fails), the job ends cancelled. A
        job that has not started is cancelled at once. False if the job is
        final or unknown."""
        return self._client.engine.request_cancel(job_id) in ("cancelled", "requested")

    def dead_letters(self, limit: int = 50, offset: int = 0) -> list[JobResult]:
        """Jobs that failed for good (status ``dead``), newest first; each
        one's ``errors`` lists every failed attempt."""
        return self.list_jobs(status="dead", limit=limit, offset=offset)

    def retry_dead(self, job_id: str) -> JobResult:
        """Puts a dead job back in the queue, with its original task,
        arguments and options and a fresh set of attempts."""
        client = self._client
        if not client.engine.retry_dead(job_id):
            job = self.get_job(job_id)
            if job is None:
                raise JobNotFoundError(f"no job with id {job_id}")
            raise InvalidArgumentError(f"job {job_id} is {job.status}, not dead")
        return client.job(job_id)

    def purge_dead(self, older_than: float = 0.0) -> int:
        """Deletes dead jobs that died more than ``older_than`` seconds (or a
        timedelta) ago; returns how many."""
        return int(self._client.engine.purge_dead(_options.seconds("older_than", older_than)))

    def purge_finished(self, older_than: float = 0.0) -> int:
        """Deletes completed and cancelled jobs (and their results) that
        finished more than ``older_than`` seconds (or a timedelta) ago;
        returns how many. ``result_ttl`` does this continuously."""
        return int(self._client.engine.purge_finished(_options.seconds("older_than", older_than)))

    def stats(self) -> JobCounts:
        """Job counts by status: pending, claimed (held by a worker, not
        started), running, complete, failed, dead, cancelled (the names
        ``job.status`` uses). ``stats()["completed"]`` still answers, with the
        ``complete`` count: an alias kept for compatibility with the reference
        project, not a key of its own."""
        return JobCounts(self._client.engine.stats())

    async def astats(self) -> JobCounts:
        """``stats()`` for asyncio: the database read runs in a worker thread,
        never on the event loop's."""
        return await asyncio.to_thread(self.stats)

    def workers(self) -> list[dict[str, Any]]:
        """The workers serving this database, oldest first, as each records
        itself: id, host, pid, threads, queues (None: all), tasks (the task
        names it runs), started_at and heartbeat_at (Unix seconds). A worker
        whose heartbeat lapsed for a lease is gone and not listed."""
        return list(self._client.engine.workers())

    def unserved_tasks(self) -> dict[str, int]:
        """Jobs waiting for a worker that has their task: pending (or
        waiting to retry) jobs of each task name no live worker has, by name.
        They run as soon as a worker that has the task starts (during a
        rolling deploy, say); one no worker ever had is dead-lettered after
        ``unknown_task_grace``."""
        return dict(self._client.engine.unserved_tasks())

    # ── worker ───────────────────────────────────────────────────────────

    def start_worker(
        self,
        queues: list[str] | None = None,
        *,
        workers: int | None = None,
        prefetch: int | None = None,
        async_concurrency: int | None = None,
    ) -> None:
        """Starts a worker in background threads and returns at once.

        Serves every queue when ``queues`` is None, and runs only jobs of the
        tasks registered on this Queue (registered before or while it
        runs); jobs of other tasks wait for a worker that has them.
        ``workers``, ``prefetch`` and ``async_concurrency`` override the
        Queue's for this worker. Stop it with ``shutdown()``.
        """
        if queues is not None:
            if isinstance(queues, str) or not all(isinstance(q, str) for q in queues):
                raise TypeError("queues must be a list of queue names or None")
            queues = list(queues)
        threads = (
            self.worker_threads
            if workers is None
            else (_options.count("workers", workers) or os.cpu_count() or 1)
        )
        held = self.prefetch if prefetch is None else _options.count("prefetch", prefetch)
        coroutines = (
            self.async_concurrency
            if async_concurrency is None
            else _options.count("async_concurrency", async_concurrency, minimum=1)
        )
        global _workers_started
        with self._worker_lock:
            engine = self._client.engine
            engine.start_worker(
                self._execute,
                _logging.log_event,
                threads,
                queues,
                self.lease_duration,
                self.heartbeat_interval,
                self.jobs_per_gil,
                self.result_ttl,
                list(self._tasks),
                held,
                self.unknown_task_grace,
                _logging.debug_events(),
                coroutines,
            )
            self._event_loop.concurrency = coroutines
            self._worker_engine = engine
            _workers_started += 1

    def run_worker(
        self,
        queues: list[str] | None = None,
        *,
        workers: int | None = None,
        prefetch: int | None = None,
        async_concurrency: int | None = None,
        processes: int | str | None = None,
        app: str | None = None,
    ) -> None:
        """Runs a worker until ``shutdown()`` is called (from another thread),
        or, on the main thread, until SIGINT (Ctrl+C) or SIGTERM.

        The first signal stops it gracefully (running tasks get
        ``shutdown_timeout`` to finish); a second one stops it at once, hands
        the running tasks' jobs back to the queue, and raises ``SystemExit``
        with status 130 (SIGINT) or 143 (SIGTERM). If the worker stopped on
        its own (its database file was deleted or replaced), this raises
        ``StorageError`` saying why. The calling thread does not hold the GIL
        while it waits.

        With ``processes=N`` (or ``"auto"``: the CPU count), this process
        supervises N worker processes of ``workers`` threads each instead,
        as ``taskito worker --processes N`` does: each is a new interpreter
        that imports ``app`` (``"module:attribute"``, naming this Queue),
        and signals reach every one. It raises ``TaskitoError`` if a worker
        process keeps failing to start.
        """
        if processes is not None:
            self._supervise(processes, app, queues, workers, prefetch, async_concurrency)
            return
        self._run_in_foreground(queues, workers, prefetch, async_concurrency)

    def _run_in_foreground(
        self,
        queues: list[str] | None,
        workers: int | None,
        prefetch: int | None,
        async_concurrency: int | None,
        on_started: Callable[[_stopping.StopSignals], object] | None = None,
    ) -> None:
        """``run_worker`` in this process; ``on_started`` is called with its
        stop signals once the worker runs (``taskito worker`` under a
        supervisor tells it then, and hands it the supervisor's stops)."""
        engine = self._client.engine
        # Handlers first: a signal that arrives once jobs run must stop the worker.
        signals = _stopping.StopSignals(engine, self.shutdown_timeout)
        signals.install()
        try:
            self.start_worker(queues, workers=workers, prefetch=prefetch, async_concurrency=async_concurrency)
            if on_started is not None:
                on_started(signals)
        except BaseException:
            signals.restore()  # and leave alone a worker that was already running
            raise
        try:
            while not engine.wait_worker(0.1):
                if engine.worker_stopping():
                    break
            # The handlers stay: a second signal while running tasks finish
            # stops the worker at once.
            _stopping.wait_in_slices(self.shutdown)
        finally:
            signals.restore()
        error = engine.worker_error
        if error is not None:
            raise StorageError(error)
        if signals.hurried:
            raise SystemExit(signals.exit_status)

    def _supervise(
        self,
        processes: int | str,
        app: str | None,
        queues: list[str] | None,
        workers: int | None,
        prefetch: int | None,
        async_concurrency: int | None,
    ) -> None:
        from taskito import _supervisor

        if not isinstance(app, str) or not app:
            raise InvalidArgumentError(
                "run_worker(processes=...) needs app='module:attribute' naming this Queue: "
                "each worker process is a new interpreter that imports it"
            )
        count = _supervisor.process_count(processes)
        if self.db_path == ":memory:":
            raise InvalidArgumentError(_supervisor.MEMORY_REFUSED)
        threads = self.worker_threads if workers is None else _options.count("workers", workers)
        args = ["--workers", str(threads or os.cpu_count() or 1)]
        if queues is not None:
            args += ["--queues", ",".join(queues)]
        if prefetch is not None:
            args += ["--prefetch", str(_options.count("prefetch", prefetch))]
        if async_concurrency is not None:
            coroutines = _options.count("async_concurrency", async_concurrency, minimum=1)
            args += ["--async-concurrency", str(coroutines)]
        level = logging.getLevelName(logging.getLogger("taskito").getEffectiveLevel())
        args += ["--log-level", level if level in _supervisor.LOG_LEVELS else "INFO"]
        # The children import `app` where this process would: the folder of
        # the script it runs (or the current one, under python -m) comes first.
        supervisor = _supervisor.Supervisor(app, count, args, pythonpath=sys.path[0] if sys.path else None)
        status = supervisor.run()
        if supervisor.error is not None:
            raise TaskitoError(supervisor.error)
        if status:
            raise SystemExit(status)

    def shutdown(self, timeout: float | None = None) -> int:
        """Stops the worker: claims nothing new, lets running jobs finish
        within ``timeout`` seconds (default ``shutdown_timeout``), and hands
        every other job it holds back to the queue. The queue stays usable
        for enqueueing.

        Returns how many tasks were still running when the time ran out (0
        normally); their threads cannot be killed and are left behind.
        Called from inside a task, it starts the shutdown in the background
        and returns 0 at once."""
        grace = self.shutdown_timeout if timeout is None else _options.seconds("timeout", timeout)
        if _current.get() is not None:
            # Called by a task: stopping waits for every task, this one
            # included, so it has to happen elsewhere, after this one returns.
            threading.Thread(target=self.shutdown, args=(grace,), name="taskito-shutdown").start()
            return 0
        left = self._client.engine.stop_worker(grace)
        # Coroutines still running were interrupted: give them a moment.
        self._event_loop.close()
        self._worker_engine = None
        if left:
            logger.warning(
                "%d task(s) were still running %.1fs after shutdown; their jobs were "
                "released and will run again",
                left,
                grace,
            )
        return int(left)

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

    def running_tasks(self) -> dict[str, int]:
        """For tooling and plugins: the jobs this Queue's worker is running
        right now, each with the ident of the thread running it (what
        ``threading.get_ident()`` returns inside the task), so that
        ``sys._current_frames()[ident]`` shows where the task is. Empty when
        no worker runs."""
        return dict(self._client.engine.running_tasks())

    # ── running tasks (called by the engine's executor threads) ───────────

    def _execute(self, *attempt: Any) -> _execution.AttemptOutcome:
        """The engine's ``execute`` callback: one attempt, with this Queue's
        tasks, serializer and event loop (see ``_execution.execute`` for the
        arguments)."""
        return _execution.execute(self._tasks, self._client, self._event_loop, *attempt)


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
