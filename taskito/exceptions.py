"""The ``TaskitoError`` hierarchy.

The classes are created by the Rust engine (so that errors raised there and
here are the same classes) and re-exported here. Where a stdlib exception
means the same thing, taskito's class subclasses it as well:

- ``JobTimeoutError``: ``TimeoutError``
- ``JobNotFoundError``, ``UnknownTaskError``: ``KeyError``
- ``InvalidArgumentError``: ``ValueError``
- ``SerializationError``: ``TypeError``
- ``QueueClosedError``: ``RuntimeError``
- ``StorageError``: ``OSError`` (``StorageNotFoundError``: ``FileNotFoundError``,
  ``StoragePermissionError``: ``PermissionError``)
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
    StorageError,
    StorageNotFoundError,
    StoragePermissionError,
    TaskFailedError,
    TaskitoError,
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
    "StorageError",
    "StorageNotFoundError",
    "StoragePermissionError",
    "TaskFailedError",
    "TaskitoError",
    "UnknownTaskError",
]
