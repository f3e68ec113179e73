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
