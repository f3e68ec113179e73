"""Types of the Rust extension module (native/src/python). Private: use ``taskito``."""

from collections.abc import Callable
from typing import Any, Final, final

__all__ = [
    "OUTCOME_CANCELLED",
    "OUTCOME_FAILURE",
    "OUTCOME_SUCCESS",
    "SQLITE_VERSION",
    "AsyncWatch",
    "ForeignSQLiteError",
    "InvalidArgumentError",
    "JobCancelledError",
    "JobNotFoundError",
    "JobTimeoutError",
    "NativeQueue",
    "QueueClosedError",
    "SerializationError",
    "SignatureError",
    "StorageError",
    "StorageNotFoundError",
    "StoragePermissionError",
    "TaskFailedError",
    "TaskInterrupted",
    "TaskTimeoutError",
    "TaskitoError",
    "UnknownTaskError",
    "__version__",
]

__version__: str
SQLITE_VERSION: str

# The tag that starts what start_worker's `execute` returns for an attempt:
# (OUTCOME_SUCCESS, result bytes), (OUTCOME_FAILURE, (type, message,
# traceback, retryable)) or (OUTCOME_CANCELLED, message). Any other tag, or
# data of the wrong shape, fails the attempt for good (InvalidArgumentError).
OUTCOME_SUCCESS: Final = 0
OUTCOME_FAILURE: Final = 1
OUTCOME_CANCELLED: Final = 2

_Outcome = tuple[str, bytes | None, dict[str, Any] | None]

@final
class NativeQueue:
    def __new__(
        cls,
        path: str,
        durability: str = "normal",
        busy_timeout: float = 5.0,
        max_payload_size: int = ...,
    ) -> NativeQueue: ...
    @property
    def path(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    def enqueue(
        self,
        task_name: str,
        queue: str,
        payloads: list[bytes],
        priority: int,
        delay: float | None,
        max_retries: int,
        retry_backoff: float,
        timeout: float | None,
    ) -> list[str]: ...
    def get_job(self, job_id: str) -> dict[str, Any] | None: ...
    def list_jobs(
        self,
        status: str | None = None,
        queue: str | None = None,
        task_name: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[dict[str, Any]]: ...
    def job_errors(self, job_id: str) -> list[dict[str, Any]]: ...
    def stats(self) -> dict[str, int]: ...
    def cancel(self, job_id: str) -> bool: ...
    def request_cancel(self, job_id: str) -> str: ...
    def cancel_requested(self, job_id: str) -> bool: ...
    def retry_dead(self, job_id: str) -> bool: ...
    def purge_dead(self, older_than: float) -> int: ...
    def purge_finished(self, older_than: float) -> int: ...
    def wait(
        self, job_id: str, timeout: float | None, poll_interval: float, max_poll_interval: float
    ) -> _Outcome: ...
    def watch(self, job_id: str) -> AsyncWatch: ...
    def start_worker(
        self,
        execute: Callable[[str, bytes, str, int, int, str], tuple[int, Any]],
        on_event: Callable[[str, str | None, str], None],
        workers: int,
        queues: list[str] | None,
        lease: float,
        heartbeat: float,
        jobs_per_run: int,
        result_ttl: float | None,
    ) -> str: ...
    def wait_worker(self, timeout: float) -> bool: ...
    def request_stop(self) -> None: ...
    def worker_stopping(self) -> bool: ...
    def running_tasks(self) -> dict[str, int]: ...
    def stop_worker(self, grace: float) -> int: ...
    def close(self, grace: float = 30.0) -> int: ...

@final
class AsyncWatch:
    def fileno(self) -> int: ...
    def check(self) -> _Outcome | None: ...
    def close(self) -> None: ...

class TaskitoError(Exception): ...
class InvalidArgumentError(TaskitoError, ValueError): ...
class SerializationError(TaskitoError, TypeError): ...
class UnknownTaskError(TaskitoError, KeyError): ...
class JobNotFoundError(TaskitoError, KeyError): ...
class JobTimeoutError(TaskitoError, TimeoutError): ...

class TaskFailedError(TaskitoError):
    job_id: str
    task_name: str
    exc_type: str
    exc_message: str
    traceback: str
    attempt: int | None

class TaskTimeoutError(TaskitoError, TimeoutError): ...
class TaskInterrupted(BaseException): ...
class SignatureError(TaskitoError, ValueError): ...
class JobCancelledError(TaskitoError): ...
class QueueClosedError(TaskitoError, RuntimeError): ...
class StorageError(TaskitoError, OSError): ...
class StorageNotFoundError(StorageError, FileNotFoundError): ...
class StoragePermissionError(StorageError, PermissionError): ...
class ForeignSQLiteError(StorageError): ...
