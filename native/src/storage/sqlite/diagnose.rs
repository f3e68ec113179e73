//! What a failed database operation means, said with the database's name.
//!
//! Every error SQLite raises through [`SqliteStorage`](super::SqliteStorage)
//! (opening the file, a read, a write) passes through [`name_database`] on its
//! way out, so that an operator reading it learns which file, what went wrong
//! and what to do, instead of SQLite's bare "unable to open database file".

use std::path::Path;
use std::time::Duration;

use rusqlite::ffi::ErrorCode;

use crate::error::{DatabaseFault, Error};

/// `error` with the database `path` named, when it is SQLite's; other errors
/// (a job that does not exist, a bad argument) pass through unchanged.
pub(super) fn name_database(path: &str, busy_timeout: Duration, error: Error) -> Error {
    let Error::Sqlite(source) = error else {
        return error;
    };
    let (fault, message) = match source.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => (
            DatabaseFault::Locked,
            format!(
                "{path} is locked by another process for more than {}s (busy_timeout); \
                 a long write transaction holds it there (a backup, a sqlite3 shell, a stuck \
                 process?): end it, or raise busy_timeout",
                busy_timeout.as_secs_f64()
            ),
        ),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => (
            DatabaseFault::Corrupt,
            format!(
                "{path} is not a SQLite database or is corrupt ({source}); point db_path at \
                 another file, or restore this one from a backup"
            ),
        ),
        Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => read_only(path, &source),
        Some(ErrorCode::CannotOpen) => match unwritable(Path::new(path)) {
            Some(_) => read_only(path, &source),
            None => (
                DatabaseFault::CannotOpen,
                format!("cannot open {path} ({source}); does its folder exist, and may this user read it?"),
            ),
        },
        Some(ErrorCode::DiskFull) => (
            DatabaseFault::Other,
            format!("the disk holding {path} is full ({source}); free some space"),
        ),
        _ => (DatabaseFault::Other, format!("{path}: database error: {source}")),
    };
    Error::Database {
        path: path.to_string(),
        fault,
        message,
        source: Some(source),
    }
}

/// SQLite's error for a database opened read-only although it was asked
/// for read and write (it falls back silently when it cannot write).
pub(super) fn opened_read_only() -> Error {
    Error::Sqlite(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
        Some("SQLite could open it for reading only".into()),
    ))
}

fn read_only(path: &str, source: &rusqlite::Error) -> (DatabaseFault, String) {
    let reason = unwritable(Path::new(path)).unwrap_or_else(|| source.to_string());
    (
        DatabaseFault::ReadOnly,
        format!(
            "cannot write to {path}: {reason}; taskito writes the file and creates its -wal and \
             -shm files beside it: fix the permissions, or put the database on a writable filesystem"
        ),
    )
}

/// Why this process cannot write the database or, failing that, the folder
/// its -wal and -shm files are created in; None when it can write both.
/// Asks the kernel (`access`) rather than opening the file: closing a
/// descriptor on the database would drop the locks SQLite holds on it.
fn unwritable(path: &Path) -> Option<String> {
    if let Some(error) = access_error(path, libc::W_OK) {
        return Some(error.to_string());
    }
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    access_error(folder, libc::W_OK | libc::X_OK)
        .map(|error| format!("its folder {} is not writable ({error})", folder.display()))
}

#[cfg(unix)]
fn access_error(path: &Path, mode: libc::c_int) -> Option<std::io::Error> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call.
    let status = unsafe { libc::access(c_path.as_ptr(), mode) };
    (status != 0).then(std::io::Error::last_os_error)
}

#[cfg(not(unix))]
fn access_error(_path: &Path, _mode: libc::c_int) -> Option<std::io::Error> {
    None
}
