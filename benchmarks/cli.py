"""``python -m benchmarks``: how fast is a task queue on this machine, in which
mode, against what one would use instead, and did a change make it slower.

    python -m benchmarks                      the default sweep (sweep's defaults)
    python -m benchmarks sweep [options]      any grid; CSV under results/
    python -m benchmarks compare A.csv [B.csv] [--plot out.png]
    python -m benchmarks report               results/README.md from the reference runs

Ctrl-C stops a sweep: the cell under way is killed with its workers (and
its PostgreSQL schemas dropped), the rows of the cells that finished stay in
the CSV, and the exit status is 130.

On PostgreSQL (--db postgres, server --pg-url): taskito's Queue(backend=
"postgres") beside procrastinate and pgqueuer, each cell in a schema of its
own that it drops when it ends (the sweep drops those of cells it killed).
The default sweep adds postgres to its DB modes only when a server answers
at --pg-url, so it still runs where there is none. The peers each run one
worker process of their own; neither stores results, so a round trip ends
when procrastinate's job status (polled) or pgqueuer's completion waiter
says the job is done. Rows record the server's version, fsync and
synchronous_commit. Tests: TASKITO_TEST_POSTGRES_URL=postgresql://... pytest
tests/bench/test_postgres.py (with the bench extra installed).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import pg, report
from benchmarks.argtypes import comma_list, finite_number, seconds, whole_number, whole_numbers
from benchmarks.engines import ENGINES
from benchmarks.grid import DB_MODES, DEFAULT_REDIS_URL, PLACEMENTS, adapter_of
from benchmarks.schema import METRICS
from benchmarks.sweep import Plan, Stopped, first_ctrl_c_only
from benchmarks.sweep import run as run_sweep
from benchmarks.tasks import CHAIN_LENGTH, KINDS

# The default sweep: about two minutes on 2 cores with every peer available,
# plus the round trips of taskito's process cells: 110 a cell, ~50 ms each
# while a waiter in another process than the workers polls for results.
# The embedded SQLite default (file) and memory, plus Redis for the peers
# that need a server; as many workers as CPUs, taskito's default. taskito's
# workers both as `taskito worker` processes, placed as the peers' are, and
# as threads of the measuring process, the figure tracked so far. The peers'
# worker processes take seconds to start and stop, and RQ forks a process
# per job: they set the pace, and the job count. No round trips after idle
# gaps (half a second each): --idle-samples 20 adds them. PostgreSQL joins
# the DB modes when a server answers at --pg-url (see with_postgres), so
# that the sweep still runs where there is none.
DEFAULTS = {
    # The async-only peers run async_sleep alone: --engines names them.
    "engines": ",".join(name for name, info in ENGINES.items() if info.pool != "event loop"),
    "db": "memory,file,redis",
    "placement": "thread,process",
    "processes": "1",
    "workers": str(os.cpu_count() or 1),
    "tasks": "noop",
    "jobs": 1000,
    "repeat": 3,
    "samples": 100,
    "idle_samples": 0,
    "idle_gap": 0.5,
    "warmup": 100,
    "cell_timeout": 120.0,
    "async_concurrency": 1000,
}
SUBCOMMANDS = ("sweep", "compare", "report")


def engine_list(text: str) -> list[str]:
    """Engine names, each optionally NAME@LABEL to run a second copy (under --python)."""
    engines = comma_list()(text)
    for engine in engines:
        name, _, label = engine.partition("@")
        if name not in ENGINES:
            raise argparse.ArgumentTypeError(f"unknown engine {name!r} (choose from {', '.join(ENGINES)})")
        if "@" in engine and not label.replace("-", "").replace(".", "").replace("_", "").isalnum():
            raise argparse.ArgumentTypeError(f"{engine!r}: the label after @ must be letters, digits, . _ -")
    return engines


def python_option(text: str) -> tuple[str, str]:
    engine, sep, path = text.partition("=")
    if not sep or not engine or not path:
        raise argparse.ArgumentTypeError(f"expected ENGINE=/path/to/python, got {text!r}")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise argparse.ArgumentTypeError(f"{path} is not an executable file")
    return engine, path


def redis_option(text: str) -> str:
    if not text.startswith(("redis://", "rediss://", "unix://")):
        raise argparse.ArgumentTypeError(f"expected redis://HOST:PORT, got {text!r}")
    rest = text.split("://", 1)[1]
    if "/" in rest.rstrip("/") and not text.startswith("unix://"):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give the server only; cells use (and flush) databases 15 and 14"
        )
    return text.rstrip("/")


def pg_url_option(text: str) -> str:
    problem = pg.check_url(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


class ExplicitList(argparse.Action):
    """Stores the list and notes that it was given (``NAME_given``): the
    default DB modes grow where a server answers, a list given does not."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_given", True)


