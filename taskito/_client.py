"""``Client``: the one object a Queue enqueues and reads jobs through."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from taskito import _job_options, _options
from taskito._job_options import NONE, JobExtras
from taskito.exceptions import InvalidArgumentError, SerializationError, TaskitoError
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
        extras: JobExtras = NONE,
        keys: list[str] | None = None,
    ) -> list[JobResult]:
        """Stores serialized calls of ``task`` in one transaction. Jobs with
        ``extras`` (a unique key, dependencies, an expiry, metadata) or
        per-job unique ``keys`` go in as a graph; the rest take the plain,
        faster path."""
        node = self._node_options(task, priority, delay, queue, max_retries, timeout)
        if extras.plain and keys is None:
            ids = self.engine.enqueue(
                task.name,
                node["queue"],
                payloads,
                node["priority"],
                node["delay"],
                node["max_retries"],
                node["retry_backoff"],
                node["timeout"],
            )
        else:
            nodes = []
            for i, payload in enumerate(payloads):
                one = dict(node, payload=payload, **_extras_fields(extras))
                if keys is not None:
                    one["unique_key"] = keys[i]
                nodes.append(one)
            ids = self.engine.enqueue_graph(nodes)
        return [JobResult._bound(self, job_id) for job_id in ids]

    def submit_graph(self, nodes: list[dict[str, Any]]) -> list[JobResult]:
        """Stores a graph of jobs in one transaction (the canvas's chains,
        groups and chords); returns one ``JobResult`` per node, in order.

        Each node is a dict with ``task`` (a ``TaskWrapper``) and ``payload``
        (its serialized call, ``dump_call``), and optionally: ``priority``,
        ``delay``, ``queue``, ``max_retries``, ``timeout`` (the task's, then
        the Queue's defaults otherwise), ``unique_key``, ``expires``
        (seconds, timedelta or datetime), ``metadata`` (a dict),
        ``depends_on`` (stored jobs or ids), ``after`` (indexes of earlier
        nodes), ``mode`` (``"success"``: cancelled if a dependency fails,
        the default; ``"finish"``: runs whatever became of them) and
        ``feed`` (``"none"``; ``"one"``: the single dependency's result is
        prepended to the positional arguments; ``"all"``: the list of the
        dependencies' results, ``depends_on`` then ``after``, is prepended
        as one argument).
        """
        known = {
            "task", "payload", "priority", "delay", "queue", "max_retries", "timeout",
            "unique_key", "expires", "metadata", "depends_on", "after", "mode", "feed",
        }  # fmt: skip
        native = []
        for i, node in enumerate(nodes):
            unknown = set(node) - known
            if unknown:
                raise InvalidArgumentError(f"node {i} of the graph has unknown keys {sorted(unknown)}")
            task = node["task"]
            fields = self._node_options(
                task,
                node.get("priority"),
                node.get("delay"),
                node.get("queue"),
                node.get("max_retries"),
                node.get("timeout"),
            )
            extras = _job_options.extras(
                unique_key=node.get("unique_key"),
                depends_on=node.get("depends_on"),
                expires=node.get("expires"),
                metadata=node.get("metadata"),
            )
            after = list(node.get("after", ()))
            if any(isinstance(a, bool) or not isinstance(a, int) for a in after):
                raise InvalidArgumentError(f"node {i} of the graph: after must list node indexes (ints)")
            mode = node.get("mode", "success")
            feed = node.get("feed", "none")
            native.append(
                {
                    **fields,
                    "payload": node["payload"],
                    **_extras_fields(extras),
                    "after": after,
                    "mode": mode,
                    "feed": feed,
                }
            )
        ids = self.engine.enqueue_graph(native)
        return [JobResult._bound(self, job_id) for job_id in ids]

    def _node_options(
        self,
        task: TaskWrapper[Any, Any],
        priority: int | None,
        delay: float | None,
        queue: str | None,
        max_retries: int | None,
        timeout: float | None,
    ) -> dict[str, Any]:
        """The enqueue options of a job of ``task``, checked, the task's and
        then this Client's defaults filling what the call leaves out."""
        if priority is None:
            priority = task.priority if task.priority is not None else self.default_priority
        if max_retries is None:
            max_retries = task.max_retries if task.max_retries is not None else self.default_retry
        if timeout is None:
            timeout = task.timeout if task.timeout is not None else self.default_timeout
        return {
            "task_name": task.name,
            "queue": task.queue_name if queue is None else _options.name("queue", queue),
            "priority": _options.priority(priority),
            "delay": _options.optional_seconds("delay", delay),
            "max_retries": _options.count("max_retries", max_retries),
            "retry_backoff": task.retry_backoff,
            "timeout": _options.optional_seconds("timeout", timeout, allow_zero=False),
        }

    def job(self, job_id: str, data: dict[str, Any] | None = None) -> JobResult:
        """A handle on the job ``job_id`` of this database."""
        return JobResult._bound(self, job_id, data)


def _extras_fields(extras: JobExtras) -> dict[str, Any]:
    """A graph node's fields for ``extras`` (no dependencies on earlier nodes)."""
    return {
        "unique_key": extras.unique_key,
        "expires": extras.expires,
        "metadata": extras.metadata,
        "depends_on": list(extras.depends_on),
        "after": [],
        "mode": "success",
        "feed": "none",
    }


def _map_item(index: int, args: Any) -> tuple[Any, ...]:
    if isinstance(args, tuple | list):
        return tuple(args)
    raise TypeError(
        f"map() takes an iterable of argument tuples; item {index} is "
        f"{type(args).__name__} (write [(x,) for x in items] for one argument each)"
    )
