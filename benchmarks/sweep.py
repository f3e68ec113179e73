"""Runs a grid of cells, each in a fresh subprocess, and writes one CSV row
per cell and repetition as it goes."""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from benchmarks import procs, provenance, pythonpath
from benchmarks.cell import MARK
from benchmarks.engines import ENGINES, TREE_ENGINE
from benchmarks.grid import DB_MODES, DEFAULT_REDIS_URL, Cell, adapter_of, placement_conflict
from benchmarks.pg import DEFAULT_PG_URL, SCHEMAS_FILE
from benchmarks.schema import COLUMNS
from benchmarks.tasks import is_async

ROOT = Path(__file__).resolve().parent.parent
PROBE_TIMEOUT = 60.0
BUILD = ("engine_path", "engine_build")  # what Adapter.build() says


class CellInterrupted(KeyboardInterrupt):
    """Ctrl-C while a cell ran, raised once the cell and every process it
    started are killed and its PostgreSQL schemas dropped: ``note`` says
    which were, or could not be ("" when it had none)."""

    def __init__(self, note: str) -> None:
        super().__init__(note)
        self.note = note


class Stopped(Exception):
    """The sweep was stopped by Ctrl-C: ``done`` of ``total`` cells finished
    and have their rows in ``out``; None before the first cell started,
    when nothing was written."""

    def __init__(self, out: Path, done: int | None, total: int) -> None:
        self.out, self.done, self.total = out, done, total
        if done is None:
            text = "stopped by Ctrl-C before the first cell: nothing written"
        elif done == 0:
            text = f"stopped by Ctrl-C before any cell finished: {out} has only the header"
        else:
            text = f"stopped by Ctrl-C: {done} of {total} cells finished; their rows are in {out}"
        super().__init__(text)


