"""``ScheduleAPI``, the part of ``Queue`` that declares what runs besides
enqueued jobs: periodic tasks, hooks around every attempt, and what the
worker records for the whole database (schedules and rate limits)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from taskito import _client, _hooks, periodic
from taskito.exceptions import InvalidArgumentError, SerializationError
from taskito.task import TaskWrapper

if TYPE_CHECKING:
    from taskito._native import NativeQueue

F = TypeVar("F", bound=Callable[..., Any])


class ScheduleAPI:
    """Periodic tasks and hooks of ``Queue`` (its settings are documented there)."""

    _client: _client.Client
    _tasks: dict[str, TaskWrapper[Any, Any]]
    _hooks: _hooks.Hooks
    _periodic: dict[str, periodic.Periodic]
    _queue_rates: dict[str, float]
    _worker_engine: NativeQueue | None
    task: Callable[..., Any]

    # ── periodic tasks ───────────────────────────────────────────────────

    def periodic(
        self,
        cron: str,
        name: str | None = None,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: dict[str, Any] | None = None,
        queue: str = "default",
        timezone: str = "UTC",
        catch_up: str = "one",
    ) -> Callable[[Any], TaskWrapper[Any, Any]]:
        """Runs a task on a cron schedule: ``@queue.periodic(cron="*/5 * * * *")``.

        ``cron`` has 5 fields (minute hour day-of-month month day-of-week) or
        6 (a leading seconds field), read in ``timezone`` (an IANA name).
        Each tick enqueues one job of the task with ``args``/``kwargs`` on
        ``queue``, once however many workers serve the database.
        ``catch_up`` says what happens to ticks missed while no worker ran:
        ``"one"`` run for all of them, ``"all"``, one per tick, or ``"none"``.

        Decorating a function registers it as a task named ``name`` (or
        ``module.qualname``); decorating a task (``@queue.task`` below it)
        keeps its name and options, and ``name`` names the schedule. A bad
        cron pattern, time zone or argument raises ``InvalidArgumentError``
        naming it, here, and nothing is registered.
        """
        cron, name, call_args, call_kwargs, queue, timezone, catch_up = periodic.check(
            cron, name, args, kwargs, queue, timezone, catch_up
        )

        def register(fn: Any) -> TaskWrapper[Any, Any]:
            if not callable(fn):
                raise InvalidArgumentError(f"@queue.periodic needs a function or a task, got {fn!r}")
            what = str(name or getattr(fn, "__qualname__", repr(fn)))
            try:
                # Before anything is registered: a call that cannot be stored is refused whole.
                self._client.dump_call(what, call_args, call_kwargs)
            except SerializationError as exc:
                raise InvalidArgumentError(f"args/kwargs of periodic task {what}: {exc}") from exc
            if isinstance(fn, TaskWrapper) and fn._queue is self:
                task: TaskWrapper[Any, Any] = fn
            else:
                task = self.task(name=name, queue=queue)(fn)
            schedule = periodic.Periodic(
                name or task.name, task, cron, timezone, catch_up, call_args, call_kwargs, queue
            )
            existing = self._periodic.get(schedule.name)
            if existing is not None and existing != schedule:
                raise InvalidArgumentError(
                    f"a different schedule is already named {schedule.name!r}; pass name= to tell them apart"
                )
            self._periodic[schedule.name] = schedule
            self._redeclare()
            return task

        return register

    def periodic_tasks(self) -> list[dict[str, Any]]:
        """Every periodic schedule declared on this Queue or recorded in its
        database by a worker, by name: ``name``, ``task_name``, ``cron``,
        ``timezone``, ``queue``, ``catch_up``, ``args`` and ``kwargs`` (None
        for one only in the database), ``next_run`` (its next tick, Unix
        seconds), ``last_run`` (the latest tick enqueued, or None) and
        ``registered`` (whether a worker has recorded it)."""
        return periodic.listing(self._periodic, self._client.engine.periodic())

    # ── hooks ────────────────────────────────────────────────────────────

    def before_task(self, fn: F) -> F:
        """``fn(task_name, args, kwargs)`` runs before every attempt, in the worker."""
        self._hooks.add("before_task", fn)
        return fn

    def after_task(self, fn: F) -> F:
        """``fn(task_name, args, kwargs, result, error)`` runs after every
        attempt (``error`` None when it returned, ``result`` None when it raised)."""
        self._hooks.add("after_task", fn)
        return fn

    def on_success(self, fn: F) -> F:
        """``fn(task_name, args, kwargs, result)`` runs after an attempt that returned."""
        self._hooks.add("on_success", fn)
        return fn

    def on_failure(self, fn: F) -> F:
        """``fn(task_name, args, kwargs, error)`` runs after an attempt that raised."""
        self._hooks.add("on_failure", fn)
        return fn

    def on_retry(self, fn: F) -> F:
        """``fn(task_name, args, kwargs, error, attempt)`` runs once storage
        scheduled a retry after attempt ``attempt`` failed (so once per retry)."""
        self._hooks.add("on_retry", fn)
        return fn

    def on_dead(self, fn: F) -> F:
        """``fn(task_name, args, kwargs, error)`` runs once storage moved the
        job to the dead letters."""
        self._hooks.add("on_dead", fn)
        return fn

    def hooks(self) -> dict[str, list[Callable[..., Any]]]:
        """The hook functions registered with ``@queue.before_task`` ...
        ``@queue.on_dead``, by kind, in registration order (a copy). For
        tools and plugins: the pytest plugin registers them on its test
        queue."""
        return {kind: list(fns) for kind, fns in self._hooks.functions.items()}

    # ── what a worker records ────────────────────────────────────────────

    def _declared(self) -> tuple[list[Any], list[Any]]:
        """The schedules (arguments serialized by the current client) and
        rate limits a worker of this Queue records in the database."""
        client = self._client
        schedules = [schedule.native(client) for schedule in self._periodic.values()]
        limits: list[Any] = [
            ("task", task.name, task.rate_per_second)
            for task in self._tasks.values()
            if task.rate_per_second is not None
        ]
        limits += [("queue", name, rate) for name, rate in self._queue_rates.items()]
        return schedules, limits

    def _redeclare(self) -> None:
        """Tells a running worker of a schedule or limit declared after it started."""
        engine = self._worker_engine
        if engine is not None:
            engine.declare(*self._declared())
