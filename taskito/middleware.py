"""``TaskMiddleware``: code that runs around every attempt of the tasks it
is registered for, globally (``Queue(middleware=[...])``) or per task
(``@queue.task(middleware=[...])``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taskito.context import JobContext


class TaskMiddleware:
    """Subclass it and override what you need; every method does nothing by
    default. ``ctx`` is the attempt's job: ``ctx.id``, ``ctx.task_name``,
    ``ctx.queue``, ``ctx.attempt`` (1 for the first run), ``ctx.max_retries``.

    Middleware runs in registration order, the Queue's first, then the
    task's. A method that raises is logged (logger ``taskito.hooks``, with
    its traceback) and changes nothing else: the task still runs, and the
    job's stored outcome is what the task did.
    """

    def before(self, ctx: JobContext) -> None:
        """Called in the worker before the task runs, with ``current_job`` set."""

    def after(self, ctx: JobContext, result: Any, error: BaseException | None) -> None:
        """Called once the task returned (``error`` None) or raised
        (``result`` None), if ``before`` returned normally."""

    def on_retry(self, ctx: JobContext, error: BaseException, attempt: int) -> None:
        """Called once storage has scheduled a retry after attempt ``attempt``
        failed with ``error`` (1 for the first run, which is also the number
        of the retry to come)."""

    def on_dead_letter(self, ctx: JobContext, error: BaseException) -> None:
        """Called once storage has moved the job to the dead letters after
        its last attempt failed with ``error``."""
