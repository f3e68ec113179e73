"""The ``taskito`` command: ``taskito worker --app module:queue`` and ``taskito info``."""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from taskito import __version__, _logging, _supervisor
from taskito._app_loader import AppError, load_app
from taskito._supervisor import SupervisorLink
from taskito.app import Queue
from taskito.exceptions import TaskitoError

__all__ = ["AppError", "load_app", "main"]

logger = logging.getLogger("taskito.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taskito", description="taskito task queue")
    parser.add_argument("--version", action="version", version=f"taskito {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    worker = commands.add_parser("worker", help="run a worker until SIGINT or SIGTERM")
    worker.add_argument("--app", required=True, help="the Queue to serve, as module:attribute")
    worker.add_argument("--queues", help="comma-separated queue names to serve (default: all)")
    worker.add_argument("--workers", type=int, help="tasks to run at once (default: the Queue's workers)")
    worker.add_argument(
        "--prefetch",
        type=int,
        help="jobs to hold beyond those idle threads start (default: the Queue's prefetch; "
        "0: only what idle threads start)",
    )
    worker.add_argument(
        "--async-concurrency",
        type=int,
        help="coroutine tasks (async def) to run at once on the worker's event loop "
        "(default: the Queue's async_concurrency, 100)",
    )
    worker.add_argument(
        "--processes",
        help="run N worker processes of --workers threads each, under this one as their "
        "supervisor ('auto': one per CPU); default: this process is the worker",
    )
    # Given by a supervisor to the worker processes it starts (see _supervisor).
    worker.add_argument("--supervised-by", type=int, help=argparse.SUPPRESS)
    worker.add_argument("--status-fd", type=int, help=argparse.SUPPRESS)
    worker.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help="logging level (default: INFO)",
    )
    worker.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="text lines, or one JSON object per line (default: text)",
    )

    info = commands.add_parser("info", help="print the Queue's tasks and job counts")
    info.add_argument("--app", required=True, help="the Queue to inspect, as module:attribute")
    info.add_argument("--json", action="store_true", help="print JSON")
    for command in (worker, info):
        command.add_argument(
            "--db-url",
            help="serve (or inspect) this PostgreSQL database instead of the Queue's own "
            "(postgresql://user:password@host:port/database; the Queue's schema and other "
            "settings stay)",
        )
    return parser


def on_database(queue: Queue, db_url: str) -> Queue:
    """A Queue like ``queue`` (settings, serializer) on the PostgreSQL
    database ``db_url``, for ``queue.redirect``."""
    settings = {**queue.settings, "backend": "postgres", "db_url": db_url}
    return Queue(**settings)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    link = None
    if args.command == "worker":
        if args.workers is not None and args.workers < 1:
            parser.error("--workers must be at least 1")
        if args.prefetch is not None and args.prefetch < 0:
            parser.error("--prefetch must be 0 or more")
        if args.async_concurrency is not None and args.async_concurrency < 1:
            parser.error("--async-concurrency must be at least 1")
        processes = None
        if args.processes is not None:
            try:
                processes = _supervisor.process_count(args.processes)
            except ValueError:
                parser.error(f"--processes must be a positive number or 'auto', got {args.processes!r}")
        # Before the import, so that what the app logs meanwhile is formatted too.
        _logging.configure(args.log_level, args.log_format)
        if processes is not None:
            return _supervise(args, processes)
        if args.status_fd is not None and args.supervised_by is not None:
            link = SupervisorLink(args.status_fd, args.supervised_by)
    try:
        queue = load_app(args.app)
    except AppError as exc:
        _fail(str(exc), status=2, link=link)
    try:
        if not args.db_url:
            return _command(queue, args, link)
        # The app's tasks, run and read on the given database.
        target = on_database(queue, args.db_url)
        try:
            with queue.redirect(target):
                return _command(queue, args, link)
        finally:
            target.close()
    except TaskitoError as exc:
        _fail(f"{type(exc).__name__}: {exc}", status=1, link=link)


def _command(queue: Queue, args: argparse.Namespace, link: SupervisorLink | None) -> int:
    if args.command == "worker":
        return _worker(queue, args, link)
    return _info(queue, as_json=args.json)


def _fail(message: str, *, status: int, link: SupervisorLink | None = None) -> NoReturn:
    """One line on stderr, no traceback: what went wrong is the user's to fix.
    A worker process under a supervisor tells the supervisor instead, which
    shows it."""
    if link is None or not link.error(message):
        print(f"taskito: error: {message}", file=sys.stderr)
    sys.exit(status)


