"""The ``TaskitoError`` hierarchy.

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
    SignatureError,
    StorageError,
    StorageNotFoundError,
    StoragePermissionError,
    TaskFailedError,
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
    "StorageError",
    "StorageNotFoundError",
    "StoragePermissionError",
    "TaskFailedError",
    "TaskTimeoutError",
    "TaskitoError",
    "UnknownTaskError",
]
