"""The ``TaskitoError`` hierarchy, and ``TaskInterrupted``.

The classes are created by the Rust engine (so that errors raised there and
here are the same classes) and re-exported here. Where a stdlib exception
means the same thing, taskito's class subclasses it as well:

- ``JobTimeoutError`` (``result()`` ran out of time), ``TaskTimeoutError`` (raised
  inside a task past its time limit): ``TimeoutError``
- ``JobNotFoundError``, ``UnknownTaskError``: ``KeyError``
- ``InvalidArgumentError``, ``SignatureError``: ``ValueError``
- ``SerializationError``: ``TypeError``
- ``QueueClosedError``: ``RuntimeError``
- ``StorageError``: ``OSError`` (``StorageNotFoundError``: ``FileNotFoundError``,
  ``StoragePermissionError``: ``PermissionError``, ``StorageConnectionError``:
  ``ConnectionError``, a database server that cannot be reached)

``TaskInterrupted`` is not an error callers see: it is raised inside a task to
stop it (timeout, end of the shutdown grace period) and derives from
``BaseException`` so that ``except Exception`` in task code lets it through.
"""

from __future__ import annotations

from taskito._native import (
    ForeignSQLiteError,
    InvalidArgumentError,
    JobCancelledError,
    JobNotFoundError,
    JobTimeoutError,
    QueueClosedError,
    SerializationError,
    SignatureError,
    StorageConnectionError,
    StorageError,
    StorageNotFoundError,
    StoragePermissionError,
    TaskFailedError,
    TaskInterrupted,
    TaskitoError,
    TaskTimeoutError,
    UnknownTaskError,
)

__all__ = [
    "ForeignSQLiteError",
    "InvalidArgumentError",
    "JobCancelledError",
    "JobNotFoundError",
    "JobTimeoutError",
    "QueueClosedError",
    "SerializationError",
    "SignatureError",
    "StorageConnectionError",
    "StorageError",
    "StorageNotFoundError",
    "StoragePermissionError",
    "TaskFailedError",
    "TaskInterrupted",
    "TaskTimeoutError",
    "TaskitoError",
    "UnknownTaskError",
]
