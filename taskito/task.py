"""``TaskWrapper``: what ``@queue.task()`` returns."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from taskito import _options
from taskito.canvas import Signature

if TYPE_CHECKING:
    from taskito._hooks import Chain
    from taskito.app import Queue
    from taskito.middleware import TaskMiddleware
    from taskito.result import JobResult

P = ParamSpec("P")
R = TypeVar("R")


class TaskWrapper(Generic[P, R]):
    """A registered task. Calling it runs the function here and now; ``delay``,
    ``apply_async`` and ``map`` enqueue it for a worker."""

    def __init__(
        self,
        queue: Queue,
        fn: Callable[P, R],
        *,
        name: str,
        max_retries: int | None,
        retry_backoff: float,
        timeout: float | None,
        priority: int | None,
        queue_name: str,
        soft_timeout: float | None = None,
        retry_on: tuple[type[BaseException], ...] = (),
        dont_retry_on: tuple[type[BaseException], ...] = (),
        rate_limit: str | None = None,
        rate_per_second: float | None = None,
        middleware: tuple[TaskMiddleware, ...] = (),
    ) -> None:
        self.fn = fn
        self.name = name
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.timeout = timeout
        self.priority = priority
        self.queue_name = queue_name
        self.soft_timeout = soft_timeout
        self.retry_on = retry_on
        self.dont_retry_on = dont_retry_on
        # "100/m" as given, and as jobs per second for the engine.
        self.rate_limit = rate_limit
        self.rate_per_second = rate_per_second
        self.middleware = middleware
        # The hooks that run around it: (the Queue's hooks version, chain).
        self._hook_chain: tuple[int, Chain | None] | None = None
        # Enqueues through the queue's current Client, which Queue.redirect swaps.
        self._queue = queue
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> JobResult:
        """Enqueues ``fn(*args, **kwargs)`` with the task's default options."""
        client = self._queue._client
        return client.submit(self, [client.dump_call(self.name, args, kwargs)])[0]

    def apply_async(
        self,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: dict[str, Any] | None = None,
        priority: int | None = None,
        delay: float | None = None,
        queue: str | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,
    ) -> JobResult:
        """Enqueues one call, overriding the task's options for this job."""
        call_args, call_kwargs = _options.call_args(args, kwargs)
        client = self._queue._client
        payload = client.dump_call(self.name, call_args, call_kwargs)
        return client.submit(
            self,
            [payload],
            priority=priority,
            delay=delay,
            queue=queue,
            max_retries=max_retries,
            timeout=timeout,
        )[0]

    async def adelay(self, *args: P.args, **kwargs: P.kwargs) -> JobResult:
        """``delay()`` for asyncio: the enqueue (a database write) runs in a
        worker thread, so the event loop goes on meanwhile."""
        return await asyncio.to_thread(self.delay, *args, **kwargs)

    async def aapply_async(
        self,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: dict[str, Any] | None = None,
        priority: int | None = None,
        delay: float | None = None,
        queue: str | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,
    ) -> JobResult:
        """``apply_async()`` for asyncio, its enqueue in a worker thread."""
        return await asyncio.to_thread(
            self.apply_async,
            args,
            kwargs,
            priority=priority,
            delay=delay,
            queue=queue,
            max_retries=max_retries,
            timeout=timeout,
        )

    def map(self, iterable: Iterable[tuple[Any, ...] | list[Any]]) -> list[JobResult]:
        """Enqueues one job per argument tuple, all in one transaction.

        Returns the jobs in the order of ``iterable``.
        """
        client = self._queue._client
        return client.submit(self, client.dump_calls(self.name, iterable))

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature of this task for a workflow (``taskito.chain`` and the
        others): in a chain, the previous step's result is prepended to
        ``args``."""

        return Signature(self, args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: in a chain, it runs with exactly these
        arguments, after the previous step completed."""

        return Signature(self, args, kwargs, immutable=True)

    @property
    def options(self) -> dict[str, Any]:
        """How it was registered, as keyword arguments of ``queue.task()``."""
        return {
            "name": self.name,
            "max_retries": self.max_retries,
            "retry_backoff": self.retry_backoff,
            "timeout": self.timeout,
            "priority": self.priority,
            "queue": self.queue_name,
            "soft_timeout": self.soft_timeout,
            "retry_on": self.retry_on,
            "dont_retry_on": self.dont_retry_on,
            "rate_limit": self.rate_limit,
            "middleware": list(self.middleware),
        }

    def should_retry(self, exc: BaseException) -> bool:
        """Whether a failure with ``exc`` is worth another attempt."""
        if self.dont_retry_on and isinstance(exc, self.dont_retry_on):
            return False
        return not self.retry_on or isinstance(exc, self.retry_on)

    def __repr__(self) -> str:
        return f"<TaskWrapper {self.name}>"
