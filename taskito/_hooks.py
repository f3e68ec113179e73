"""Hooks and middleware: what a Queue runs around each attempt, and after
storage decided what a failed attempt leads to.

Around the call, in the worker (an executor thread, or the event loop for a
coroutine), with ``current_job`` set: middleware ``before`` then the
``before_task`` hooks; once the task returned or raised, ``on_success`` or
``on_failure``, then ``after_task``, then middleware ``after`` (of those
whose ``before`` returned). Middleware runs in registration order, the
Queue's then the task's; hooks in the order they were registered.

``on_retry`` and ``on_dead`` follow what storage decided, not what the task
did: they run once the failed attempt's outcome is committed, from the
engine's events (``AttemptFailed`` with a retry or a dead letter next, and a
lost worker's lease recovered), on the worker's event thread. The attempt's
exception, arguments and context are kept from the call when this process
ran it; otherwise (a job reaped after its worker died) they are read back:
the arguments from storage, the error as a ``TaskFailedError`` naming the
recorded one.

A hook that raises is logged with its traceback (logger ``taskito.hooks``)
and changes nothing else: the task runs, and the stored outcome is the
task's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from taskito.context import JobContext, _current
from taskito.middleware import TaskMiddleware
from taskito.result import task_failed

if TYPE_CHECKING:
    from taskito._client import Client
    from taskito.task import TaskWrapper

logger = logging.getLogger("taskito.hooks")

KINDS = ("before_task", "after_task", "on_success", "on_failure", "on_retry", "on_dead")

# Attempts whose outcome storage has yet to decide, kept for on_retry and
# on_dead, at most: an event that never comes (the worker stopped before
# committing) must not make the table grow for ever.
MAX_REMEMBERED = 10_000


def _overrides(middleware: TaskMiddleware, method: str) -> bool:
    return getattr(type(middleware), method) is not getattr(TaskMiddleware, method)


def _error_type(exc: BaseException) -> str:
    """As the engine records it (``_execution.failure``)."""
    kind = type(exc)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


@dataclass
class _Remembered:
    """An attempt run in this process, until storage decides its fate."""

    context: JobContext
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    error: BaseException | None = None


@dataclass
class Chain:
    """What runs for one task: the Queue's hook functions and its middleware
    then the task's."""

    hooks: Hooks
    middleware: list[TaskMiddleware]
    functions: dict[str, list[Callable[..., Any]]] = field(default_factory=dict)

    @property
    def follows_failures(self) -> bool:
        return bool(self.functions["on_retry"] or self.functions["on_dead"]) or any(
            _overrides(m, "on_retry") or _overrides(m, "on_dead_letter") for m in self.middleware
        )

    def enter(self, ctx: JobContext, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Around:
        """Runs what comes before the call; returns what runs after it."""
        entered = []
        for middleware in self.middleware:
            if _call(ctx, "before", middleware.before, ctx):
                entered.append(middleware)
        for hook in self.functions["before_task"]:
            _call(ctx, "before_task", hook, ctx.task_name, args, kwargs)
        if self.follows_failures:
            self.hooks.remember(_Remembered(ctx, args, kwargs))
        return Around(self, ctx, args, kwargs, entered)


@dataclass
class Around:
    """One attempt between its ``before`` and ``after`` hooks."""

    chain: Chain
    ctx: JobContext
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    entered: list[TaskMiddleware]

    def exit(self, result: Any, error: BaseException | None) -> None:
        """Runs what comes after the call: ``error`` is what the task raised."""
        chain, ctx, args, kwargs = self.chain, self.ctx, self.args, self.kwargs
        if error is None:
            for hook in chain.functions["on_success"]:
                _call(ctx, "on_success", hook, ctx.task_name, args, kwargs, result)
        else:
            for hook in chain.functions["on_failure"]:
                _call(ctx, "on_failure", hook, ctx.task_name, args, kwargs, error)
        for hook in chain.functions["after_task"]:
            _call(ctx, "after_task", hook, ctx.task_name, args, kwargs, result, error)
        for middleware in self.entered:
            _call(ctx, "after", middleware.after, ctx, result, error)
        if chain.follows_failures:
            chain.hooks.settled(ctx, error)


def _call(ctx: JobContext, kind: str, fn: Callable[..., Any], *args: Any) -> bool:
    """Calls one hook; logs what it raised. True if it returned."""
    try:
        fn(*args)
    except Exception:
        name = getattr(fn, "__qualname__", repr(fn))
        logger.exception(
            "%s hook %s raised for job %s (%s); the job goes on as if it had not",
            kind,
            name,
            ctx.id,
            ctx.task_name,
            extra={"job_id": ctx.id, "task": ctx.task_name, "attempt": ctx.attempt},
        )
        return False
    return True


class Hooks:
    """A Queue's hook functions and global middleware, and the attempts kept
    for ``on_retry``/``on_dead`` until their events come."""

    def __init__(self, middleware: Sequence[TaskMiddleware]) -> None:
        self.middleware = middleware_list("middleware", middleware)
        self.functions: dict[str, list[Callable[..., Any]]] = {kind: [] for kind in KINDS}
        # Bumped by every registration: tasks rebuild their chain once.
        self.version = 0
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, int], _Remembered] = {}

    def add(self, kind: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(fn):
            raise TypeError(f"@queue.{kind} needs a function, got {fn!r}")
        self.functions[kind].append(fn)
        self.version += 1
        return fn

    def chain(self, task: TaskWrapper[Any, Any]) -> Chain | None:
        """What runs for ``task``: None when nothing does (the common case,
        which costs a comparison)."""
        cached = task._hook_chain
        if cached is not None and cached[0] == self.version:
            return cached[1]
        middleware = self.middleware + list(task.middleware)
        chain = None
        if middleware or any(self.functions.values()):
            chain = Chain(self, middleware, {kind: list(fns) for kind, fns in self.functions.items()})
        task._hook_chain = (self.version, chain)
        return chain

    # ── attempts awaiting storage's decision ─────────────────────────────

    def remember(self, attempt: _Remembered) -> None:
        with self._lock:
            if len(self._pending) >= MAX_REMEMBERED:
                self._pending.pop(next(iter(self._pending)))
            self._pending[(attempt.context.id, attempt.context.attempt)] = attempt

    def settled(self, ctx: JobContext, error: BaseException | None) -> None:
        """The attempt returned (forgotten: no event follows) or raised (its
        error kept for the event, unless the event came first)."""
        key = (ctx.id, ctx.attempt)
        with self._lock:
            if error is None:
                self._pending.pop(key, None)
            elif key in self._pending:
                self._pending[key].error = error

    def _take(self, job_id: str, attempt: int) -> _Remembered | None:
        with self._lock:
            return self._pending.pop((job_id, attempt), None)

    # ── from the engine's events ─────────────────────────────────────────

    def on_event(
        self,
        tasks: dict[str, TaskWrapper[Any, Any]],
        client: Client,
        kind: str,
        job_id: str | None,
        task_name: str | None,
        attempt: int | None,
        error: tuple[str, str, str] | None,
    ) -> None:
        """Runs ``on_retry`` or ``on_dead`` for a failed attempt whose fate
        storage committed. Never raises: it runs on the worker's event thread."""
        if kind not in ("retry", "dead", "lease_expired") or job_id is None:
            return
        if not self._follows_failures(tasks):
            return  # nothing listens: no storage read for a reaped job
        try:
            self._failed(tasks, client, kind, job_id, task_name, attempt, error)
        except Exception:
            logger.exception("running the hooks of job %s failed", job_id, extra={"job_id": job_id})

    def _failed(
        self,
        tasks: dict[str, TaskWrapper[Any, Any]],
        client: Client,
        kind: str,
        job_id: str,
        task_name: str | None,
        attempt: int | None,
        error: tuple[str, str, str] | None,
    ) -> None:
        record: dict[str, Any] | None = None
        if kind == "lease_expired" or task_name is None or attempt is None:
            # A lost worker's job: what became of it is in storage.
            record = client.engine.get_job(job_id)
            if record is None:
                return
            task_name, attempt = record["task_name"], record["attempt"]
            kind = "dead" if record["status"] == "dead" else "retry"
            errors = client.engine.job_errors(job_id)
            last = errors[-1] if errors else {}
            error = (last.get("type", "WorkerLost"), last.get("message", ""), last.get("traceback", ""))
        assert task_name is not None and attempt is not None
        task = tasks.get(task_name)
        chain = self.chain(task) if task is not None else self._global_chain()
        remembered = self._take(job_id, attempt)
        if chain is None or not chain.follows_failures:
            return
        error_type, message, trace = error or ("Error", "", "")
        if remembered is None:
            remembered = self._read_back(client, job_id, task_name, attempt, record)
        exc = remembered.error
        if exc is None or _error_type(exc) != error_type:
            # Not what this process saw the task raise (a timeout, a lost
            # worker): the error storage recorded.
            exc = task_failed(
                job_id,
                task_name,
                {"type": error_type, "message": message, "traceback": trace, "attempt": attempt},
            )
        self._announce(chain, kind, remembered, exc, attempt)

    def _announce(self, chain: Chain, kind: str, job: _Remembered, exc: BaseException, attempt: int) -> None:
        ctx = job.context
        token = _current.set(ctx)
        try:
            if kind == "retry":
                for middleware in chain.middleware:
                    _call(ctx, "on_retry", middleware.on_retry, ctx, exc, attempt)
                for hook in chain.functions["on_retry"]:
                    _call(ctx, "on_retry", hook, ctx.task_name, job.args, job.kwargs, exc, attempt)
            else:
                for middleware in chain.middleware:
                    _call(ctx, "on_dead_letter", middleware.on_dead_letter, ctx, exc)
                for hook in chain.functions["on_dead"]:
                    _call(ctx, "on_dead", hook, ctx.task_name, job.args, job.kwargs, exc)
        finally:
            _current.reset(token)

    def _follows_failures(self, tasks: dict[str, TaskWrapper[Any, Any]]) -> bool:
        """Whether any hook or middleware, global or of a task, follows failures."""
        if self.functions["on_retry"] or self.functions["on_dead"]:
            return True
        middleware = [*self.middleware, *(m for task in tasks.values() for m in task.middleware)]
        return any(_overrides(m, "on_retry") or _overrides(m, "on_dead_letter") for m in middleware)

    def _global_chain(self) -> Chain | None:
        if not self.middleware and not any(self.functions.values()):
            return None
        return Chain(self, list(self.middleware), {kind: list(fns) for kind, fns in self.functions.items()})

    @staticmethod
    def _read_back(
        client: Client, job_id: str, task_name: str, attempt: int, record: dict[str, Any] | None
    ) -> _Remembered:
        """An attempt this process did not run: its context and arguments as stored."""
        record = record or client.engine.get_job(job_id) or {}
        args: tuple[Any, ...] = ()
        kwargs: dict[str, Any] = {}
        payload = client.engine.job_payload(job_id)
        if payload is not None:
            try:
                args, kwargs = client.serializer.loads(payload)
            except Exception:
                logger.exception("cannot decode the arguments of job %s for its hooks", job_id)
        ctx = JobContext(
            job_id,
            task_name,
            record.get("queue", "default"),
            attempt,
            record.get("max_retries", 0),
            None,
            client.engine,
        )
        return _Remembered(ctx, tuple(args), dict(kwargs))


def middleware_list(what: str, middleware: Sequence[TaskMiddleware] | None) -> list[TaskMiddleware]:
    """A list of middleware instances; raises for anything else."""
    if middleware is None:
        return []
    if isinstance(middleware, TaskMiddleware) or not isinstance(middleware, Sequence):
        raise TypeError(f"{what} must be a list of TaskMiddleware instances, got {middleware!r}")
    for item in middleware:
        if not isinstance(item, TaskMiddleware):
            raise TypeError(f"{what} must hold TaskMiddleware instances, got {item!r}")
    return list(middleware)
