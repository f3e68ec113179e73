"""``TaskWrapper``: what ``@queue.task()`` returns."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from taskito import _job_options, _options
from taskito._job_options import NONE, JobExtras, UniqueKeyFunction
from taskito.canvas import Signature

if TYPE_CHECKING:
    import datetime

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
        unique_key: UniqueKeyFunction | None = None,
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
        self.unique_key = unique_key
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
        extras = NONE
        if self.unique_key is not None:
            extras = JobExtras(unique_key=_job_options.key_of(self.unique_key, args, kwargs))
        return client.submit(self, [client.dump_call(self.name, args, kwargs)], extras=extras)[0]

    def apply_async(
        self,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: dict[str, Any] | None = None,
        priority: int | None = None,
        delay: float | None = None,
        queue: str | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,
        *,
        unique_key: str | None = None,
        depends_on: JobResult | str | Sequence[JobResult | str] | None = None,
        expires: float | datetime.timedelta | datetime.datetime | None = None,
        metadata: dict[str, Any] | str | None = None,
    ) -> JobResult:
        """Enqueues one call, overriding the task's options for this job.

        ``unique_key``: while a job with this key is pending, waiting, running
        or due to retry, enqueueing another returns that job (same id)
        instead; once it finished, the key is free. ``depends_on`` (a job,
        an id, or a list of them): the job waits until each completed, and is
        cancelled if one dies, is cancelled or expires. ``expires`` (seconds,
        a timedelta or a datetime): not started by then, the job ends
        ``expired`` without running. ``metadata``: a JSON-serializable dict
        stored with the job (``JobResult.metadata``, ``current_job.metadata``); a JSON string
        of an object is taken as that dict.
        """
        call_args, call_kwargs = _options.call_args(args, kwargs)
        extras = _job_options.extras(
            unique_key=unique_key, depends_on=depends_on, expires=expires, metadata=metadata
        )
        if extras.unique_key is None and self.unique_key is not None:
            key = _job_options.key_of(self.unique_key, call_args, call_kwargs)
            extras = JobExtras(key, extras.depends_on, extras.expires, extras.metadata)
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
            extras=extras,
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
        *,
        unique_key: str | None = None,
        depends_on: JobResult | str | Sequence[JobResult | str] | None = None,
        expires: float | datetime.timedelta | datetime.datetime | None = None,
        metadata: dict[str, Any] | str | None = None,
    ) -> JobResult:
        """``apply_async()`` for asyncio, its enqueue in a worker thread."""
        return await asyncio.to_thread(
            functools.partial(
                self.apply_async,
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
        )

    def map(self, iterable: Iterable[tuple[Any, ...] | list[Any]]) -> list[JobResult]:
        """Enqueues one job per argument tuple, all in one transaction.

        Returns the jobs in the order of ``iterable``.
        """
        if self.unique_key is not None:
            calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
                (_map_args(i, args), {}) for i, args in enumerate(iterable)
            ]
            return self._submit_calls(calls)
        client = self._queue._client
        return client.submit(self, client.dump_calls(self.name, iterable))

    def _submit_calls(
        self,
        calls: Sequence[tuple[tuple[Any, ...], dict[str, Any]]],
        *,
        priority: int | None = None,
        queue: str | None = None,
        delay: float | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,
    ) -> list[JobResult]:
        """Stores ``(args, kwargs)`` calls in one transaction, each with its
        unique key when the task has a ``unique_key`` callable."""
        client = self._queue._client
        payloads = [client.dump_call(self.name, args, kwargs) for args, kwargs in calls]
        keys = None
        if self.unique_key is not None:
            keys = [_job_options.key_of(self.unique_key, args, kwargs) for args, kwargs in calls]
        return client.submit(
            self,
            payloads,
            priority=priority,
            delay=delay,
            queue=queue,
            max_retries=max_retries,
            timeout=timeout,
            keys=keys,
        )

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
            "unique_key": self.unique_key,
        }

    def should_retry(self, exc: BaseException) -> bool:
        """Whether a failure with ``exc`` is worth another attempt."""
        if self.dont_retry_on and isinstance(exc, self.dont_retry_on):
            return False
        return not self.retry_on or isinstance(exc, self.retry_on)

    def __repr__(self) -> str:
        return f"<TaskWrapper {self.name}>"


def _map_args(index: int, args: Any) -> tuple[Any, ...]:
    if isinstance(args, tuple | list):
        return tuple(args)
    raise TypeError(
        f"map() takes an iterable of argument tuples; item {index} is "
        f"{type(args).__name__} (write [(x,) for x in items] for one argument each)"
    )
