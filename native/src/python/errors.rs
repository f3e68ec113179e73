//! The `TaskitoError` hierarchy, built once at import, and the one mapping
//! from the engine's `Error` to it. Where a stdlib exception means the same
//! thing, the class subclasses it too, so `except TimeoutError:` and
//! `except KeyError:` keep working for users who never heard of taskito's.

use std::io::ErrorKind;

use pyo3::exceptions::{
    PyBaseException, PyConnectionError, PyException, PyFileNotFoundError, PyKeyError, PyOSError,
    PyPermissionError, PyRuntimeError, PyTimeoutError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};
use pyo3::PyTypeInfo;

use crate::error::{DatabaseFault, Error};

/// Declares the classes: name, docstring, then bases (the first base is
/// another class of the hierarchy or `Exception`).
macro_rules! hierarchy {
    ($( $static:ident = $name:literal, $doc:literal, [$($base:expr),+] ;)+) => {
        $( pub static $static: PyOnceLock<Py<PyType>> = PyOnceLock::new(); )+

        /// Creates every class and adds it to `module`.
        pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
            let py = module.py();
            $(
                let bases: Vec<Bound<'_, PyType>> = vec![$($base(py)),+];
                let class = make_class(py, $name, $doc, bases)?;
                module.add($name, &class)?;
                let _ = $static.set(py, class.unbind());
            )+
            Ok(())
        }
    };
}

fn ours(lock: &'static PyOnceLock<Py<PyType>>) -> impl Fn(Python<'_>) -> Bound<'_, PyType> {
    move |py| {
        lock.get(py)
            .expect("taskito exception classes are created at import")
            .bind(py)
            .clone()
    }
}

fn std<T: PyTypeInfo>(py: Python<'_>) -> Bound<'_, PyType> {
    T::type_object(py)
}

hierarchy! {
    TASKITO_ERROR = "TaskitoError", "Base class of every error taskito raises.", [std::<PyException>];
    INVALID_ARGUMENT = "InvalidArgumentError", "An argument or option has a value taskito cannot accept.",
        [ours(&TASKITO_ERROR), std::<PyValueError>];
    SERIALIZATION = "SerializationError", "A value could not be serialized (or deserialized) by the queue's serializer.",
        [ours(&TASKITO_ERROR), std::<PyTypeError>];
    UNKNOWN_TASK = "UnknownTaskError", "No task with this name is registered on the queue.",
        [ours(&TASKITO_ERROR), std::<PyKeyError>];
    JOB_NOT_FOUND = "JobNotFoundError", "No job with this id exists (never enqueued, or purged).",
        [ours(&TASKITO_ERROR), std::<PyKeyError>];
    JOB_TIMEOUT = "JobTimeoutError", "The job did not finish within the time given to result().",
        [ours(&TASKITO_ERROR), std::<PyTimeoutError>];
    TASK_FAILED = "TaskFailedError", "The job failed for good; carries the task's exception type name and traceback.",
        [ours(&TASKITO_ERROR)];
    TASK_TIMEOUT = "TaskTimeoutError", "Raised inside a task that ran past its time limit (timeout, soft_timeout, or the shutdown grace period).",
        [ours(&TASKITO_ERROR), std::<PyTimeoutError>];
    SIGNATURE = "SignatureError", "A payload's HMAC signature does not match: it was not written with this queue's signing key.",
        [ours(&TASKITO_ERROR), std::<PyValueError>];
    JOB_CANCELLED = "JobCancelledError", "The job was cancelled and will never produce a result.",
        [ours(&TASKITO_ERROR)];
    QUEUE_CLOSED = "QueueClosedError", "The queue was closed (or shut down) and cannot take this call.",
        [ours(&TASKITO_ERROR), std::<PyRuntimeError>];
    STORAGE = "StorageError", "The database failed or refused the operation; the message names the database file and says what to do.",
        [ours(&TASKITO_ERROR), std::<PyOSError>];
    STORAGE_NOT_FOUND = "StorageNotFoundError", "The database file or its folder does not exist and cannot be created.",
        [ours(&STORAGE), std::<PyFileNotFoundError>];
    STORAGE_PERMISSION = "StoragePermissionError", "The filesystem does not allow taskito to open or create the database.",
        [ours(&STORAGE), std::<PyPermissionError>];
    STORAGE_CONNECTION = "StorageConnectionError", "The database server cannot be reached (at start within connect_timeout, or its connection was lost and could not be replaced). The message names the host and port, never the password.",
        [ours(&STORAGE), std::<PyConnectionError>];
    TASK_INTERRUPTED = "TaskInterrupted", "Raised asynchronously inside a task to stop it: it ran past its timeout, or the worker's shutdown grace period ended. A BaseException, like KeyboardInterrupt, so that `except Exception` in task code does not swallow it. The job's outcome is already decided when it is raised.",
        [std::<PyBaseException>];
    FOREIGN_SQLITE = "ForeignSQLiteError", "Another SQLite library in this process (such as the sqlite3 module) has the database open.",
        [ours(&STORAGE)];
}

fn make_class<'py>(
    py: Python<'py>,
    name: &str,
    doc: &str,
    bases: Vec<Bound<'py, PyType>>,
) -> PyResult<Bound<'py, PyType>> {
    let namespace = PyDict::new(py);
    namespace.set_item("__doc__", doc)?;
    namespace.set_item("__module__", "taskito")?;
    // KeyError quotes its message in str(); ours read as plain sentences.
    let exception_str = PyException::type_object(py).getattr("__str__")?;
    namespace.set_item("__str__", exception_str)?;
    let bases = PyTuple::new(py, bases)?;
    let class = PyType::type_object(py).call1((name, bases, namespace))?;
    Ok(class.cast_into::<PyType>()?)
}

