"""How a Queue runs a worker: in background threads (``start_worker``), in
the foreground until told to stop (``run_worker``), or as a supervisor of
worker processes (``run_worker(processes=N)``); and how it stops one."""

from __future__ import annotations

import logging
import os
import sys
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from taskito import _async, _client, _execution, _hooks, _logging, _options, _stopping
from taskito._native import NativeQueue
from taskito.context import _current
from taskito.exceptions import InvalidArgumentError, StorageError, TaskitoError

if TYPE_CHECKING:
    from taskito.task import TaskWrapper

logger = logging.getLogger("taskito.worker")


def _event_callback(queue: weakref.ref[WorkerAPI]) -> Callable[..., None]:
    """The engine's ``on_event`` for a worker of ``queue``: ``_on_event``,
    reached through a weak reference. The worker's event thread keeps its
    callback until the thread ends, after the worker stopped; a bound method
    there would keep a stopped Queue alive meanwhile."""

    def on_event(*event: Any) -> None:
        target = queue()
        if target is None:
            _logging.log_event(*event)
        else:
            target._on_event(*event)

    return on_event


# Workers started in this process, on any Queue: the ``taskito worker``
# command tells from it that importing an app started one of its own.
_workers_started = 0


class WorkerAPI:
    """The worker-running half of ``Queue``: what its settings mean for a
    worker is documented on ``Queue``."""

    _client: _client.Client
    _tasks: dict[str, TaskWrapper[Any, Any]]
    _hooks: _hooks.Hooks
    # What the worker records for the whole database: periodic schedules and
    # rate limits (``ScheduleAPI._declared``).
    _declared: Callable[[], tuple[list[Any], list[Any]]]
    _event_loop: _async.EventLoop
    _worker_lock: threading.Lock
    _worker_engine: NativeQueue | None
    worker_threads: int
    prefetch: int | None
    async_concurrency: int
    lease_duration: float
    heartbeat_interval: float
    jobs_per_gil: int
    result_ttl: float | None
    unknown_task_grace: float | None
    shutdown_timeout: float

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
            periodic, rate_limits = self._declared()
            engine.start_worker(
                self._execute,
                _event_callback(weakref.ref(self)),
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
                periodic,
                rate_limits,
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
        if self._client.db_path == ":memory:":
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
        tasks, serializer, event loop and hooks (see ``_execution.execute``
        for the arguments)."""
        return _execution.execute(self._tasks, self._client, self._event_loop, self._hooks, *attempt)

    def _on_event(
        self,
        kind: str,
        job_id: str | None,
        task: str | None,
        attempt: int | None,
        message: str,
        error: tuple[str, str, str] | None = None,
    ) -> None:
        """The engine's ``on_event`` callback: logs the event, then runs the
        hooks that follow storage's decisions (``on_retry``, ``on_dead``)."""
        _logging.log_event(kind, job_id, task, attempt, message, error)
        self._hooks.on_event(self._tasks, self._client, kind, job_id, task, attempt, error)
