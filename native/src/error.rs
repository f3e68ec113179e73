//! The engine's one error type. The Python bindings map every variant to a
//! class of the `TaskitoError` hierarchy (see `python/errors.rs`).

use std::io;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A caller passed a value the engine cannot accept.
    #[error("{0}")]
    InvalidArgument(String),

    /// No job with this id exists (never enqueued, or purged).
    #[error("no job with id {0}")]
    JobNotFound(String),

    /// A wait ran out of time before the job reached a final state.
    #[error("job {0} did not finish within {1:.3}s")]
    Timeout(String, f64),

    /// The queue (or its worker) has been shut down.
    #[error("{0}")]
    Closed(String),

    /// Another SQLite library in this process holds the same database file open.
    #[error("{0}")]
    ForeignSqlite(String),

    /// SQLite failed, before the storage said which database and why (see
    /// [`Error::Database`], what the storage returns instead).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),

    /// The database refused or failed an operation: `message` names the
    /// file and says what to do. `source` is SQLite's own error, if any.
    #[error("{message}")]
    Database {
        path: String,
        fault: DatabaseFault,
        message: String,
        #[source]
        source: Option<rusqlite::Error>,
    },

    /// PostgreSQL refused an operation. Shown with its causes (the
    /// server's message), never with the connection's password.
    #[error("PostgreSQL error: {}", describe_postgres(.0))]
    Postgres(#[from] postgres::Error),

    /// The database server cannot be reached (at start, or its connection
    /// was lost and could not be replaced). Names the server, never the
    /// password.
    #[error("{0}")]
    Connection(String),

    /// The filesystem refused to create or open the database.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

/// What kind of trouble a [`Error::Database`] is, for whoever must react to it
/// (the Python bindings choose an exception class by it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatabaseFault {
    /// Another process held the database's lock past the busy timeout.
    Locked,
    /// The file, or the folder its companion files go in, cannot be written.
    ReadOnly,
    /// The file cannot be opened (a missing folder, say).
    CannotOpen,
    /// The file is not a SQLite database, or it is damaged.
    Corrupt,
    /// A SQLite database whose tables taskito did not create.
    NotOurs,
    /// The file was deleted or replaced while it was open: what is written
    /// now would go to a file no one else will ever open.
    Gone,
    /// Anything else SQLite reports (disk full, I/O error...).
    Other,
}

/// A PostgreSQL error and its causes, one after the other: the driver's own
/// text says only what kind of error it was ("db error").
pub fn describe_postgres(error: &postgres::Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

impl Error {
    /// SQLite's own error behind this one, whether the storage has named the
    /// database yet or not: what code that reacts to a SQLite error code
    /// should look at.
    pub fn sqlite(&self) -> Option<&rusqlite::Error> {
        match self {
            Error::Sqlite(e) => Some(e),
            Error::Database { source, .. } => source.as_ref(),
            _ => None,
        }
    }

    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidArgument(message.into())
    }
}
