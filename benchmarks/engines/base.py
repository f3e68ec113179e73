"""The interface every engine implements, and helpers for engines whose
workers run in other processes or keep their jobs in Redis."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from benchmarks import procs, pythonpath
from benchmarks.grid import REDIS_BROKER_DB, REDIS_RESULTS_DB, Cell
from benchmarks.tasks import task_of

T = TypeVar("T")
# Seconds between checks that worker processes are alive while the cell
# waits (see Adapter.check).
CHECK_EVERY = 0.5


class Unavailable(Exception):
    """The engine cannot run here: its package or its service is missing."""


class Adapter(ABC):
    """Drives one engine through a cell (see ``benchmarks.cell.measure``).

    The cell enqueues with the workers stopped, starts them, waits for
    ``finished()`` to count the backlog done, times the drain by
    ``finished_at()`` and times ``result()`` round trips. Handles are
    whatever the engine's enqueue returns.
    """

    #: False when enqueueing with the workers stopped stores nothing worth
    #: timing (the thread pool keeps a list until it starts).
    stores_jobs = True
    #: The engine's package, to say which installation ran (``build``).
    package: ModuleType

    def __init__(self, cell: Cell, workdir: Path) -> None:
        self.cell = cell
        self.workdir = workdir
        self.fn = task_of(cell.task)

    @classmethod
    def probe(cls, cell: Cell) -> None:
        """Raises Unavailable when the engine's service cannot be reached.
        (A missing package already failed the module's import.)"""
        return None

    @classmethod
    def cannot_run(cls, cell: Cell) -> str | None:
        """Why the engine cannot run this cell's task kind (an async kind
        without an event loop for tasks, a chain without a chain API), or
        None. Asked by the probe for every kind, so that the sweep skips
        those cells with the reason."""
        return None

    @classmethod
    def build(cls) -> dict[str, str]:
        """engine_path: the folder the engine's package was imported from;
        engine_build: what tells apart builds of one version, for engines
        with compiled parts ("" for the others, whose version says it)."""
        return {"engine_path": package_path(cls.package), "engine_build": ""}

    @abstractmethod
    def describe(self) -> dict[str, str]:
        """engine_version, engine_setup (how the workers run), durability and
        store_version (the database's own version)."""

    @abstractmethod
    def start_workers(self) -> None:
        """Starts ``cell.workers`` workers and returns without waiting for jobs."""

    @abstractmethod
    def stop_workers(self) -> None:
        """Stops the workers; jobs not yet run stay queued."""

    @abstractmethod
    def enqueue_one(self, arg: int) -> Any:
        """The engine's ``delay()``: one call, one job; for the ``chain``
        kind, one chain of ``tasks.CHAIN_LENGTH`` steps, whose handle's
        ``result()`` is the last step's value."""

    def enqueue_many(self, args: Sequence[int]) -> list[Any]:
        """The engine's documented way to enqueue a batch; one by one if it has none."""
        return [self.enqueue_one(arg) for arg in args]

    def steps(self, handles: list[Any]) -> list[Any]:
        """The handles of every job these handles started: themselves,
        except for chains, whose every step's handle is listed (what
        ``finished_at`` then times). Called after the workers have stopped."""
        return handles

    @abstractmethod
    def finished(self) -> int:
        """Jobs finished so far (succeeded or failed for good), by the engine's own count."""

    @abstractmethod
    def finished_at(self, handles: list[Any]) -> list[float | None]:
        """When each of these jobs finished (succeeded or failed for good),
        in Unix time, None for a job with no record. Unix time
        (``time.time()``) because it is one clock for every process on the
        machine. The engine's own timestamp where it stores one; otherwise
        taken by a hook the engine calls as each job finishes. Called once,
        after the workers have stopped."""

    @abstractmethod
    def result(self, handle: Any, timeout: float) -> Any:
        """Waits for a job's value, the way the engine's users do."""

    @abstractmethod
    def failures(self, handles: list[Any]) -> int:
        """How many of these finished jobs failed."""

    def stored_latencies(self, handles: list[Any]) -> list[float] | None:
        """Seconds from enqueue to finish per job, from the timestamps the
        engine stores; None for engines that store no such timestamps."""
        return None

    def check(self) -> None:
        """Raises if the workers died (worker processes can; threads here cannot)."""
        return None

    def close(self) -> None:
        """Releases everything; called once, also after a failure."""
        return None


def wait_checking(wait: Callable[[float], T], check: Callable[[], None], timeout: float) -> T:
    """``wait(seconds)``, an engine's blocking wait for a result that raises
    TimeoutError when the seconds run out, in slices of ``CHECK_EVERY``
    seconds with ``check()`` (``Adapter.check``) between them: a worker
    process that died fails the wait within a slice, not at ``timeout``. A
    result that comes within the first slice is waited for by one call."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return wait(max(min(CHECK_EVERY, deadline - time.monotonic()), 0.001))
        except TimeoutError:
            check()
            if time.monotonic() >= deadline:
                raise


def compiled_build(path: Path) -> str:
    """A compiled extension's file name, sha256 (first 16 hex digits) and
    mtime: what tells apart two builds of one version."""
    path = path.resolve()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="seconds")
    return f"{path.name} sha256:{digest} mtime {mtime}"


def package_path(package: ModuleType) -> str:
    assert package.__file__ is not None, f"{package.__name__} is a namespace package"
    return str(Path(package.__file__).resolve().parent)


def unix_time(moment: datetime | None) -> float | None:
    """An engine's stored datetime as Unix time. One without a time zone is
    refused: what it means would depend on this machine's zone."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise ValueError(f"stored time {moment} has no time zone")
    return moment.timestamp()


class ProcessWorkerAdapter(Adapter):
    """An engine whose workers run as separate processes started from a
    command line. Subclasses set ``argv`` (the command), ``worker_name`` (its
    logs' name) and ``processes`` (how many copies to start, default one),
    may add to ``worker_env``, and close their clients in ``close_clients``."""

    argv: list[str]
    worker_name: str
    processes = 1

    def __init__(self, cell: Cell, workdir: Path) -> None:
        super().__init__(cell, workdir)
        self.worker_env: dict[str, str] = {}
        self.workers: WorkerProcesses | None = None

    def start_workers(self) -> None:
        self.workers = WorkerProcesses(
            [self.argv] * self.processes, self.workdir, self.worker_name, self.worker_env
        )
        self.workers.start()

    def stop_workers(self) -> None:
        if self.workers is not None:
            self.workers.stop()
            self.workers = None

    def check(self) -> None:
        if self.workers is not None:
            self.workers.check()

    def close(self) -> None:
        self.stop_workers()
        self.close_clients()

    @abstractmethod
    def close_clients(self) -> None:
        """Closes the engine's connections in this process."""


class RedisWorkerAdapter(ProcessWorkerAdapter):
    """An engine on Redis whose workers run as a separate process (Celery,
    RQ, Dramatiq)."""

    def __init__(self, cell: Cell, workdir: Path) -> None:
        super().__init__(cell, workdir)
        # What an earlier cell left in Redis would be counted as finished.
        redis_flush(cell.redis_url)

    @classmethod
    def probe(cls, cell: Cell) -> None:
        redis_probe(cell.redis_url)


class WorkerProcess:
    """A worker command in its own process group, logging to a file in the
    cell's folder, which is its working directory. It imports ``benchmarks``
    from this tree (to find the task functions by name) and nothing else
    from it (see ``benchmarks.pythonpath``). ``env`` is added to this
    process's environment."""

    def __init__(self, argv: list[str], workdir: Path, name: str, env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.workdir = workdir
        self.env = env or {}
        self.name = name
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.signalled = False

    def start(self) -> None:
        env = pythonpath.environment(pythonpath.expose(self.workdir)) | self.env
        self.signalled = False
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def check(self) -> None:
        """Raises, with the end of its log, if the worker has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(
                f"worker process {self.name} exited with {self.proc.returncode} "
                f"(log {self.log}):\n{self.tail()}"
            )

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def terminate(self) -> None:
        """SIGTERM, each engine's signal for a warm shutdown, once; ``stop``
        waits. Once: a second SIGTERM is a cold shutdown to some (Dramatiq
        kills its worker processes, before they write their notes)."""
        if self.proc is not None and self.proc.poll() is None and not self.signalled:
            self.proc.send_signal(signal.SIGTERM)
            self.signalled = True

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM, then SIGKILL for whatever is left after ``grace``
        seconds, stragglers in the worker's process group included."""
        if self.proc is None:
            return
        self.terminate()
        proc, self.proc = self.proc, None
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            procs.kill_tree(proc.pid)
            proc.wait()
        procs.kill_group(proc.pid)  # its own group: started in a new session


class WorkerProcesses:
    """Several worker commands, each a ``WorkerProcess`` logging to
    ``NAME.log`` (one) or ``NAME-1.log``, ``NAME-2.log``, ... (several)."""

    def __init__(self, argvs: list[list[str]], workdir: Path, name: str, env: dict[str, str]) -> None:
        names = [name] if len(argvs) == 1 else [f"{name}-{i}" for i in range(1, len(argvs) + 1)]
        self.processes = [WorkerProcess(a, workdir, n, env) for a, n in zip(argvs, names, strict=True)]

    def start(self) -> None:
        for process in self.processes:
            process.start()

    def check(self) -> None:
        for process in self.processes:
            process.check()

    def stop(self) -> None:
        # All told first, so that they shut down side by side.
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.stop()


# ── Redis ────────────────────────────────────────────────────────────────


# Each takes the server's URL (``Cell.redis_url``, no database): worker
# processes that know nothing else build the same URLs from it.


def redis_url(server: str, db: int) -> str:
    return f"{server.rstrip('/')}/{db}"


def broker_url(server: str) -> str:
    return redis_url(server, REDIS_BROKER_DB)


def results_url(server: str) -> str:
    return redis_url(server, REDIS_RESULTS_DB)


def redis_probe(server: str) -> None:
    import redis

    client = redis.Redis.from_url(broker_url(server), socket_connect_timeout=1, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise Unavailable(f"no Redis server at {server} ({exc})") from None
    finally:
        client.close()


def redis_flush(server: str) -> None:
    """Empties the two databases the cells own, never any other."""
    import redis

    for url in (broker_url(server), results_url(server)):
        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()


def redis_describe(server: str) -> dict[str, str]:
    """The server's version and how durable its writes are."""
    import redis

    client = redis.Redis.from_url(broker_url(server))
    try:
        version = str(client.info("server")["redis_version"])
        try:
            config = client.config_get("appendonly") | client.config_get("appendfsync")
            aof = _text(config.get("appendonly", "?"))
            durability = f"appendonly={aof}" + (
                f" appendfsync={_text(config.get('appendfsync', '?'))}" if aof == "yes" else ""
            )
        except redis.ResponseError:  # CONFIG can be disabled on managed servers
            durability = "unknown"
    finally:
        client.close()
    return {"store_version": f"redis {version}", "durability": durability}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
