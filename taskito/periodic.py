"""Periodic tasks: ``@queue.periodic(cron=...)`` and ``queue.periodic_tasks()``.

A schedule is declared in the app, checked at decoration time (the cron
pattern and time zone by the engine's own parser, so a pattern accepted here
is one every worker runs), and recorded in the database by each worker that
starts with it. Workers store each tick as a job due at the tick, up to a
second ahead, moving the schedule on by a compare-and-set in the same
transaction: each tick is enqueued once however many worker processes serve
the database. A tick no worker stored within a second of its time was missed
(no worker ran): ``catch_up`` says what to do, ``"one"`` run (the latest),
``"all"`` of them, or ``"none"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from taskito import _native, _options
from taskito.exceptions import InvalidArgumentError

if TYPE_CHECKING:
    from taskito._client import Client
    from taskito.task import TaskWrapper

CATCH_UP = ("one", "all", "none")


@dataclass(frozen=True)
class Periodic:
    """One declared schedule: ``task`` called with ``args``/``kwargs`` at
    every tick of ``cron`` (in ``timezone``), on ``queue``."""

    name: str
    task: TaskWrapper[Any, Any]
    cron: str
    timezone: str
    catch_up: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    queue: str

    def native(self, client: Client) -> tuple[Any, ...]:
        """As the engine takes it, its arguments serialized by ``client``
        (the Queue's, or a redirect target's, whose worker decodes them)."""
        task = self.task
        priority = task.priority if task.priority is not None else client.default_priority
        retries = task.max_retries if task.max_retries is not None else client.default_retry
        timeout = task.timeout if task.timeout is not None else client.default_timeout
        return (
            self.name,
            self.cron,
            self.timezone,
            self.catch_up,
            task.name,
            self.queue,
            priority,
            retries,
            task.retry_backoff,
            timeout,
            client.dump_call(task.name, self.args, self.kwargs),
        )

    def describe(self, stored: dict[str, Any] | None) -> dict[str, Any]:
        """What ``periodic_tasks()`` says of it."""
        return {
            "name": self.name,
            "task_name": self.task.name,
            "cron": self.cron,
            "timezone": self.timezone,
            "queue": self.queue,
            "catch_up": self.catch_up,
            "args": self.args,
            "kwargs": self.kwargs,
            "next_run": next_run(self.cron, self.timezone),
            "last_run": None if stored is None else stored["last_tick"],
            "registered": stored is not None,
        }


def check(
    cron: Any,
    name: Any,
    args: Any,
    kwargs: Any,
    queue: Any,
    timezone: Any,
    catch_up: Any,
) -> tuple[str, str | None, tuple[Any, ...], dict[str, Any], str, str, str]:
    """Checks ``@queue.periodic``'s arguments; ``InvalidArgumentError``
    names the first bad one."""
    if not isinstance(cron, str):
        raise InvalidArgumentError(f"cron must be a str such as '*/5 * * * *', got {cron!r}")
    if not isinstance(timezone, str):
        raise InvalidArgumentError(f"timezone must be an IANA time zone name such as 'UTC', got {timezone!r}")
    # The engine's parser, so what passes here is what the workers run; its
    # error names the field at fault (cron or timezone).
    _native.next_tick(cron, timezone)
    if catch_up not in CATCH_UP:
        raise InvalidArgumentError(f"catch_up must be 'one', 'all' or 'none', got {catch_up!r}")
    if name is not None and (not isinstance(name, str) or not name):
        raise InvalidArgumentError(f"name must be a non-empty str or None, got {name!r}")
    if not isinstance(queue, str) or not queue:
        raise InvalidArgumentError(f"queue must be a non-empty str, got {queue!r}")
    if not isinstance(args, tuple | list):
        raise InvalidArgumentError(f"args must be a tuple or a list, got {type(args).__name__}")
    if kwargs is not None and not (isinstance(kwargs, dict) and all(isinstance(k, str) for k in kwargs)):
        raise InvalidArgumentError(f"kwargs must be a dict with str keys or None, got {kwargs!r}")
    call_args, call_kwargs = _options.call_args(tuple(args), kwargs)
    return cron, name, call_args, call_kwargs, queue, timezone, catch_up


def next_run(cron: str, timezone: str) -> float | None:
    """The schedule's next tick from now, in Unix seconds."""
    return _native.next_tick(cron, timezone)


def listing(declared: dict[str, Periodic], stored: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every schedule declared here or stored in the database, by name."""
    by_name = {row["name"]: row for row in stored}
    rows = [periodic.describe(by_name.get(name)) for name, periodic in declared.items()]
    for name, row in by_name.items():
        if name in declared:
            continue
        rows.append(
            {
                "name": name,
                "task_name": row["task_name"],
                "cron": row["cron"],
                "timezone": row["timezone"],
                "queue": row["queue"],
                "catch_up": row["catch_up"],
                "args": None,
                "kwargs": None,
                "next_run": _stored_next_run(row),
                "last_run": row["last_tick"],
                "registered": True,
            }
        )
    return sorted(rows, key=lambda row: row["name"])


def _stored_next_run(row: dict[str, Any]) -> float | None:
    try:
        return next_run(row["cron"], row["timezone"])
    except InvalidArgumentError:
        return None  # written by a taskito that reads patterns this one does not
