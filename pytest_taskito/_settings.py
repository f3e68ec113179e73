"""The plugin's options: one table, each option with a command-line flag, an
environment variable and an ini key, resolved command line > env > ini >
default, validated once, and overridable per test with the ``taskito`` marker."""

from __future__ import annotations

import math
import os
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

DB_MODES = ("memory", "file", "postgres")
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_APP_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def parse_workers(value: Any) -> int:
    number = int(value.strip()) if isinstance(value, str) and value.strip().isdigit() else value
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise ValueError(f"expected a whole number of worker threads >= 1, got {value!r}")
    return number


def parse_db(value: Any) -> str:
    text = value.strip().lower() if isinstance(value, str) else value
    if text not in DB_MODES:
        raise ValueError(f"expected one of {', '.join(DB_MODES)}, got {value!r}")
    return str(text)


def parse_db_url(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str) or not value.strip().startswith(POSTGRES_SCHEMES):
        raise ValueError("expected a PostgreSQL URL (postgresql://user@host:port/database)")
    return value.strip()


def shown_url(url: str) -> str:
    """``url`` without its password, as the report header shows it."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{parts.username}@{host}" if parts.username else host
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def parse_timeout(value: Any) -> float:
    number: float | None = None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    if number is None or math.isnan(number) or math.isinf(number) or number <= 0:
        raise ValueError(f"expected a finite number of seconds > 0, got {value!r}")
    return number


def parse_app(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str) or not _APP_SPEC.match(value.strip()):
        raise ValueError(f"expected 'package.module:attribute' naming a taskito.Queue, got {value!r}")
    return value.strip()


@dataclass(frozen=True)
class Option:
    """One setting and the three places it can be given."""

    key: str
    default: Any
    parse: Callable[[Any], Any]
    metavar: str
    help: str
    marker: bool  # whether @pytest.mark.taskito may override it for one test
    # What a TOML config may hold besides a string (pytest >= 9.2 checks
    # TOML value types; `parse` accepts all of them).
    toml: Any = None
    # The environment variable, when it is not PYTEST_TASKITO_<KEY>.
    env_name: str | None = None

    @property
    def ini_type(self) -> Any:
        if self.toml is None or pytest.version_tuple < (9, 2):
            return "string"
        return self.toml | str

    @property
    def flag(self) -> str:
        return "--taskito-" + self.key.replace("_", "-")

    @property
    def dest(self) -> str:
        return "taskito_" + self.key

    @property
    def ini(self) -> str:
        return "taskito_" + self.key

    @property
    def env(self) -> str:
        return self.env_name or "PYTEST_TASKITO_" + self.key.upper()


OPTIONS = (
    Option(
        "workers",
        2,
        parse_workers,
        "N",
        "worker threads of each `worker` fixture",
        marker=True,
        toml=int,
    ),
    Option(
        "db",
        "memory",
        parse_db,
        "memory|file|postgres",
        "database of each test's queue: a private in-memory one, a file under tmp_path, or a "
        "schema of its own on --taskito-db-url's PostgreSQL server (dropped after the test)",
        marker=True,
    ),
    Option(
        "db_url",
        None,
        parse_db_url,
        "URL",
        "the PostgreSQL server of --taskito-db=postgres (postgresql://user@host:port/database)",
        marker=False,
        env_name="TASKITO_DB_URL",
    ),
    Option(
        "timeout",
        30.0,
        parse_timeout,
        "SECONDS",
        "default limit of waiting helpers, and how long teardown lets running tasks finish",
        marker=True,
        toml=float | int,
    ),
    Option(
        "app",
        None,
        parse_app,
        "MODULE:ATTR",
        "your application's taskito.Queue; its tasks run on each test's isolated queue",
        marker=False,
    ),
)
_BY_KEY = {option.key: option for option in OPTIONS}


@dataclass(frozen=True)
class Settings:
    """The effective plugin settings, and where each value came from."""

    workers: int
    db: str
    timeout: float
    app: str | None
    db_url: str | None = None
    sources: Mapping[str, str] = field(default_factory=dict)

    def describe(self, overridden: Mapping[str, tuple[str, str]] | None = None) -> str:
        """Each setting and where it came from; ``overridden`` maps a key to
        what replaces it and where from (a fixture that overrides the option)."""
        parts = []
        for option in OPTIONS:
            value = getattr(self, option.key)
            if option.key == "db_url":
                if value is None:
                    continue  # said only where there is one
                value = shown_url(value)
            shown = "none" if value is None else f"{value:g}s" if option.key == "timeout" else value
            source = self.sources.get(option.key, "default")
            if overridden and option.key in overridden:
                replacement, where = overridden[option.key]
                if value is not None:
                    where += f"; overrides {option.key}={shown} from {source}"
                shown, source = replacement, where
            parts.append(f"{option.key}={shown} ({source})")
        return ", ".join(parts)

    def check(self) -> Settings:
        """These settings, if they make sense together."""
        if self.db == "postgres" and self.db_url is None:
            raise pytest.UsageError(
                "taskito: db=postgres needs a server: --taskito-db-url "
                "(or env TASKITO_DB_URL, ini taskito_db_url)"
            )
        return self

    def with_markers(self, markers: Iterable[pytest.Mark]) -> Settings:
        """These settings overridden by ``@pytest.mark.taskito(...)`` markers,
        given closest first (as ``node.iter_markers`` yields them)."""
        changes: dict[str, Any] = {}
        for mark in reversed(list(markers)):
            if mark.args:
                raise pytest.UsageError(
                    f"@pytest.mark.taskito takes keyword arguments only (workers=, db=, timeout=), got {mark.args!r}"
                )
            for key, value in mark.kwargs.items():
                option = _BY_KEY.get(key)
                if option is None or not option.marker:
                    allowed = ", ".join(o.key for o in OPTIONS if o.marker)
                    raise pytest.UsageError(f"@pytest.mark.taskito got {key}=; it accepts {allowed}")
                try:
                    changes[key] = option.parse(value)
                except ValueError as exc:
                    raise pytest.UsageError(f"@pytest.mark.taskito({key}=...): {exc}") from None
        if not changes:
            return self
        sources = dict(self.sources)
        sources.update(dict.fromkeys(changes, "marker"))
        return replace(self, sources=sources, **changes).check()


def resolve(config: pytest.Config, environ: Mapping[str, str] | None = None) -> Settings:
    """Reads every option: command line, then environment, then ini, then default."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for option in OPTIONS:
        raw: Any = config.getoption(option.dest, None)
        source = option.flag
        if raw is None and env.get(option.env, "").strip():
            raw, source = env[option.env], f"env {option.env}"
        if raw is None:
            # pytest < 9 returns "" for an unset string ini value.
            ini = config.getini(option.ini)
            if ini not in (None, ""):
                raw, source = ini, f"ini {option.ini}"
        if raw is None:
            values[option.key], sources[option.key] = option.default, "default"
            continue
        try:
            values[option.key] = option.parse(raw)
        except ValueError as exc:
            raise pytest.UsageError(f"taskito: bad value for {source}: {exc}") from None
        sources[option.key] = source
    return Settings(sources=sources, **values).check()


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("taskito", "taskito: run tasks through the real engine")
    for option in OPTIONS:
        default = "none" if option.default is None else option.default
        group.addoption(
            option.flag,
            dest=option.dest,
            default=None,
            metavar=option.metavar,
            help=f"{option.help} (default {default}; also env {option.env}, ini {option.ini})",
        )
        parser.addini(option.ini, f"{option.help} (like {option.flag})", type=option.ini_type, default=None)
