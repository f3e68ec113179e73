"""How a worker run in the foreground (``taskito worker``, or ``run_worker()``
on the main thread) stops when told.

The first SIGINT or SIGTERM stops it gracefully: nothing new is claimed, and
running tasks get ``shutdown_timeout`` to finish; one log line says so and
how to stop at once. A second one stops it now: running tasks are
interrupted and their jobs handed back to the queue with their attempt not
counted, and the process exits with the conventional status (130 after
SIGINT, 143 after SIGTERM) without a traceback.

Python runs signal handlers on the main thread only, between bytecodes, so
the main thread never blocks in one long call while stopping: the stop runs
in another thread and the main thread waits for it in short slices.

A worker process under a supervisor (``taskito worker --processes N``) gets
the supervisor's stops through ``forwarded`` instead: the same two steps,
except that a graceful stop it already began on its own (a service manager
that signals every process of the service) is not counted twice.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

from taskito._native import NativeQueue

logger = logging.getLogger("taskito.worker")

# How often the main thread looks up from its waits, to handle signals.
_SLICE = 0.1


class StopSignals:
    """SIGINT and SIGTERM handlers for one foreground worker."""

    def __init__(self, engine: NativeQueue, grace: float) -> None:
        self._engine = engine
        self._grace = grace
        self._previous: dict[int, object] = {}
        self.received: list[int] = []

    def install(self) -> None:
        """On the main thread, takes over SIGINT and SIGTERM; elsewhere (no
        signal reaches another thread) does nothing."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)  # type: ignore[arg-type]
        self._previous.clear()

    @property
    def hurried(self) -> bool:
        """A second signal came: the worker was stopped at once."""
        return len(self.received) > 1

    @property
    def exit_status(self) -> int:
        """128 + the last signal's number, as shells report a killed process."""
        return 128 + self.received[-1]

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        again = " again" if self.hurried else ""
        self._stop(f"received {signal.Signals(signum).name}{again}")

    def forwarded(self, signum: int, *, at_once: bool) -> None:
        """A stop the supervisor passes on (it received ``signum``): graceful,
        or, ``at_once``, the second signal's stop."""
        name = signal.Signals(signum).name
        if at_once:
            if not self.hurried:
                self.received += [signum] * (2 - len(self.received))
                self._stop(f"the supervisor received {name} again")
        elif not self.received:
            self.received.append(signum)
            self._stop(f"the supervisor received {name}")

    def supervisor_gone(self, pid: int) -> None:
        """The supervisor exited (it was killed): stop gracefully, as on SIGTERM."""
        if not self.received:
            self.received.append(signal.SIGTERM)
            self._stop(f"the supervisor (pid {pid}) is gone")

    def _stop(self, why: str) -> None:
        running = len(self._engine.running_tasks())
        if not self.hurried:
            logger.info(
                "%s: stopping gracefully: nothing new is claimed, and %d running task(s) "
                "get up to %gs to finish; send it again (Ctrl-C) to stop now",
                why,
                running,
                self._grace,
            )
            self._engine.request_stop()
        else:
            logger.warning(
                "%s: stopping now: %d running task(s) are interrupted and their "
                "jobs handed back to the queue, their attempt not counted",
                why,
                running,
            )
            self._engine.hurry_stop()


def wait_in_slices(stop: Callable[[], object]) -> None:
    """Runs ``stop`` in another thread and waits for it in short slices, so
    that this (main) thread keeps handling signals meanwhile. Re-raises what
    ``stop`` raised."""
    done = threading.Event()
    raised: list[BaseException] = []

    def run() -> None:
        try:
            stop()
        except BaseException as exc:  # handed to the waiting thread
            raised.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, name="taskito-shutdown", daemon=True).start()
    while not done.wait(_SLICE):
        pass
    if raised:
        raise raised[0]
