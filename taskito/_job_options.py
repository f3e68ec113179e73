"""The options a job may carry beyond priority, delay and the like: a unique
key, dependencies, an expiry and metadata. Checked here, at the call, so that
bad input raises before anything is stored."""

from __future__ import annotations

import datetime
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from taskito.exceptions import InvalidArgumentError

# What ``@queue.task(unique_key=...)`` takes: the job's key from its arguments.
UniqueKeyFunction = Callable[[tuple[Any, ...], dict[str, Any]], str]


@dataclass(frozen=True)
class JobExtras:
    """A job's options beyond the basics, checked (``extras``). A job with
    none of them (``plain``) takes the plain enqueue path."""

    unique_key: str | None = None
    depends_on: list[str] = field(default_factory=list)
    expires: float | None = None  # seconds from now
    metadata: str | None = None  # JSON text

    @property
    def plain(self) -> bool:
        return (
            self.unique_key is None and not self.depends_on and self.expires is None and self.metadata is None
        )


NONE = JobExtras()


def extras(
    *,
    unique_key: Any = None,
    depends_on: Any = None,
    expires: Any = None,
    metadata: Any = None,
) -> JobExtras:
    """Checks the keyword options of ``apply_async``/``enqueue``."""
    if unique_key is None and depends_on is None and expires is None and metadata is None:
        return NONE
    return JobExtras(
        unique_key=checked_unique_key(unique_key),
        depends_on=dependency_ids(depends_on),
        expires=expires_in(expires),
        metadata=metadata_json(metadata),
    )


def checked_unique_key(value: Any, what: str = "unique_key") -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{what} must be a str, got {type(value).__name__}")
    if not value:
        raise InvalidArgumentError(f"{what} must not be empty")
    return value


def key_function(value: Any) -> UniqueKeyFunction | None:
    """``@queue.task(unique_key=...)``: a callable of (args, kwargs), or None."""
    if value is None:
        return None
    if not callable(value):
        raise InvalidArgumentError(
            f"the task option unique_key must be a callable (args, kwargs) -> str, got {type(value).__name__}"
        )
    return value  # type: ignore[no-any-return]


def key_of(function: UniqueKeyFunction, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """The key ``function`` gives a call; a non-str answer is refused."""
    key = function(args, kwargs)
    checked = checked_unique_key(key, "the task's unique_key callable's result")
    assert checked is not None, "checked_unique_key refuses None only as a non-str"
    return checked


def dependency_ids(value: Any) -> list[str]:
    """``depends_on``: a job (``JobResult``), a job id, or a list of those."""
    from taskito.result import JobResult

    if value is None:
        return []
    items: list[Any] = list(value) if isinstance(value, list | tuple) else [value]
    ids: list[str] = []
    for item in items:
        if isinstance(item, JobResult):
            ids.append(item.id)
        elif isinstance(item, str):
            ids.append(item)
        else:
            raise InvalidArgumentError(
                f"depends_on takes jobs (JobResult), job ids (str) or a list of them, got {type(item).__name__}"
            )
    return ids


def expires_in(value: Any) -> float | None:
    """``expires``: seconds from now (a number or a ``timedelta``) or a
    ``datetime`` (naive ones are local time); it must be in the future."""
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        seconds = value.timestamp() - time.time()
    elif isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise InvalidArgumentError(
            f"expires must be seconds, a timedelta or a datetime, got {type(value).__name__}"
        )
    if math.isnan(seconds) or math.isinf(seconds) or seconds <= 0:
        raise InvalidArgumentError(f"expires must be in the future, got {value!r}")
    return seconds


def metadata_json(value: Any) -> str | None:
    """``metadata``: a dict that JSON can hold, stored as its JSON text. A
    JSON string of an object is accepted too (the reference project's
    form) and stored as the dict it holds."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise InvalidArgumentError(f"metadata given as a string must be JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise InvalidArgumentError(f"metadata must be a JSON object, got {type(value).__name__}")
    if not isinstance(value, Mapping):
        raise InvalidArgumentError(f"metadata must be a dict, got {type(value).__name__}")
    try:
        return json.dumps(dict(value), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"metadata must be JSON-serializable: {exc}") from exc
