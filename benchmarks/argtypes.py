"""Argument types of the harness's command lines (``python -m benchmarks``
and ``python -m benchmarks.targets``), defined once: a value one refuses,
the other refuses too, with the same words. Each raises
``argparse.ArgumentTypeError``, which argparse turns into a usage error
(exit status 2) naming the flag.

Counts are whole numbers with a least value (jobs: 2, repetitions and
workers: 1, samples and warm-up jobs: 0); durations are finite seconds of
at least ``SECONDS_MIN``: a time limit or a gap of 0 or less means nothing,
and NaN or infinity would reach ``time.sleep`` or ``Popen.wait``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from typing import TypeVar

# The shortest time limit or idle gap taken: a millisecond.
SECONDS_MIN = 0.001

Number = TypeVar("Number", int, float)


def whole_number(minimum: int) -> Callable[[str], int]:
    """A whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            try:
                float(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        return _at_least(value, minimum)

    return parse


def finite_number(minimum: float) -> Callable[[str], float]:
    """A finite number (not NaN, not infinite) of at least ``minimum``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        return _at_least(value, minimum)

    return parse


def seconds(text: str) -> float:
    """A time limit or a gap: finite, at least ``SECONDS_MIN``."""
    return finite_number(SECONDS_MIN)(text)


def _at_least(value: Number, minimum: Number) -> Number:
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    return value


def comma_list(choices: Sequence[str] | None = None) -> Callable[[str], list[str]]:
    """Comma-separated values, each once, from ``choices`` if given."""

    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError("give at least one value")
        if len(set(items)) != len(items):
            raise argparse.ArgumentTypeError(f"{text!r} names a value twice")
        if choices is not None:
            unknown = [item for item in items if item not in choices]
            if unknown:
                raise argparse.ArgumentTypeError(
                    f"unknown {', '.join(unknown)} (choose from {', '.join(choices)})"
                )
        return items

    return parse


def whole_numbers(minimum: int) -> Callable[[str], list[int]]:
    """Comma-separated whole numbers, each of at least ``minimum`` (worker counts)."""
    one = whole_number(minimum)

    def parse(text: str) -> list[int]:
        return [one(item) for item in comma_list()(text)]

    return parse
