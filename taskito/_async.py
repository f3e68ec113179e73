"""Coroutine tasks: the event loop a worker runs them on.

An ``async def`` task does not hold an executor thread while it waits. The
executor that picks its job calls the function, which only creates the
coroutine, and hands the coroutine to the worker's event loop (one thread per
worker, started with the first coroutine) as an :class:`Attempt`. The engine
then counts the job against ``async_concurrency`` instead of its executors,
so it claims more, and the loop reports the outcome through the attempt's
``AttemptHandle`` when the coroutine ends.

At most ``concurrency`` coroutines run at once. The engine may hand over a
few more (it cannot tell which of the jobs it claims are coroutines); they
wait their turn in order, and their timeout counts from when they start.

Each coroutine runs in a copy of the context it was created in, where
``current_job`` names its own job. The engine stops one through ``cancel``:

- ``"interrupt"``: it ran past its timeout, or the worker's shutdown grace
  period ended. The engine has already failed or released the job, so what
  the coroutine does after its ``CancelledError`` is not reported.
- ``"cancel"``: ``cancel_running_job()`` was called. The job ends cancelled,
  unless the coroutine catches the ``CancelledError`` and returns a value.

Only the loop's thread touches what the loop runs (the waiting line, the
running count, the tasks); other threads hand work to it with
``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from taskito._execution import coroutine_hooks, coroutine_outcome, failure
from taskito._native import OUTCOME_CANCELLED

if TYPE_CHECKING:
    from taskito._hooks import Around
    from taskito._native import AttemptHandle
    from taskito.context import JobContext
    from taskito.serializers import Serializer
    from taskito.task import TaskWrapper

# How long closing the loop waits for coroutines still finishing their cleanup.
CLOSE_WAIT = 1.0


class Attempt:
    """One coroutine's attempt, as the engine and the event loop see it.

    ``start`` and ``cancel`` are the engine's (``native/src/python/runner.rs``),
    ``cancel_requested`` is ``current_job``'s."""

    __slots__ = (
        "around",
        "context",
        "coroutine",
        "handle",
        "job",
        "loop_thread",
        "reason",
        "serializer",
        "task",
        "thread",
        "wrapper",
    )

    def __init__(
        self,
        loop_thread: LoopThread,
        coroutine: Coroutine[Any, Any, Any],
        context: contextvars.Context,
        job: JobContext,
        wrapper: TaskWrapper[Any, Any],
        serializer: Serializer,
        around: Around | None = None,
    ) -> None:
        self.loop_thread = loop_thread
        self.coroutine = coroutine
        self.context = context
        self.job = job
        self.wrapper = wrapper
        self.serializer = serializer
        # The loop's thread, as running_tasks() shows it.
        self.thread = loop_thread.ident
        self.handle: AttemptHandle | None = None
        self.task: asyncio.Task[Any] | None = None
        # Why the engine stopped it: "interrupt", "cancel" or None.
        self.reason: str | None = None
        # Its after-hooks, run when it ends (None: it has none).
        self.around = around

    def start(self, handle: AttemptHandle) -> None:
        """Schedules the coroutine; its outcome goes to ``handle`` (an executor thread calls this)."""
        self.handle = handle
        self.loop_thread.submit(self)

    def cancel(self, reason: str) -> None:
        """Stops the coroutine: ``CancelledError`` is raised inside it (any thread)."""
        self.loop_thread.call(self.loop_thread.cancel, self, reason)

    def cancel_requested(self, job_id: str) -> bool:
        """For ``current_job.check_cancelled()`` inside the coroutine, answered
        from memory: a storage read would block the loop. The engine tells the
        attempt (and cancels it) as soon as it learns of the request."""
        return self.reason == "cancel"


class EventLoop:
    """Where one Queue's worker runs its coroutine tasks: a :class:`LoopThread`
    started with the first coroutine and stopped by ``close()``; a coroutine
    after that starts another."""

    def __init__(self) -> None:
        # Coroutines running at once, at most; the worker sets it as it starts.
        self.concurrency = 100
        self._lock = threading.Lock()
        self._current: LoopThread | None = None

    def attempt(
        self,
        coroutine: Coroutine[Any, Any, Any],
        context: contextvars.Context,
        job: JobContext,
        wrapper: TaskWrapper[Any, Any],
        serializer: Serializer,
        around: Around | None = None,
    ) -> Attempt:
        """An attempt for the engine to start on the loop (an executor thread)."""
        current = self._current
        if current is None:
            with self._lock:
                if self._current is None:
                    self._current = LoopThread(self.concurrency)
                current = self._current
        return Attempt(current, coroutine, context, job, wrapper, serializer, around)

    def close(self) -> None:
        """Stops the loop, once the worker has stopped, and waits a moment
        for its coroutines' cleanup."""
        with self._lock:
            current, self._current = self._current, None
        if current is not None:
            current.close()