def _supervise(args: argparse.Namespace, processes: int) -> int:
    """``--processes N``: this process supervises N worker processes, each
    started with the options given here."""
    worker_args = ["--log-level", args.log_level, "--log-format", args.log_format]
    for flag, value in (
        ("--queues", args.queues),
        ("--workers", args.workers),
        ("--prefetch", args.prefetch),
        ("--async-concurrency", args.async_concurrency),
    ):
        if value is not None:
            worker_args += [flag, str(value)]
    supervisor = _supervisor.Supervisor(args.app, processes, worker_args)
    status = supervisor.run()
    if supervisor.error is not None:
        print(f"taskito: error: {supervisor.error}", file=sys.stderr)
    return status


def _worker(queue: Queue, args: argparse.Namespace, link: SupervisorLink | None) -> int:
    queues = [q.strip() for q in args.queues.split(",") if q.strip()] if args.queues else None
    workers = args.workers if args.workers is not None else queue.worker_threads
    if link is not None and queue.db_path == ":memory:":
        _fail(f"{args.app}: {_supervisor.MEMORY_REFUSED}", status=2, link=link)
    logger.info(
        "worker starting: database %s, %d thread(s), queues: %s, %d task(s) registered",
        _database(queue),
        workers,
        ", ".join(queues) if queues else "all",
        len(queue.tasks),
    )
    if not queue.tasks:
        logger.warning(
            "no task is registered on %s: this worker runs only jobs of its own tasks, so it will "
            "run nothing; does --app name the module that defines the tasks (or imports them)?",
            args.app,
        )
    if queue.db_path == ":memory:":
        logger.warning(
            "%s is on :memory:, a database private to this process: no other process can "
            "enqueue jobs for this worker; give the Queue a file path",
            args.app,
        )
    queue._run_in_foreground(
        queues,
        workers,
        args.prefetch,
        args.async_concurrency,
        on_started=None if link is None else link.ready,
    )
    logger.info("worker stopped")
    return 0


def _database(queue: Queue) -> str:
    """The database's absolute path, and the relative one it was given as."""
    relative = queue._relative_db_path
    if relative is None:
        return queue.db_path
    given, folder = relative
    return f"{queue.db_path} (relative path {given} resolved against {folder})"


def _info(queue: Queue, *, as_json: bool) -> int:
    info: dict[str, Any] = {
        "version": __version__,
        "db_path": queue.db_path,
        "workers": queue.worker_threads,
        "tasks": sorted(queue.tasks),
        "stats": queue.stats(),
        "live_workers": _with_supervisors(queue.workers()),
        "unserved_tasks": queue.unserved_tasks(),
        "periodic": queue.periodic_tasks(),
    }
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        print(f"taskito {info['version']}  database: {info['db_path']}  workers: {info['workers']}")
        print("tasks:")
        for name in info["tasks"]:
            print(f"  {name}")
        print("jobs:")
        for status, n in info["stats"].items():
            print(f"  {status:<10} {n}")
        print(f"worker processes serving the database: {len(info['live_workers'])}")
        _print_workers(info["live_workers"])
        if info["unserved_tasks"]:
            print("jobs waiting for a worker that has their task:")
            for name, n in info["unserved_tasks"].items():
                hint = (
                    " (enqueued by a script without a file: pass name=)"
                    if name.startswith("__main__.")
                    else ""
                )
                print(f"  {name:<30} {n} job(s): no live worker has this task{hint}")
        if info["periodic"]:
            print("periodic tasks:")
            for row in info["periodic"]:
                print(f"  {_schedule_line(row)}")
    return 0


def _schedule_line(row: dict[str, Any]) -> str:
    """One schedule: its name, pattern and zone, and when it runs next."""
    next_run = row["next_run"]
    when = (
        "never" if next_run is None else datetime.datetime.fromtimestamp(next_run, datetime.UTC).isoformat()
    )
    stored = "" if row["registered"] else " (no worker has recorded it yet)"
    return f"{row['name']:<30} {row['cron']} ({row['timezone']}), next run {when}{stored}"


def _with_supervisors(workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each worker with ``supervisor``: the pid of the ``--processes``
    supervisor that started it, for worker processes on this machine
    (None otherwise)."""
    here = _supervisor.this_host()
    return [
        {**w, "supervisor": _supervisor.supervisor_of(w["pid"]) if w["host"] == here else None}
        for w in workers
    ]


def _print_workers(workers: list[dict[str, Any]]) -> None:
    """One line per worker; those of one supervisor under it."""
    groups: dict[int | None, list[dict[str, Any]]] = {}
    for w in workers:
        groups.setdefault(w["supervisor"], []).append(w)
    for supervisor, members in groups.items():
        indent = "  "
        if supervisor is not None:
            print(f"  supervisor pid {supervisor}: {len(members)} worker process(es)")
            indent = "    "
        for w in members:
            served = ", ".join(w["queues"]) if w["queues"] is not None else "all queues"
            print(
                f"{indent}{w['id']}  pid {w['pid']} on {w['host']}, {w['threads']} thread(s), {served}, "
                f"{len(w['tasks'])} task(s)"
            )


if __name__ == "__main__":
    sys.exit(main())
