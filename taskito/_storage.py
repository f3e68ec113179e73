"""Which database a Queue uses: a SQLite file (or ``:memory:``), or a schema
on a PostgreSQL server. Validated once here; the engine does the rest, and
nothing else in the package needs to know which it is."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from taskito import _options
from taskito._native import NativeQueue
from taskito.exceptions import InvalidArgumentError

BACKENDS = ("sqlite", "postgres")
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


@dataclass(frozen=True)
class Storage:
    """The storage settings of ``Queue()``, as given (``db_url`` keeps its
    password: it is needed to connect; nothing shows it)."""

    db_path: str
    backend: str
    db_url: str | None
    schema: str
    connect_timeout: float
    # A relative db_path as it was given, and the folder it was resolved
    # against (db_path is always absolute): `taskito worker` shows both.
    relative: tuple[str, str] | None = None

    @classmethod
    def resolve(
        cls,
        db_path: Any,
        backend: Any,
        db_url: Any,
        schema: Any,
        connect_timeout: Any,
    ) -> Storage:
        if not isinstance(db_path, str | os.PathLike):
            raise TypeError(f"db_path must be a path or ':memory:', got {db_path!r}")
        if backend is not None and backend not in BACKENDS:
            raise InvalidArgumentError(f"backend must be 'sqlite' or 'postgres', got {backend!r}")
        if db_url is not None and not isinstance(db_url, str):
            raise TypeError(f"db_url must be a str, got {type(db_url).__name__}")
        if backend is None:
            backend = "sqlite" if db_url is None else "postgres"
            if db_url is not None and not db_url.startswith(POSTGRES_SCHEMES):
                raise InvalidArgumentError(
                    "db_url must start with postgresql:// or postgres:// (or pass "
                    "backend='postgres' for a key=value connection string)"
                )
        if backend == "postgres" and not db_url:
            raise InvalidArgumentError(
                "backend='postgres' needs db_url='postgresql://user@host:port/database'"
            )
        if backend == "sqlite" and db_url is not None:
            raise InvalidArgumentError("db_url is for backend='postgres'; SQLite takes db_path")
        _options.name("schema", schema)
        timeout = _options.seconds("connect_timeout", connect_timeout, allow_zero=False)
        given = os.fspath(db_path)
        path = _absolute_db_path(given)
        relative = None if path == given else (given, os.getcwd())
        return cls(path, backend, db_url, schema, timeout, relative)

    @property
    def is_postgres(self) -> bool:
        return self.backend == "postgres"

    def open(self, durability: str, busy_timeout: float, max_payload_size: int) -> NativeQueue:
        if self.is_postgres:
            return NativeQueue(
                self.db_path,
                durability,
                busy_timeout,
                max_payload_size,
                db_url=self.db_url,
                schema=self.schema,
                connect_timeout=self.connect_timeout,
            )
        return NativeQueue(self.db_path, durability, busy_timeout, max_payload_size)

    def settings(self) -> dict[str, Any]:
        """As keyword arguments of ``Queue()``."""
        return {
            "db_path": self.db_path,
            "backend": self.backend,
            "db_url": self.db_url,
            "schema": self.schema,
            "connect_timeout": self.connect_timeout,
        }


def _absolute_db_path(path: str) -> str:
    """``path`` made absolute against the current folder (``:memory:`` and
    the empty string, which the engine refuses, stay as they are)."""
    if not path or path == ":memory:" or os.path.isabs(path):
        return path
    return os.path.abspath(path)