@contextlib.contextmanager
def first_ctrl_c_only() -> Iterator[None]:
    """Within: the first SIGINT raises KeyboardInterrupt as usual, and later
    ones are ignored, so that a second Ctrl-C cannot cut short the clean-up
    the first began (killing the cell and its workers, dropping its
    schemas: seconds at most). The handler before is put back on leaving.
    Main thread only, as every signal handler."""

    def stop(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


@dataclass
class Plan:
    engines: list[str]
    dbs: list[str]
    workers: list[int]
    tasks: list[str]
    jobs: int
    repeat: int
    samples: int
    warmup: int
    cell_timeout: float
    out: Path
    pythons: dict[str, str] = field(default_factory=dict)  # engine -> interpreter
    redis_url: str = DEFAULT_REDIS_URL
    workdir: Path | None = None
    command: str = ""
    placements: list[str] = field(default_factory=lambda: ["thread"])
    processes: list[int] = field(default_factory=lambda: [1])
    idle_samples: int = 0
    idle_gap: float = 0.5
    pg_url: str = DEFAULT_PG_URL
    async_concurrency: int = 1000

    def python(self, engine: str) -> str:
        return self.pythons.get(engine, sys.executable)

    def placed(self, engine: str) -> list[tuple[str, int]]:
        """(placement, processes) for an engine's cells: each placement asked
        for that it has, with each count of processes; an engine with one
        placement runs in it whatever was asked (peers keep theirs)."""
        placements = ENGINES[adapter_of(engine)].placements
        asked = list(placements) if len(placements) == 1 else [p for p in self.placements if p in placements]
        placed: list[tuple[str, int]] = []
        for placement in asked:
            if placement == "thread":
                placed.append(("thread", 0))
            else:
                placed += [(placement, count) for count in self.processes]
        return placed

    def cells(self) -> list[Cell]:
        """Repetitions outermost: noise from other work on the machine then
        spreads over every cell instead of spoiling all runs of one. Each
        cell is what runs (``shape``): two asked for that run the same
        (Celery's 1 process of 2 workers and 2 processes of 1) are one."""
        cells = [
            Cell(
                engine,
                db,
                workers,
                task,
                self.jobs,
                rep,
                self.samples,
                self.warmup,
                self.redis_url,
                placement=placement,
                processes=processes,
                idle_samples=self.idle_samples,
                idle_gap=self.idle_gap,
                pg_url=self.pg_url,
                async_concurrency=self.async_concurrency if is_async(task) else 0,
            )
            for rep in range(1, self.repeat + 1)
            for engine in self.engines
            for db in self.dbs
            if db in ENGINES[adapter_of(engine)].modes
            for placement, asked_processes in self.placed(engine)
            for task in self.tasks
            for w in self.workers
            for processes, workers in [shape(engine, placement, asked_processes, w)]
        ]
        return list(dict.fromkeys(cells))

    def unsupported(self) -> list[str]:
        """A line for each engine that runs in none of the modes asked for."""
        notes = []
        for engine in self.engines:
            modes = ENGINES[adapter_of(engine)].modes
            if not set(modes) & set(self.dbs):
                notes.append(
                    f"{engine}: no cells: it runs on {', '.join(modes)}, not on --db {','.join(self.dbs)}"
                )
        return notes


def shape(engine: str, placement: str, processes: int, workers: int) -> tuple[int, int]:
    """(processes, workers) that an engine runs for ``processes`` worker
    processes of ``workers`` workers each (see engines.POOLS): the same
    for threads, N x T processes of one task each for a pool of processes,
    and no worker threads beside an event loop."""
    pool = ENGINES[adapter_of(engine)].pool
    if placement != "process" or pool == "threads":
        return processes, workers
    if pool == "processes":
        return processes * workers, 1
    return processes, 1


def run_cell(cell: Cell, python: str, timeout: float, workdir: Path | None = None) -> dict[str, Any]:
    """Runs one cell in a fresh process; kills it after ``timeout`` seconds.
    Either way, kills everything it started that is still running: workers
    a crashed cell never stopped would disturb the next cells; and drops the
    PostgreSQL schemas it did not (see ``engines.pgcell``). Returns the
    row's status, error, cell_seconds and, when it finished, what it
    measured.

    Workers start their own sessions, out of reach of the cell's process
    group, and outlive a cell that dies without stopping them; this process
    becomes their subreaper so that they stay its descendants and can be
    found. Their output goes to files, not pipes: a worker holding the
    cell's stdout open would keep a pipe reader waiting until it exited.

    The cell runs in its folder and imports only ``benchmarks`` from this
    tree (see ``benchmarks.pythonpath``): its engine is the one ``python``
    has installed.

    Ctrl-C (KeyboardInterrupt), wherever it finds the cell, kills the same
    and drops the same schemas, then raises ``CellInterrupted``."""
    procs.become_subreaper()
    before = set(procs.descendants(os.getpid()))
    folder = Path(tempfile.mkdtemp(prefix=f"bench-{cell.adapter}-", dir=workdir))
    try:
        with _redis_to_itself(cell):
            row = _run_in(folder, cell, python, timeout, before)
        # A cell that died before dropping its PostgreSQL schemas left them
        # listed in its folder: dropped now, and said before the row's error.
        note = _drop_left_schemas(folder, cell, python)
    except KeyboardInterrupt:
        # Ctrl-C of the sweep, wherever it found the cell (starting,
        # running, being cleaned up): what it started goes, and the
        # schemas it made, as for a cell that died.
        procs.kill_descendants_except(before)
        raise CellInterrupted(_drop_left_schemas(folder, cell, python).strip()) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {**row, "error": note + row["error"]} if note else row


@contextlib.contextmanager
def _redis_to_itself(cell: Cell, blocking: bool = True) -> Iterator[None]:
    """Holds the cell's Redis databases for as long as it runs, when it uses
    Redis. Every Redis cell flushes and fills the same two databases of its
    server: two sweeps on one machine (two checkouts, or tests under xdist)
    would empty each other's queues mid-cell, so their Redis cells take
    turns, by a lock file named after the server. Not ``blocking``: raises
    BlockingIOError if another cell holds it."""
    if DB_MODES[cell.db].backend != "redis":
        yield
        return
    server = hashlib.sha256(cell.redis_url.encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"taskito-bench-redis-{server}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield


def _run_in(folder: Path, cell: Cell, python: str, timeout: float, before: set[int]) -> dict[str, Any]:
    out, err = folder / "cell.stdout", folder / "cell.stderr"
    boot = pythonpath.boot(pythonpath.expose(folder), "benchmarks.cell")
    start = time.perf_counter()
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(
            [python, "-c", boot, "run", cell.to_json(), str(folder)],
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        _wait(proc, timeout)
    except subprocess.TimeoutExpired:
        return {
            "status": "timeout",
            "error": _worker_logs(folder) + f"killed after {timeout:g}s",
            "cell_seconds": time.perf_counter() - start,
        }
    finally:
        procs.kill_descendants_except(before)
    seconds = time.perf_counter() - start
    output, errors = out.read_text(errors="replace"), err.read_text(errors="replace")
    result = _parse(output)
    if proc.returncode != 0 or result is None:
        error = _worker_logs(folder) + _tail(errors or output)
        return {"status": "error", "error": error, "cell_seconds": seconds}
    return {"status": "ok", "error": "", "cell_seconds": seconds, **result}


def _drop_left_schemas(folder: Path, cell: Cell, python: str) -> str:
    """Drops the schemas the cell listed in its folder and did not drop (it
    was killed, or failed before it could), under the cell's interpreter,
    whose PostgreSQL driver made them; "" if there were none, else a line
    that says which were dropped, or could not be."""
    listed = folder / SCHEMAS_FILE
    if not listed.exists():
        return ""
    names = ", ".join(listed.read_text().split())
    boot = pythonpath.boot(pythonpath.expose(folder), "benchmarks.cell")
    try:
        proc = subprocess.run(
            [python, "-c", boot, "cleanup", cell.to_json(), str(folder)],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return f"could not drop the schemas the cell left ({names}): no answer within {PROBE_TIMEOUT:g}s\n"
    if _parse(proc.stdout) is None:
        return f"could not drop the schemas the cell left ({names}): {_tail(proc.stderr or proc.stdout, 1)}\n"
    return f"dropped the schemas the cell left: {names}\n"


def _worker_logs(folder: Path, lines: int = 5) -> str:
    """The end of each worker process's log (``NAME.log``) in a cell's
    folder, which goes with the cell: for the error of a cell that did not
    finish, before the error's own last line, which tables show."""
    parts = []
    for log in sorted(folder.glob("*.log")):
        text = _tail(log.read_text(errors="replace"), lines)
        if text:
            parts.append(f"[{log.name}]\n{text}\n")
    return "".join(parts)


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> None:
    try:
        proc.wait(timeout)
    except BaseException:  # the time limit, or Ctrl+C in the sweep
        procs.kill_tree(proc.pid)  # the cell and its workers, before it is waited for
        proc.wait()
        raise


def probe(cell: Cell, python: str) -> dict[str, Any]:
    """Whether the cell's engine can run: {"available": bool, "reason": str},
    and which interpreter and engine build would run it. Run as the cell
    is, in a folder of its own, so that it finds the same engine."""
    try:
        with tempfile.TemporaryDirectory(prefix="bench-probe-") as folder:
            boot = pythonpath.boot(pythonpath.expose(Path(folder)), "benchmarks.cell")
            proc = subprocess.run(
                [python, "-c", boot, "probe", cell.to_json()],
                cwd=folder,
                capture_output=True,
                text=True,
                timeout=PROBE_TIMEOUT,
                stdin=subprocess.DEVNULL,
            )
    except OSError as exc:
        return {"available": False, "reason": f"cannot run {python}: {exc}"}
    except subprocess.TimeoutExpired:
        return {"available": False, "reason": f"probe did not answer within {PROBE_TIMEOUT:g}s"}
    result = _parse(proc.stdout)
    if result is None:
        return {"available": False, "reason": f"probe failed: {_tail(proc.stderr or proc.stdout)}"}
    return result


def _parse(out: str) -> dict[str, Any] | None:
    for line in reversed(out.splitlines()):
        if line.startswith(MARK):
            parsed: dict[str, Any] = json.loads(line[len(MARK) :])
            return parsed
    return None


def _tail(text: str, lines: int = 8) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _cell_text(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


class Progress:
    """One line per cell with an estimate of the time left, from the mean
    duration so far of the same engine's cells (engines differ tenfold)."""

    def __init__(self, cells: list[Cell], write: Callable[[str], None]) -> None:
        self.cells = cells
        self.write = write
        self.durations: dict[str, list[float]] = {}

    def done(self, index: int, row: dict[str, Any]) -> None:
        cell = self.cells[index]
        self.durations.setdefault(cell.engine, []).append(float(row["cell_seconds"]))
        every = [d for ds in self.durations.values() for d in ds]
        overall = sum(every) / len(every)
        eta = 0.0
        for later in self.cells[index + 1 :]:
            own = self.durations.get(later.engine)
            eta += sum(own) / len(own) if own else overall
        if row["status"] == "ok":
            rate = row["drain_per_s"]  # None when every job finished at one recorded instant
            detail = "drain          -" if rate is None else f"drain {float(rate):>10,.0f}/s"
        elif row["status"] == "skipped" or not row["error"]:
            detail = ""  # the reason was written once, before the first cell
        else:
            detail = row["error"].splitlines()[-1][:60]
        width = len(str(len(self.cells)))
        self.write(
            f"[{index + 1:>{width}}/{len(self.cells)}] {cell.label():<48} rep {cell.repetition} "
            f"{row['status']:<7} {row['cell_seconds']:5.1f}s  {detail}  ETA {_duration(eta)}"
        )


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def run(plan: Plan, write: Callable[[str], None] = print) -> Path:
    """Runs the plan, writing rows to ``plan.out`` as cells finish.

    Ctrl-C (KeyboardInterrupt) stops it: the cell under way is killed with
    its workers and its PostgreSQL schemas are dropped (``run_cell``), the
    rows written stay, and ``Stopped`` says how many and where."""
    cells = plan.cells()
    for note in plan.unsupported():
        write(note)
    try:
        static = {
            "sweep_id": _now(),
            "command": plan.command,
            **provenance.commit_info(ROOT),
            **provenance.machine_info(),
        }
        available = _probe_engines(plan, cells, write)
        plan.out.parent.mkdir(parents=True, exist_ok=True)
        progress = Progress(cells, write)
        write(f"{len(cells)} cells, writing {plan.out}")
    except KeyboardInterrupt:
        raise Stopped(plan.out, None, len(cells)) from None
    try:
        with plan.out.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(COLUMNS))
            writer.writeheader()
            for index, cell in enumerate(cells):
                row = _row(plan, cell, static, available[cell.engine, DB_MODES[cell.db].backend])
                writer.writerow({k: _cell_text(v) for k, v in row.items()})
                f.flush()
                progress.done(index, row)
    except KeyboardInterrupt as stop:
        if isinstance(stop, CellInterrupted) and stop.note:
            write(stop.note)
        # Counted in the file: a row is written by one call that Ctrl-C
        # cannot split, so the file has whole rows, each a cell that
        # finished, even when Ctrl-C came between its write and the next line.
        raise Stopped(plan.out, _rows_in(plan.out), len(cells)) from None
    return plan.out


def _rows_in(path: Path) -> int:
    try:
        with path.open(newline="") as f:
            return sum(1 for _ in csv.DictReader(f))
    except FileNotFoundError:
        return 0


def _probe_engines(
    plan: Plan, cells: list[Cell], write: Callable[[str], None]
) -> dict[tuple[str, str], dict[str, Any]]:
    """Whether each engine can run on each backend, said of those that cannot."""
    # One probe per engine and backend: an engine's PostgreSQL cells can be
    # unavailable (no server, no driver) where its SQLite ones run.
    available: dict[tuple[str, str], dict[str, Any]] = {}
    for engine in plan.engines:
        backends = list(dict.fromkeys(DB_MODES[c.db].backend for c in cells if c.engine == engine))
        for backend in backends:
            first = next(c for c in cells if c.engine == engine and DB_MODES[c.db].backend == backend)
            needs = ENGINES[adapter_of(engine)].needs_python
            if needs and engine not in plan.pythons:
                found = {"available": False, "reason": f"no --python {engine}=...: {needs}"}
            else:
                found = probe(first, plan.python(engine))
            available[engine, backend] = found
            if not found["available"]:
                which = engine if len(backends) == 1 else f"{engine} on {backend}"
                write(f"{which}: skipped: {found['reason']}")
    for reason in dict.fromkeys(r for c in cells if (r := placement_conflict(c)) is not None):
        write(f"cells with placement=process skipped: {reason}")
    for engine, backend in available:
        asked = dict.fromkeys(
            c.task for c in cells if c.engine == engine and DB_MODES[c.db].backend == backend
        )
        for task, reason in available[engine, backend].get("skipped_tasks", {}).items():
            if task in asked:
                write(f"{engine} {task}: skipped: {reason}")
    return available


def _row(plan: Plan, cell: Cell, static: dict[str, Any], probe: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {
        **static,
        "timestamp": _now(),
        "load_avg_1m": provenance.load_avg(),
        "engine": cell.engine,
        "db": cell.db,
        "backend": DB_MODES[cell.db].backend,
        "placement": cell.placement,
        "processes": cell.processes,
        "workers": cell.workers,
        "task": cell.task,
        "jobs": cell.jobs,
        "repetition": cell.repetition,
        "samples": cell.samples,
        "idle_samples": cell.idle_samples,
        "idle_gap_s": cell.idle_gap,
        "warmup": cell.warmup,
    }
    # The interpreter and engine build, as the probe saw them, also for
    # cells that die early; a cell that runs says it again from inside.
    row.update({k: v for k, v in probe.items() if k.startswith("python_") or k in BUILD})
    row["async_concurrency"] = cell.async_concurrency or None
    conflict = placement_conflict(cell) or probe.get("skipped_tasks", {}).get(cell.task)
    if not probe["available"]:
        row.update({"status": "skipped", "error": probe["reason"], "cell_seconds": 0.0})
    elif conflict is not None:
        row.update({"status": "skipped", "error": conflict, "cell_seconds": 0.0})
    else:
        row.update(run_cell(cell, plan.python(cell.engine), plan.cell_timeout, plan.workdir))
    if cell.adapter == TREE_ENGINE and not provenance.vouches_for(ROOT, row.get("engine_path")):
        # A taskito installed elsewhere (--python): this tree's commit says
        # nothing about it; engine_path and engine_build do.
        row.update({"git_commit": "", "git_branch": "", "git_dirty": ""})
    return row
