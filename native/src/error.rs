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

    /// The database refused an operation (locked past the busy timeout, corrupt, full...).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),

    /// The filesystem refused to create or open the database.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl Error {
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
