"""``taskito worker --processes N``: one supervisor, N worker processes.

A worker process's threads share one GIL, so CPU-bound Python tasks use one
core however many threads it has; N processes use N. The supervisor starts
each as a new interpreter running ``python -m taskito worker --app ...``
(spawn, never fork: a process with the engine's threads cannot be forked
safely, and the supervisor never imports the app, so it holds no database,
no threads and none of the app's memory). The children serve the same
database as any ``taskito worker`` would; the supervisor only watches them:

- it forwards its first SIGINT/SIGTERM to every child as a graceful stop,
  and a second one as a stop at once (the rules of a single worker, see
  ``_stopping``), then exits once they have: 0 if every child stopped
  cleanly, 128 + the signal after a stop at once;
- it restarts a child that dies while it runs (its jobs are recovered by
  their leases, as for any dead worker), after 0.1 s, doubling for each
  death in a row up to 10 s;
- a child that exits before it started serving is a start-up failure: one
  that could not load the app (exit status 2: the same every time) makes it
  give up at once, other kinds after five in a row; it then stops the other
  children and exits non-zero, showing the child's one-line error.

Each child gets its own end of a socket pair (``--status-fd``), and its
supervisor's pid (``--supervised-by``, also what ``taskito info`` groups
workers by). Over it the child says ``ready`` once its worker runs, or
``error <line>`` before it exits for a reason it can name; the supervisor
says ``stop <SIGNAL>`` or ``now <SIGNAL>``. A child whose supervisor is gone
(the socket reaches its end) stops gracefully. Children run in process
groups of their own, so a terminal's Ctrl-C reaches only the supervisor,
which passes it on once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING

from taskito.exceptions import InvalidArgumentError

if TYPE_CHECKING:
    from taskito._stopping import StopSignals

logger = logging.getLogger("taskito.supervisor")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

MEMORY_REFUSED = (
    "a :memory: database is private to one process: worker processes (--processes) cannot share "
    "it, and a restarted one would start empty; give the Queue a file path"
)

# `taskito worker`'s exit status when the app cannot be loaded or used.
CONFIG_ERROR = 2
# Start-up failures of other kinds in a row, in one slot, before giving up.
MAX_START_FAILURES = 5
FIRST_BACKOFF = 0.1
MAX_BACKOFF = 10.0
# A child that served this long resets its slot's back-off.
STEADY_AFTER = 30.0
# The longest the supervisor sleeps without looking at its children (a
# grandchild that inherited a child's socket would hide its exit).
LOOK_EVERY = 1.0


def process_count(value: int | str) -> int:
    """``--processes``: a positive count, or ``"auto"`` for the CPUs this
    process may run on."""
    if value == "auto":
        try:
            return len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            return os.cpu_count() or 1
    try:
        count = value if isinstance(value, int) and not isinstance(value, bool) else int(str(value))
    except ValueError:
        count = 0
    if count < 1:
        raise InvalidArgumentError(f"processes must be a positive number or 'auto', got {value!r}")
    return count


def exit_description(status: int) -> str:
    """A child's exit status, as Popen reports it, in words."""
    if status < 0:
        try:
            return f"signal {signal.Signals(-status).name}"
        except ValueError:
            return f"signal {-status}"
    return f"status {status}"


@dataclass
class Child:
    slot: int
    proc: subprocess.Popen[bytes]
    link: socket.socket
    started_at: float = field(default_factory=time.monotonic)
    ready: bool = False
    # The last error line it sent.
    error: str | None = None
    unread: bytes = b""