class LoopThread:
    """One event loop in a thread of its own, and the coroutines it runs.
    Each worker start gets a new one: one still winding down the coroutines
    of a worker that stopped never mixes them with the next worker's."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        # Handed over by executors, not yet seen by the loop.
        self._incoming: deque[Attempt] = deque()
        # A call to take them is on its way to the loop.
        self._poked = False
        # The loop's own: attempts waiting for their turn, and how many run.
        self._waiting: deque[Attempt] = deque()
        self._running = 0
        self._closing = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="taskito-asyncio", daemon=True)
        self._thread.start()
        assert self._thread.ident is not None
        self.ident: int = self._thread.ident

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._wind_down()

    def call(self, callback: Callable[..., object], *args: Any) -> None:
        """Runs ``callback(*args)`` on the loop's thread, soon (any thread);
        nothing if the loop is closed."""
        with contextlib.suppress(RuntimeError):  # closed meanwhile
            self._loop.call_soon_threadsafe(callback, *args)

    def submit(self, attempt: Attempt) -> None:
        """Hands an attempt to the loop (an executor thread). While the loop
        has not yet taken what was handed before, no new wake-up is sent:
        under load, one wake-up carries many attempts."""
        self._incoming.append(attempt)
        if not self._poked:
            self._poked = True
            try:
                self._loop.call_soon_threadsafe(self._take_incoming)
            except RuntimeError:
                self._incoming.remove(attempt)
                raise RuntimeError("the worker's event loop is closed") from None

    # ── on the loop's thread ──────────────────────────────────────────────

    def _take_incoming(self) -> None:
        # Cleared before taking: an attempt handed over from now on sends a
        # wake-up of its own.
        self._poked = False
        incoming = self._incoming
        while incoming:
            attempt = incoming.popleft()
            if self._closing:
                attempt.reason = "interrupt"  # the worker stopped and released it
                self._settle_unstarted(attempt)
            elif attempt.reason is not None:
                self._settle_unstarted(attempt)
            elif self._running < self.concurrency:
                self._run(attempt)
            else:
                self._waiting.append(attempt)

    def _run(self, attempt: Attempt) -> None:
        self._running += 1
        task = self._loop.create_task(attempt.coroutine, context=attempt.context)
        attempt.task = task
        task.add_done_callback(lambda finished: self._finished(attempt, finished))

    def _finished(self, attempt: Attempt, task: asyncio.Task[Any]) -> None:
        self._running -= 1
        waiting = self._waiting
        if waiting and self._running < self.concurrency:
            following = waiting.popleft()
            assert following.handle is not None
            following.handle.started()
            self._run(following)
        handle = attempt.handle
        assert handle is not None
        try:
            coroutine_hooks(attempt, task)
            outcome = None if self._closing else coroutine_outcome(attempt, task)
        except BaseException as exc:  # a bug in judging must not strand the job
            outcome = failure(exc)
        if outcome is None:
            handle.discard()
        else:
            handle.finish(outcome)

    def cancel(self, attempt: Attempt, reason: str) -> None:
        """Stops an attempt, running or waiting (``Attempt.cancel`` brings it here)."""
        if attempt.reason != "interrupt":
            attempt.reason = reason
        if attempt.task is not None:
            attempt.task.cancel(f"taskito: {reason}")
        elif attempt in self._waiting:
            self._waiting.remove(attempt)
            self._settle_unstarted(attempt)
        # Otherwise it is still on its way in: _take_incoming settles it.

    def _settle_unstarted(self, attempt: Attempt) -> None:
        """An attempt stopped before its coroutine ran."""
        attempt.coroutine.close()  # never awaited, and says nothing about it
        coroutine_hooks(attempt, None)
        handle = attempt.handle
        assert handle is not None
        if attempt.reason == "cancel":
            handle.finish((OUTCOME_CANCELLED, f"job {attempt.job.id} was asked to stop"))
        else:
            handle.discard()

    def _wind_down(self) -> None:
        """After the loop stopped: coroutines still there are cancelled (the
        worker has stopped and released their jobs) and get a moment for
        their cleanup."""
        loop = self._loop
        self._closing = True
        tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in tasks:
            task.cancel("taskito: the worker stopped")
        if tasks:
            loop.run_until_complete(asyncio.wait(tasks, timeout=CLOSE_WAIT))
        for attempt in [*self._waiting, *self._incoming]:
            attempt.reason = "interrupt"
            self._settle_unstarted(attempt)
        self._waiting.clear()
        self._incoming.clear()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    def close(self) -> None:
        """Stops the loop and waits (a moment, plus its cleanup's) for its thread."""
        try:
            self._loop.call_soon_threadsafe(self._loop.stop)
        except RuntimeError:
            return
        if self._thread is not threading.current_thread():
            self._thread.join(2 * CLOSE_WAIT)