pub fn new_err(lock: &'static PyOnceLock<Py<PyType>>, message: String) -> PyErr {
    Python::attach(|py| PyErr::from_type(ours(lock)(py), message))
}

impl From<Error> for PyErr {
    fn from(error: Error) -> PyErr {
        let message = error.to_string();
        let class = match &error {
            Error::InvalidArgument(_) => &INVALID_ARGUMENT,
            Error::JobNotFound(_) => &JOB_NOT_FOUND,
            Error::Timeout(..) => &JOB_TIMEOUT,
            Error::Closed(_) => &QUEUE_CLOSED,
            Error::ForeignSqlite(_) => &FOREIGN_SQLITE,
            Error::Sqlite(e) => sqlite_class(e),
            Error::Database { fault, .. } => match fault {
                DatabaseFault::ReadOnly => &STORAGE_PERMISSION,
                DatabaseFault::CannotOpen => &STORAGE_NOT_FOUND,
                DatabaseFault::Locked
                | DatabaseFault::Corrupt
                | DatabaseFault::NotOurs
                | DatabaseFault::Gone
                | DatabaseFault::Other => &STORAGE,
            },
            Error::Postgres(_) => &STORAGE,
            Error::Connection(_) => &STORAGE_CONNECTION,
            Error::Io { source, .. } => match source.kind() {
                ErrorKind::NotFound => &STORAGE_NOT_FOUND,
                ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => &STORAGE_PERMISSION,
                _ => &STORAGE,
            },
        };
        new_err(class, message)
    }
}

fn sqlite_class(error: &rusqlite::Error) -> &'static PyOnceLock<Py<PyType>> {
    use rusqlite::ffi::ErrorCode;
    match error.sqlite_error_code() {
        Some(ErrorCode::CannotOpen) => &STORAGE_NOT_FOUND,
        Some(ErrorCode::PermissionDenied | ErrorCode::ReadOnly) => &STORAGE_PERMISSION,
        _ => &STORAGE,
    }
}
