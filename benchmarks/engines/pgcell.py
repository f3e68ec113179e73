"""What the engines of the ``postgres`` mode share: a schema of the cell's
own, the server's description, and the clean-up of schemas a dead cell left.

Each cell keeps its jobs in a schema named ``bench_<engine>_<random>``, so
that cells never see each other's jobs, and drops it (with everything the
engine made in it) when it ends. Its name is written to ``SCHEMAS_FILE`` in
the cell's folder before anything creates it: a cell killed at its time
limit cannot drop its schema, and the sweep then drops what that file lists
(``python -m benchmarks.cell cleanup``, see ``sweep.run_cell``).

The harness's own connection (psycopg, which procrastinate needs too) only
creates, describes, reads and drops; the engines talk to the server through
their own drivers.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from benchmarks.engines.base import Unavailable
from benchmarks.pg import SCHEMAS_FILE, redact

CONNECT_TIMEOUT = 5  # seconds; libpq takes whole seconds
# A DROP SCHEMA that waits for a lock (a worker that did not let go) fails
# after this instead of hanging the cell; the sweep's clean-up tries again.
LOCK_TIMEOUT = "10s"


def connect(url: str) -> psycopg.Connection[Any]:
    """The harness's connection: autocommit, or Unavailable naming the server
    (never its password) and what went wrong."""
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
    except psycopg.Error as exc:
        reason = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        raise Unavailable(f"cannot connect to PostgreSQL at {redact(url)} ({reason})") from None
    conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
    return conn


def describe_server(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """store_version and durability as the server reports them: whether it
    syncs its WAL to disk at all (fsync) and before a commit returns
    (synchronous_commit)."""
    settings = {name: _show(conn, name) for name in ("server_version", "fsync", "synchronous_commit")}
    return {
        "store_version": f"postgresql {settings['server_version'].split()[0]}",
        "durability": f"fsync={settings['fsync']} synchronous_commit={settings['synchronous_commit']}",
    }


def _show(conn: psycopg.Connection[Any], setting: str) -> str:
    row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(setting))).fetchone()
    return str(row[0]) if row else "?"


class CellSchema:
    """A schema of the cell's own on the server at ``url``, and the
    harness's connection to that server (``conn``).

    ``create``: made here (for engines that install into an existing
    schema); otherwise the engine makes it. Either way ``close`` drops it."""

    def __init__(self, url: str, workdir: Path, engine: str, *, create: bool) -> None:
        self.conn = connect(url)
        self.workdir = workdir
        self.name = f"bench_{engine.replace('-', '_')}_{secrets.token_hex(4)}"
        _record(workdir, self.name)
        if create:
            self.conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.name)))

    def table(self, name: str) -> sql.Composed:
        """``schema.name``, quoted, for the harness's reads of the engine's tables."""
        return sql.SQL("{}.{}").format(sql.Identifier(self.name), sql.Identifier(name))

    def describe(self) -> dict[str, str]:
        return describe_server(self.conn)

    def close(self) -> None:
        """Drops the schema and everything in it, then closes the connection.
        Call it after the engine's own connections are closed."""
        try:
            drop(self.conn, self.name)
            _unrecord(self.workdir, self.name)
        finally:
            self.conn.close()


def drop(conn: psycopg.Connection[Any], name: str) -> None:
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def listed(folder: Path) -> list[str]:
    """The schemas a cell in ``folder`` made and has not dropped."""
    path = folder / SCHEMAS_FILE
    return path.read_text().split() if path.exists() else []


def drop_listed(url: str, folder: Path) -> list[str]:
    """Drops the schemas a cell in ``folder`` left behind; returns their names."""
    names = listed(folder)
    if not names:
        return []
    with connect(url) as conn:
        for name in names:
            drop(conn, name)
            _unrecord(folder, name)
    return names


def _record(folder: Path, name: str) -> None:
    with (folder / SCHEMAS_FILE).open("a") as f:
        f.write(name + "\n")


def _unrecord(folder: Path, name: str) -> None:
    left = [n for n in listed(folder) if n != name]
    path = folder / SCHEMAS_FILE
    if left:
        path.write_text("".join(n + "\n" for n in left))
    else:
        path.unlink(missing_ok=True)