def with_postgres(args: argparse.Namespace) -> str | None:
    """The default DB modes plus ``postgres`` when a PostgreSQL server answers
    at ``--pg-url`` (``pg.answers``): the default sweep measures the
    PostgreSQL engines where there is a server, and still runs where there
    is none. A --db given is left as it is. Returns a line saying what was
    decided, or None when --db was given."""
    if getattr(args, "db_given", False):
        return None
    where = pg.redact(args.pg_url)
    if pg.answers(args.pg_url):
        args.db = [*args.db, "postgres"]
        return f"a PostgreSQL server answers at {where}: postgres added to the DB modes"
    return f"no PostgreSQL server answers at {where}: postgres left out of the DB modes (--pg-url)"


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Options of each command: python -m benchmarks COMMAND --help",
    )
    sub = top.add_subparsers(dest="command", metavar="{sweep,compare,report}")

    sweep = sub.add_parser(
        "sweep",
        help="run a grid of cells (the default command)",
        description="Runs every engine x DB mode x placement x task x workers cell, --repeat "
        "times, each in a fresh process, and writes one CSV row per run.",
    )
    sweep.add_argument(
        "--engines",
        type=engine_list,
        default=DEFAULTS["engines"],
        metavar="LIST",
        help=f"engines to run: {', '.join(ENGINES)}; NAME@LABEL runs another copy "
        "(give it --python). Default: all but the async-only ones, which run only async kinds "
        "(unavailable ones are skipped)",
    )
    sweep.add_argument(
        "--db",
        type=comma_list(list(DB_MODES)),
        action=ExplicitList,
        default=DEFAULTS["db"],
        metavar="LIST",
        help=f"database modes: {', '.join(DB_MODES)}. Each engine runs in the ones "
        "it supports (default: %(default)s, and postgres when a PostgreSQL server answers "
        "at --pg-url)",
    )
    sweep.add_argument(
        "--placement",
        type=comma_list(list(PLACEMENTS)),
        default=DEFAULTS["placement"],
        metavar="LIST",
        help="where the workers of engines that can run either way (taskito, taskito-ref) run: "
        "thread (threads of the measuring process) or process (`taskito worker` processes "
        "beside it, on the same database file). The others run where they always do, and "
        "every row says where (default: %(default)s)",
    )
    sweep.add_argument(
        "--processes",
        type=whole_numbers(1),
        default=DEFAULTS["processes"],
        metavar="LIST",
        help="counts of worker processes for placement=process, each running --workers tasks at once: "
        "taskito's (`taskito worker --processes N`), Dramatiq's (--processes N --threads T), and the "
        "pools of engines whose processes run one task each, N x T of them (Celery's prefork "
        "children, RQ's workers, Huey's process workers); the async peers run N processes of one "
        "event loop each (default: %(default)s)",
    )
    sweep.add_argument(
        "--workers",
        type=whole_numbers(1),
        default=DEFAULTS["workers"],
        metavar="LIST",
        help="worker counts: threads per worker process, or in the measuring process (default: %(default)s)",
    )
    sweep.add_argument(
        "--tasks",
        type=comma_list(KINDS),
        default=DEFAULTS["tasks"],
        metavar="LIST",
        help=f"task kinds: {', '.join(KINDS)} (benchmarks/tasks.py; chain: --jobs counts every step of "
        f"chains of {CHAIN_LENGTH}) (default: %(default)s)",
    )
    sweep.add_argument(
        "--async-concurrency",
        type=whole_number(1),
        default=DEFAULTS["async_concurrency"],
        metavar="N",
        help="coroutines each worker process runs at once for async task kinds (async_sleep): "
        "taskito's --async-concurrency, SAQ's concurrency, taskiq's --max-async-tasks "
        "(default: %(default)s)",
    )
    sweep.add_argument(
        "--jobs",
        type=whole_number(2),
        default=DEFAULTS["jobs"],
        help="jobs enqueued and drained per cell (default: %(default)s)",
    )
    sweep.add_argument(
        "--repeat",
        type=whole_number(1),
        default=DEFAULTS["repeat"],
        help="repetitions of each cell (default: %(default)s)",
    )
    sweep.add_argument(
        "--samples",
        type=whole_number(0),
        default=DEFAULTS["samples"],
        help="round trips timed for latency per cell (default: %(default)s)",
    )
    sweep.add_argument(
        "--idle-samples",
        type=whole_number(0),
        default=DEFAULTS["idle_samples"],
        metavar="N",
        help="round trips timed after idle gaps, per cell, besides the back-to-back ones "
        "(default: %(default)s; each adds --idle-gap seconds)",
    )
    sweep.add_argument(
        "--idle-gap",
        type=seconds,
        default=DEFAULTS["idle_gap"],
        metavar="SECONDS",
        help="nothing happens for this long before each of those (default: %(default)s)",
    )
    sweep.add_argument(
        "--warmup",
        type=whole_number(0),
        default=DEFAULTS["warmup"],
        help="jobs run before timing, per cell (default: %(default)s)",
    )
    sweep.add_argument(
        "--cell-timeout",
        type=seconds,
        default=DEFAULTS["cell_timeout"],
        metavar="SECONDS",
        help="kill a cell after this long (default: %(default)s)",
    )
    sweep.add_argument(
        "--python",
        type=python_option,
        action="append",
        default=[],
        metavar="ENGINE=PATH",
        help="run ENGINE's cells under another interpreter",
    )
    sweep.add_argument(
        "--redis",
        type=redis_option,
        default=DEFAULT_REDIS_URL,
        metavar="URL",
        help="Redis server for celery, rq and dramatiq (default: %(default)s)",
    )
    sweep.add_argument(
        "--pg-url",
        type=pg_url_option,
        default=pg.DEFAULT_PG_URL,
        metavar="URL",
        help="PostgreSQL server and database for --db postgres: each cell makes a schema of its "
        "own there and drops it when it ends (default: %(default)s)",
    )
    sweep.add_argument(
        "--out", type=Path, metavar="CSV", help="where to write (default: results/run-<UTC time>.csv)"
    )
    sweep.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    sweep.add_argument("--workdir", type=Path, help="where cells keep their databases (default: temp)")
    sweep.set_defaults(parser=sweep)

    cmp = sub.add_parser(
        "compare",
        help="tables of one sweep, or of B against A",
        description="Prints markdown tables: with one CSV each metric per engine and task, "
        "workers x DB mode; with two, B/A per cell with regressions flagged.",
    )
    cmp.add_argument("csv", type=Path, nargs="+", metavar="CSV", help="one or two sweep CSVs (A, then B)")
    cmp.add_argument(
        "--metric",
        action="append",
        choices=list(METRICS),
        metavar="NAME",
        help=f"metric to show (repeatable): {', '.join(METRICS)}",
    )
    cmp.add_argument(
        "--threshold",
        type=finite_number(0.0),
        default=0.10,
        help="flag B/A worse than this fraction (default: %(default)s)",
    )
    cmp.add_argument("--plot", type=Path, metavar="PNG", help="also draw throughput against workers")
    cmp.add_argument("--fail-on-regression", action="store_true", help="exit 1 if a regression is flagged")
    cmp.set_defaults(parser=cmp)

    rep = sub.add_parser(
        "report",
        help="write results/README.md from the reference runs",
        description=f"Writes the tables and plots of the reference runs (results/{report.REFERENCE_GLOB}).",
    )
    rep.add_argument(
        "csv", type=Path, nargs="*", metavar="CSV", help="runs to include (default: the references)"
    )
    rep.add_argument("--out", type=Path, default=report.RESULTS / "README.md", help="default: %(default)s")
    rep.set_defaults(parser=rep)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    # No subcommand: the default sweep, with any sweep options given.
    if not given or (given[0] not in SUBCOMMANDS and given[0] not in ("-h", "--help")):
        args = parser().parse_args(["sweep", *given])
    else:
        args = parser().parse_args(given)
    # Errors found after parsing are reported with the command's own usage.
    if args.command == "sweep":
        return sweep(args.parser, args, given)
    if args.command == "compare":
        return compare(args.parser, args)
    return write_report(args.parser, args)


