"""``Client``: the one object a Queue enqueues and reads jobs through."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from taskito import _options
from taskito.exceptions import SerializationError, TaskitoError
from taskito.result import JobResult
from taskito.serializers import Serializer

if TYPE_CHECKING:
    from taskito._native import NativeQueue
    from taskito._storage import Storage
    from taskito.task import TaskWrapper


class Client:
    """Where a Queue's jobs go: the database (the native engine), the
    serializer their arguments and results go through, and the defaults an
    enqueue fills in for a task that has none of its own.

    A Queue holds one and ``Queue.redirect`` swaps it as a whole, so nothing
    else may keep these apart: ``TaskWrapper`` and ``JobResult`` go through
    a Client, never through the Queue's attributes. A ``JobResult`` keeps the
    Client that made it, so it reads the database its job was written to.
    """

    __slots__ = ("default_priority", "default_retry", "default_timeout", "engine", "serializer", "storage")

    # Set by the Queue once the database is open (after every setting is checked).
    engine: NativeQueue

    def __init__(
        self,
        storage: Storage,
        serializer: Serializer,
        *,
        default_retry: int,
        default_timeout: float | None,
        default_priority: int,
    ) -> None:
        self.storage = storage
        self.serializer = serializer
        self.default_retry = default_retry
        self.default_timeout = default_timeout
        self.default_priority = default_priority

    @property
    def db_path(self) -> str:
        """Where the jobs are: the SQLite path, or the PostgreSQL URL without
        its password."""
        return self.engine.path

    # ── serializing ──────────────────────────────────────────────────────

    def dump_call(self, task_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        try:
            return self.serializer.dumps((args, kwargs))
        except Exception as exc:
            raise SerializationError(f"cannot serialize the arguments of {task_name}: {exc}") from exc

    def dump_calls(self, task_name: str, iterable: Iterable[tuple[Any, ...] | list[Any]]) -> list[bytes]:
        """One payload per argument tuple of ``iterable`` (``TaskWrapper.map``)."""
        dumps = self.serializer.dumps
        no_kwargs: dict[str, Any] = {}
        payloads = []
        # One pass, no per-item function calls beyond the serializer's: this
        # loop is most of map()'s cost. What the iterable itself raises is
        # not a serialization problem and goes through unchanged.
        for i, args in enumerate(iterable):
            call = args if type(args) is tuple else _map_item(i, args)
            try:
                payloads.append(dumps((call, no_kwargs)))
            except Exception as exc:
                raise SerializationError(
                    f"cannot serialize the arguments of {task_name} (item {i}): {exc}"
                ) from exc
        return payloads

    def load_result(self, job_id: str, value: bytes) -> Any:
        try:
            return self.serializer.loads(value)
        except TaskitoError:
            raise  # a SignatureError says more than a wrapper would
        except Exception as exc:
            raise SerializationError(f"cannot decode the result of job {job_id}: {exc}") from exc

    # ── jobs ─────────────────────────────────────────────────────────────

    def submit(
        self,
        task: TaskWrapper[Any, Any],
        payloads: list[bytes],
        *,
        priority: int | None = None,
        delay: float | None = None,
        queue: str | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,
    ) -> list[JobResult]:
        """Stores serialized calls of ``task`` in one transaction."""
        if priority is None:
            priority = task.priority if task.priority is not None else self.default_priority
        if max_retries is None:
            max_retries = task.max_retries if task.max_retries is not None else self.default_retry
        if timeout is None:
            timeout = task.timeout if task.timeout is not None else self.default_timeout
        ids = self.engine.enqueue(
            task.name,
            task.queue_name if queue is None else _options.name("queue", queue),
            payloads,
            _options.priority(priority),
            _options.optional_seconds("delay", delay),
            _options.count("max_retries", max_retries),
            task.retry_backoff,
            _options.optional_seconds("timeout", timeout, allow_zero=False),
        )
        return [JobResult._bound(self, job_id) for job_id in ids]

    def job(self, job_id: str, data: dict[str, Any] | None = None) -> JobResult:
        """A handle on the job ``job_id`` of this database."""
        return JobResult._bound(self, job_id, data)


def _map_item(index: int, args: Any) -> tuple[Any, ...]:
    if isinstance(args, tuple | list):
        return tuple(args)
    raise TypeError(
        f"map() takes an iterable of argument tuples; item {index} is "
        f"{type(args).__name__} (write [(x,) for x in items] for one argument each)"
    )
