"""Running one attempt of a job, for the engine's executor threads: decode
the arguments, call the task with ``current_job`` set, encode the result, and
say how it went in the engine's terms (the ``OUTCOME_*`` tags). A coroutine
is not run here: it goes to the worker's event loop (``_async``), and
``coroutine_outcome`` says how it went once it ends."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import traceback
from typing import TYPE_CHECKING, Any

from taskito._native import OUTCOME_CANCELLED, OUTCOME_DEFERRED, OUTCOME_FAILURE, OUTCOME_SUCCESS
from taskito.context import JobContext, _current
from taskito.exceptions import JobCancelledError, SerializationError

if TYPE_CHECKING:
    from taskito._async import Attempt, EventLoop
    from taskito._client import Client
    from taskito._hooks import Hooks
    from taskito.serializers import Serializer
    from taskito.task import TaskWrapper

# What an attempt hands the engine: (OUTCOME_SUCCESS, result bytes),
# (OUTCOME_FAILURE, (type, message, traceback, retryable)) or
# (OUTCOME_CANCELLED, message); or, for a coroutine, (OUTCOME_DEFERRED,
# its Attempt). Any other tag fails the attempt for good.
AttemptOutcome = tuple[int, Any]


def execute(
    tasks: dict[str, TaskWrapper[Any, Any]],
    client: Client,
    event_loop: EventLoop,
    hooks: Hooks,
    task_name: str,
    payload: bytes,
    job_id: str,
    attempt: int,
    max_retries: int,
    queue: str,
    fed: tuple[str, list[bytes | None]] | None = None,
) -> AttemptOutcome:
    """Runs attempt ``attempt`` of job ``job_id`` of ``task_name``, between
    its hooks (``_hooks``) if it has any. ``fed`` is None, or its
    dependencies' stored results for a job fed by them: ``("one", [r])``
    prepends r's value to the positional arguments (a chain's next step),
    ``("all", [r1, r2, ...])`` prepends the list of their values as one
    argument (a chord's callback); a dependency that did not complete gives
    None."""
    task = tasks.get(task_name)
    if task is None:
        return OUTCOME_FAILURE, ("UnknownTaskError", unknown_task_message(task_name), "", False)
    try:
        args, kwargs = client.serializer.loads(payload)
    except Exception as exc:
        return failure(exc, "cannot decode the job's arguments: ", retryable=False)
    if fed is not None:
        try:
            args = fed_arguments(client, fed, tuple(args))
        except Exception as exc:
            return failure(exc, "cannot decode the results of the job's dependencies: ", retryable=False)
    context = JobContext(job_id, task_name, queue, attempt, max_retries, task.soft_timeout, client.engine)
    token = _current.set(context)
    chain = hooks.chain(task)
    around = None if chain is None else chain.enter(context, args, kwargs)
    try:
        value = task.fn(*args, **kwargs)
        if inspect.iscoroutine(value):
            # Runs in a copy of this context, where current_job is this job;
            # its after-hooks run on the loop when it ends.
            coroutine = event_loop.attempt(
                value, contextvars.copy_context(), context, task, client.serializer, around
            )
            context.probe = coroutine  # cancellation, without a storage read on the loop
            return OUTCOME_DEFERRED, coroutine
    except JobCancelledError as exc:
        if around is not None:
            around.exit(None, exc)
        if context.cancel_requested():
            return OUTCOME_CANCELLED, str(exc)
        # Not this job's cancellation (a sub-job's result(), say): a failure.
        return failure(exc, retryable=task.should_retry(exc))
    except BaseException as exc:
        if around is not None:
            around.exit(None, exc)
        return failure(exc, retryable=task.should_retry(exc))
    else:
        if around is not None:
            around.exit(value, None)
    finally:
        _current.reset(token)
    return encode_result(client.serializer, value)


def coroutine_outcome(attempt: Attempt, task: asyncio.Task[Any]) -> AttemptOutcome | None:
    """How a coroutine's attempt went, once its task is done; None when the
    engine interrupted it (it already failed or released the job)."""
    if attempt.reason == "interrupt":
        return None
    try:
        value = task.result()
    except (asyncio.CancelledError, JobCancelledError) as exc:
        if attempt.reason == "cancel":
            return OUTCOME_CANCELLED, f"job {attempt.job.id} was asked to stop"
        return failure(exc, retryable=attempt.wrapper.should_retry(exc))
    except BaseException as exc:
        return failure(exc, retryable=attempt.wrapper.should_retry(exc))
    return encode_result(attempt.serializer, value)


def coroutine_hooks(attempt: Attempt, task: asyncio.Task[Any] | None) -> None:
    """Runs a coroutine's after-hooks, in its context, once it ended (its
    ``task``) or was stopped before it ran (None)."""
    around = attempt.around
    if around is None:
        return
    if task is None:
        attempt.context.run(around.exit, None, asyncio.CancelledError())
        return
    try:
        value = task.result()
    except BaseException as exc:
        attempt.context.run(around.exit, None, exc)
    else:
        attempt.context.run(around.exit, value, None)


def fed_arguments(
    client: Client, fed: tuple[str, list[bytes | None]], args: tuple[Any, ...]
) -> tuple[Any, ...]:
    """``args`` with the dependencies' results in front, as ``fed`` says."""
    kind, results = fed
    values = [None if r is None else client.serializer.loads(r) for r in results]
    if kind == "one":
        return (*values, *args)
    return (values, *args)


def encode_result(serializer: Serializer, value: Any) -> AttemptOutcome:
    try:
        result = serializer.dumps(value)
        if not isinstance(result, bytes):
            raise SerializationError(f"the serializer returned {type(result).__name__}, not bytes")
    except Exception as exc:
        return failure(exc, "cannot serialize the task's result: ", retryable=False)
    return OUTCOME_SUCCESS, result


def unknown_task_message(task_name: str) -> str:
    message = f"no task named {task_name!r} is registered on this worker"
    if task_name.startswith("__main__."):
        # As the engine says it of a job no worker ever had (storage/common.rs).
        message += (
            "; the producer defined it in a script without a file (python -c, a REPL), whose "
            "tasks are named __main__.*, a module no worker can import: pass name= to "
            "@queue.task, or define the task in a module the worker imports and run the "
            "producer with python -m"
        )
    return message


def failure(exc: BaseException, context: str = "", *, retryable: bool = True) -> AttemptOutcome:
    """The outcome of an attempt that raised ``exc``."""
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    trace = "".join(traceback.format_exception(exc))
    return OUTCOME_FAILURE, (name, context + str(exc), trace, retryable)