def sweep(top: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> int:
    pythons = dict(args.python)
    for engine in pythons:
        if engine not in args.engines:
            top.error(f"--python {engine}=...: {engine} is not in --engines ({','.join(args.engines)})")
    if "process" not in args.placement and args.processes != whole_numbers(1)(str(DEFAULTS["processes"])):
        top.error("--processes counts worker processes: give --placement process too")
    if "chain" in args.tasks and args.jobs % CHAIN_LENGTH:
        top.error(f"--jobs {args.jobs}: chain cells run whole chains of {CHAIN_LENGTH} jobs")
    decided = with_postgres(args)
    if decided is not None:
        print(decided, file=sys.stderr, flush=True)
    runnable = [e for e in args.engines if set(ENGINES[adapter_of(e)].modes) & set(args.db)]
    if not runnable:
        top.error(f"no engine in --engines runs on --db {','.join(args.db)}")
    out = args.out or report.RESULTS / f"run-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}.csv"
    if out.exists() and not args.force:
        top.error(f"{out} exists; pass --force to overwrite it")
    plan = Plan(
        engines=args.engines,
        dbs=args.db,
        workers=args.workers,
        tasks=args.tasks,
        jobs=args.jobs,
        repeat=args.repeat,
        samples=args.samples,
        warmup=args.warmup,
        cell_timeout=args.cell_timeout,
        out=out,
        pythons=pythons,
        redis_url=args.redis,
        workdir=args.workdir,
        command=pg.redact(shlex.join(["python", "-m", "benchmarks", *argv])),
        placements=args.placement,
        processes=args.processes,
        idle_samples=args.idle_samples,
        idle_gap=args.idle_gap,
        pg_url=args.pg_url,
        async_concurrency=args.async_concurrency,
    )
    with first_ctrl_c_only():
        try:
            path = run_sweep(plan, write=lambda line: print(line, file=sys.stderr, flush=True))
        except Stopped as stop:
            print(stop, file=sys.stderr)
            return 130  # 128 + SIGINT, as a shell reports a command Ctrl-C stopped
    try:
        from benchmarks import compare as tables
    except ImportError as exc:
        print(f"wrote {path}; the tables need pandas ({exc}): pip install '.[bench]'", file=sys.stderr)
        return 0
    frame = tables.load(path)
    print(tables.render(frame))
    print(f"wrote {path}", file=sys.stderr)
    return 0 if (frame["status"] == "ok").any() else 1


def compare(top: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from benchmarks import compare as tables

    if len(args.csv) > 2:
        top.error("compare takes one or two CSVs (A, then B)")
    try:
        frames = {path.stem: tables.load(path) for path in args.csv}
    except tables.NotABenchmarkCSV as exc:
        top.error(str(exc))
    if len(frames) != len(args.csv):
        top.error("the two CSVs need different file names")
    regressions = 0
    if len(args.csv) == 1:
        frame = next(iter(frames.values()))
        print(f"# {args.csv[0]}\n\n{tables.provenance(frame)}\n")
        print(tables.render(frame, args.metric or tables.DEFAULT_METRICS))
    else:
        a, b = frames.values()
        print(f"# A = {args.csv[0]}, B = {args.csv[1]}\n")
        print(f"A: {tables.provenance(a)}\nB: {tables.provenance(b)}\n")
        text, regressions = tables.render_diff(a, b, args.metric or tables.DIFF_METRICS, args.threshold)
        print(text)
    if args.plot:
        from benchmarks import plot

        try:
            plot.throughput(frames, args.plot)
        except ValueError as exc:
            top.error(str(exc))
        print(f"wrote {args.plot}", file=sys.stderr)
    return 1 if regressions and args.fail_on_regression else 0


def write_report(top: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from benchmarks import compare as tables

    csvs = args.csv or report.references()
    try:
        path = report.write(csvs, args.out)
    except tables.NotABenchmarkCSV as exc:
        top.error(str(exc))
    print(f"wrote {path} from {len(csvs)} run(s)", file=sys.stderr)
    return 0