class Supervisor:
    """Runs ``processes`` children ``taskito worker --app app *worker_args``
    until a signal stops them, or it gives up (then ``error`` says why)."""

    def __init__(self, app: str, processes: int, worker_args: list[str], *, pythonpath: str | None = None):
        self.app = app
        self.processes = processes
        self.worker_args = worker_args
        self.error: str | None = None
        self._env = dict(os.environ)
        if pythonpath:
            parts = [pythonpath, self._env.get("PYTHONPATH", "")]
            self._env["PYTHONPATH"] = os.pathsep.join(p for p in parts if p)
        self._children: dict[int, Child] = {}
        self._restart_at: dict[int, float] = {}
        self._replaced: dict[int, int] = {}
        self._start_failures = [0] * processes
        self._crashes = [0] * processes
        self._signals: list[int] = []
        self._handled = 0
        self._stopping = False
        self._status = 0
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        self._previous: dict[int, object] = {}

    def run(self) -> int:
        """Supervises until every child has stopped; returns the exit status."""
        if threading.current_thread() is not threading.main_thread():
            raise InvalidArgumentError(
                "worker processes are supervised from the main thread (it stops them on SIGINT/SIGTERM)"
            )
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._on_signal)
        try:
            logger.info(
                "supervisor (pid %d) starting %d worker process(es) for %s",
                os.getpid(),
                self.processes,
                self.app,
            )
            for slot in range(self.processes):
                self._spawn(slot)
            while self._children or (self._restart_at and not self._stopping):
                self._wait()
        finally:
            for signum, previous in self._previous.items():
                signal.signal(signum, previous)  # type: ignore[arg-type]
            for child in self._children.values():  # only after an exception
                child.proc.kill()
            self._selector.close()
            self._wake_r.close()
            self._wake_w.close()
        return self._status

    # ── children ─────────────────────────────────────────────────────────

    def _spawn(self, slot: int) -> None:
        ours, theirs = socket.socketpair()
        command = [
            sys.executable,
            "-m",
            "taskito",
            "worker",
            "--app",
            self.app,
            *self.worker_args,
            "--supervised-by",
            str(os.getpid()),
            "--status-fd",
            str(theirs.fileno()),
        ]
        try:
            # Its own process group: a terminal's Ctrl-C reaches the
            # supervisor only, which passes it on once.
            proc = subprocess.Popen(command, pass_fds=(theirs.fileno(),), process_group=0, env=self._env)
        finally:
            theirs.close()
        ours.setblocking(False)
        child = Child(slot, proc, ours)
        self._children[slot] = child
        self._selector.register(ours, selectors.EVENT_READ, child)
        replaced = self._replaced.pop(slot, None)
        if replaced is None:
            logger.info("worker process %d started", proc.pid)
        else:
            logger.info("worker process %d started, replacing %d", proc.pid, replaced)

    def _wait(self) -> None:
        timeout = LOOK_EVERY
        if self._restart_at and not self._stopping:
            timeout = min(timeout, max(0.0, min(self._restart_at.values()) - time.monotonic()))
        for key, _ in self._selector.select(timeout):
            if key.data is None:
                self._wake_r.recv(4096)
            else:
                self._read(key.data)
        self._forward_signals()
        for child in list(self._children.values()):
            if child.proc.poll() is not None:
                self._exited(child)
        if not self._stopping:
            now = time.monotonic()
            for slot, at in list(self._restart_at.items()):
                if at <= now:
                    del self._restart_at[slot]
                    self._spawn(slot)

    def _read(self, child: Child) -> None:
        try:
            data = child.link.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            # Its end closed: it exited (or is exiting).
            child.proc.wait()
            self._exited(child)
            return
        *lines, child.unread = (child.unread + data).split(b"\n")
        for line in lines:
            text = line.decode("utf-8", "replace")
            if text == "ready":
                child.ready = True
                self._start_failures[child.slot] = 0
            elif text.startswith("error "):
                child.error = text.removeprefix("error ")

    def _exited(self, child: Child) -> None:
        if self._children.get(child.slot) is not child:
            return
        del self._children[child.slot]
        self._selector.unregister(child.link)
        child.link.close()
        status = child.proc.wait()
        how = exit_description(status)
        said = f": {child.error}" if child.error else ""
        if self._stopping:
            logger.info("worker process %d exited with %s%s", child.proc.pid, how, said)
            if status != 0 and self.error is None and self._status == 0:
                self._status = 1
            return
        slot = child.slot
        if not child.ready:
            self._start_failures[slot] += 1
            failures = self._start_failures[slot]
            if status == CONFIG_ERROR or failures >= MAX_START_FAILURES:
                reason = child.error or f"it exited with {how}"
                times = "" if failures == 1 else f" ({failures} times in a row)"
                self._give_up(f"worker process {child.proc.pid} could not start{times}: {reason}", status)
                return
            delay = _backoff(failures - 1)
            logger.warning(
                "worker process %d exited with %s before it started%s; starting another in %.1fs",
                child.proc.pid,
                how,
                said,
                delay,
            )
        else:
            if time.monotonic() - child.started_at >= STEADY_AFTER:
                self._crashes[slot] = 0
            delay = _backoff(self._crashes[slot])
            self._crashes[slot] += 1
            logger.warning(
                "worker process %d exited with %s%s; its jobs run again once their lease expires; "
                "restarting it in %.1fs",
                child.proc.pid,
                how,
                said,
                delay,
            )
        self._replaced[slot] = child.proc.pid
        self._restart_at[slot] = time.monotonic() + delay

    def _give_up(self, message: str, status: int) -> None:
        self.error = f"{message}; giving up"
        self._status = CONFIG_ERROR if status == CONFIG_ERROR else 1
        logger.error("gave up: %s", message)
        self._stop_children("stop", "SIGTERM")

    # ── stopping ─────────────────────────────────────────────────────────

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only notes it: the loop forwards it, outside the handler.
        self._signals.append(signum)
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _forward_signals(self) -> None:
        while self._handled < len(self._signals):
            signum = self._signals[self._handled]
            self._handled += 1
            name = signal.Signals(signum).name
            if self._handled == 1:
                logger.info(
                    "received %s: stopping %d worker process(es) gracefully (running tasks get their "
                    "grace period); send it again to stop them now",
                    name,
                    len(self._children),
                )
                self._stop_children("stop", name)
            else:
                logger.warning("received %s again: stopping the worker processes now", name)
                self._stop_children("now", name)
                self._status = 128 + signum
                for child in self._children.values():
                    if not child.ready:  # no worker yet, no job to hand back
                        child.proc.kill()

    def _stop_children(self, how: str, name: str) -> None:
        self._stopping = True
        self._restart_at.clear()
        for child in self._children.values():
            with contextlib.suppress(OSError):  # it is exiting: its end closed
                child.link.send(f"{how} {name}\n".encode())


