"""taskito: a task queue for Python with a Rust engine and no broker.

from taskito import Queue

queue = Queue(db_path="tasks.db")

@queue.task()
def add(a, b):
    return a + b

job = add.delay(2, 3)      # a worker elsewhere runs it: `taskito worker --app app:queue`
job.result(timeout=10)     # 5
"""

from taskito._native import __version__
from taskito.app import Queue
from taskito.canvas import Signature, chain, chord, chunks, group, starmap
from taskito.context import current_job
from taskito.exceptions import (
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
from taskito.group_result import GroupResult
from taskito.middleware import TaskMiddleware
from taskito.result import JobResult
from taskito.serializers import JsonSerializer, PickleSerializer, Serializer
from taskito.task import TaskWrapper

__all__ = [
    "ForeignSQLiteError",
    "GroupResult",
    "InvalidArgumentError",
    "JobCancelledError",
    "JobNotFoundError",
    "JobResult",
    "JobTimeoutError",
    "JsonSerializer",
    "PickleSerializer",
    "Queue",
    "QueueClosedError",
    "SerializationError",
    "Serializer",
    "Signature",
    "SignatureError",
    "StorageConnectionError",
    "StorageError",
    "StorageNotFoundError",
    "StoragePermissionError",
    "TaskFailedError",
    "TaskInterrupted",
    "TaskMiddleware",
    "TaskTimeoutError",
    "TaskWrapper",
    "TaskitoError",
    "UnknownTaskError",
    "__version__",
    "chain",
    "chord",
    "chunks",
    "current_job",
    "group",
    "starmap",
]
