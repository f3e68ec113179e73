"""The ``taskito`` command: ``taskito worker --app module:queue`` and ``taskito info``."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from taskito import __version__
from taskito.app import Queue


class AppError(Exception):
    """``--app`` does not name a Queue."""


def load_app(spec: str) -> Queue:
    """Imports ``module:attribute`` (attribute may be dotted) and returns the Queue it names."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise AppError(
            f"--app must look like 'module:attribute' (for example 'myapp.tasks:queue'), got {spec!r}"
        )
    # Like `python -m`, make modules in the current folder importable.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: object = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise AppError(
                f"cannot import {module_name!r}: no such module (run from the folder that contains it?)"
            ) from exc
        raise AppError(f"importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:
        raise AppError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise AppError(f"{module_name!r} has no attribute {attribute!r}") from None
    if not isinstance(target, Queue):
        raise AppError(f"{spec!r} is a {type(target).__name__}, not a taskito.Queue")
    return target


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
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help="logging level (default: INFO)",
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
    try:
        queue = load_app(args.app)
    except AppError as exc:
        parser.error(str(exc))
    if args.db_url:
        # The app's tasks, run and read on the given database.
        target = on_database(queue, args.db_url)
        try:
            with queue.redirect(target):
                return _run(parser, args, queue)
        finally:
            target.close()
    return _run(parser, args, queue)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace, queue: Queue) -> int:
    if args.command == "worker":
        logging.basicConfig(
            level=args.log_level,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        queues = [q.strip() for q in args.queues.split(",") if q.strip()] if args.queues else None
        if args.workers is not None and args.workers < 1:
            parser.error("--workers must be at least 1")
        if args.prefetch is not None and args.prefetch < 0:
            parser.error("--prefetch must be 0 or more")
        workers = args.workers if args.workers is not None else queue.worker_threads
        logging.getLogger("taskito").info(
            "worker starting: %s, %d thread(s), queues: %s, %d task(s) registered",
            queue.db_path,
            workers,
            ", ".join(queues) if queues else "all",
            len(queue.tasks),
        )
        queue.run_worker(queues, workers=workers, prefetch=args.prefetch)
        return 0

    info: dict[str, Any] = {
        "version": __version__,
        "db_path": queue.db_path,
        "workers": queue.worker_threads,
        "tasks": sorted(queue.tasks),
        "stats": queue.stats(),
        "live_workers": queue.workers(),
        "unserved_tasks": queue.unserved_tasks(),
    }
    if args.json:
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
        for w in info["live_workers"]:
            served = ", ".join(w["queues"]) if w["queues"] is not None else "all queues"
            print(
                f"  {w['id']}  pid {w['pid']} on {w['host']}, {w['threads']} thread(s), {served}, "
                f"{len(w['tasks'])} task(s)"
            )
        if info["unserved_tasks"]:
            print("jobs waiting for a worker that has their task:")
            for name, n in info["unserved_tasks"].items():
                print(f"  {name:<30} {n} job(s): no live worker has this task")
    return 0


if __name__ == "__main__":
    sys.exit(main())
