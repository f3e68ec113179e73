"""Validation of user-supplied options: one place, one kind of error message."""

from __future__ import annotations

import datetime
import math
from typing import Any

from taskito.exceptions import InvalidArgumentError


def seconds(name: str, value: Any, *, allow_zero: bool = True) -> float:
    """A duration given as seconds (int or float) or a ``timedelta``."""
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds or a timedelta, got {value!r}")
    number = float(value)
    if math.isnan(number) or number < 0 or (number == 0 and not allow_zero) or math.isinf(number):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidArgumentError(f"{name} must be a finite number of seconds {bound}, got {number}")
    return number


def optional_seconds(name: str, value: Any, *, allow_zero: bool = True) -> float | None:
    """Like ``seconds``, with None meaning "not set"."""
    return None if value is None else seconds(name, value, allow_zero=allow_zero)


# A lease must outlast the pauses a live worker can have between renewals (a
# collection, a slow commit, a busy machine): below this, another worker takes
# over the jobs of one that is merely slow, and they run twice.
MIN_LEASE_DURATION = 1.0
# Renewals per lease at least: one late renewal must not lose a job.
RENEWALS_PER_LEASE = 3


def lease_duration(value: Any) -> float:
    lease = seconds("lease_duration", value, allow_zero=False)
    if lease < MIN_LEASE_DURATION:
        raise InvalidArgumentError(
            f"lease_duration must be at least {MIN_LEASE_DURATION:g}s, got {lease:g}s: a worker "
            "renews its leases on a timer, and a shorter lease can run out while the worker is "
            "alive but paused (a garbage collection, a slow commit), so that another worker takes "
            "over its jobs and runs them a second time"
        )
    return lease


def heartbeat_interval(value: Any, lease: float) -> float:
    heartbeat = seconds("heartbeat_interval", value, allow_zero=False)
    if heartbeat * RENEWALS_PER_LEASE > lease:
        raise InvalidArgumentError(
            f"heartbeat_interval ({heartbeat:g}s) must be at most a third of lease_duration "
            f"({lease:g}s): leases are renewed every heartbeat_interval, and at least three "
            "renewals per lease keep a job when one renewal comes late"
        )
    return heartbeat


# Counts cross into the engine as 32-bit unsigned integers.
COUNT_MAX = 2**32 - 1


def count(name: str, value: Any, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if not minimum <= value <= COUNT_MAX:
        raise InvalidArgumentError(f"{name} must be between {minimum} and {COUNT_MAX}, got {value}")
    return value


def priority(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"priority must be an int, got {value!r}")
    if not -(2**63) <= value < 2**63:
        raise InvalidArgumentError(f"priority must fit in 64 bits, got {value}")
    return value


def name(what: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {value!r}")
    if not value:
        raise InvalidArgumentError(f"{what} must not be empty")
    return value


def call_args(args: Any, kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Positional arguments as a tuple (a list is accepted) and keyword arguments as a dict."""
    if isinstance(args, list):
        args = tuple(args)
    elif not isinstance(args, tuple):
        raise TypeError(f"args must be a tuple or a list, got {type(args).__name__}")
    if kwargs is None:
        kwargs = {}
    elif not isinstance(kwargs, dict):
        raise TypeError(f"kwargs must be a dict or None, got {type(kwargs).__name__}")
    elif not all(isinstance(k, str) for k in kwargs):
        raise TypeError("kwargs keys must be strings")
    return args, kwargs


def exception_types(name: str, value: Any) -> tuple[type[BaseException], ...]:
    """An exception class or a sequence of them, as a tuple for isinstance()."""
    if value is None:
        return ()
    items = (value,) if isinstance(value, type) else tuple(value)
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise TypeError(f"{name} must hold exception classes, got {item!r}")
    return items