def _backoff(deaths_in_a_row: int) -> float:
    return float(min(FIRST_BACKOFF * 2**deaths_in_a_row, MAX_BACKOFF))


# ── the child's side ─────────────────────────────────────────────────────


class SupervisorLink:
    """A worker process's end of its supervisor's socket."""

    def __init__(self, fd: int, supervisor_pid: int) -> None:
        # Not for processes the tasks start.
        os.set_inheritable(fd, False)
        self._socket = socket.socket(fileno=fd)
        self.supervisor_pid = supervisor_pid

    def error(self, message: str) -> bool:
        """Tells the supervisor why this process exits (one line). False if
        it cannot be told (then say it on stderr)."""
        return self._send("error " + " ".join(message.split()))

    def ready(self, signals: StopSignals) -> None:
        """The worker runs: says so, and hands the supervisor's stops to ``signals``."""
        self._send("ready")
        threading.Thread(target=self._listen, args=(signals,), name="taskito-supervisor", daemon=True).start()

    def _send(self, line: str) -> bool:
        try:
            self._socket.sendall(line.encode() + b"\n")
        except OSError:
            return False
        return True

    def _listen(self, signals: StopSignals) -> None:
        unread = b""
        while True:
            try:
                data = self._socket.recv(4096)
            except OSError:
                data = b""
            if not data:
                signals.supervisor_gone(self.supervisor_pid)
                return
            *lines, unread = (unread + data).split(b"\n")
            for line in lines:
                how, _, name = line.decode().partition(" ")
                signum = getattr(signal.Signals, name, signal.SIGTERM)
                signals.forwarded(signum, at_once=how == "now")


def this_host() -> str:
    """This machine's name, as the workers registry records it."""
    try:
        with open("/proc/sys/kernel/hostname") as f:
            name = f.read().strip()
    except OSError:
        name = ""
    return name or os.environ.get("HOSTNAME") or "host"


def supervisor_of(pid: int) -> int | None:
    """The supervisor of worker process ``pid`` on this machine, from its
    command line (``--supervised-by``), if it has one."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return None
    try:
        return int(args[args.index(b"--supervised-by") + 1])
    except (ValueError, IndexError):
        return None
