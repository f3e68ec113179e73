//! The databases the engine's tests run on. Every test runs on SQLite; the
//! tests named in an `on_postgres!` list run again on PostgreSQL (when
//! TASKITO_TEST_POSTGRES_URL names a server; see `PostgresScratch`), each in
//! schemas of its own dropped afterwards. A test asks for its databases
//! through `engine()` (a private database, like `:memory:`) and
//! `file_engine(path)` (one shared by every engine opened with that path,
//! standing for processes), and does not know which backend it got.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::Engine;
use crate::storage::{PostgresScratch, SqliteConfig, SqliteStorage};

/// The PostgreSQL schemas of the test running on this thread, if it runs
/// on PostgreSQL.
struct OnPostgres {
    /// Private databases, one per `engine()` call.
    private: Vec<PostgresScratch>,
    /// Shared databases, by the path the test named.
    shared: HashMap<PathBuf, PostgresScratch>,
}

thread_local! {
    static POSTGRES: RefCell<Option<OnPostgres>> = const { RefCell::new(None) };
}

/// An engine on a private database.
pub(super) fn engine() -> Arc<Engine> {
    let storage = POSTGRES.with_borrow_mut(|pg| {
        pg.as_mut().map(|pg| {
            let scratch = PostgresScratch::new().expect("the server was there when the test began");
            let storage = scratch.open();
            pg.private.push(scratch);
            storage
        })
    });
    match storage {
        Some(storage) => Engine::new(Arc::new(storage)),
        None => Engine::new(Arc::new(
            SqliteStorage::open(SqliteConfig::new(":memory:")).unwrap(),
        )),
    }
}

/// An engine on the database at `path`; several on one path stand for
/// processes sharing it.
pub(super) fn file_engine(path: &Path) -> Arc<Engine> {
    let storage = POSTGRES.with_borrow_mut(|pg| {
        pg.as_mut().map(|pg| {
            pg.shared
                .entry(path.to_path_buf())
                .or_insert_with(|| PostgresScratch::new().expect("the server is there"))
                .open()
        })
    });
    match storage {
        Some(storage) => Engine::new(Arc::new(storage)),
        None => Engine::new(Arc::new(
            SqliteStorage::open(SqliteConfig::new(path.to_str().unwrap())).unwrap(),
        )),
    }
}

/// Runs `test` with its databases on PostgreSQL, or skips it (see
/// `PostgresScratch::new`); drops its schemas afterwards, also when it
/// fails.
pub(super) fn run_on_postgres(test: fn()) {
    if PostgresScratch::new().is_none() {
        return;
    }
    POSTGRES.set(Some(OnPostgres {
        private: Vec::new(),
        shared: HashMap::new(),
    }));
    let outcome = std::panic::catch_unwind(test);
    drop(POSTGRES.take());
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Runs the named tests of the invoking module again, on PostgreSQL.
macro_rules! on_postgres {
    ($($test:ident),+ $(,)?) => {
        mod on_postgres {
            $(
                #[test]
                fn $test() {
                    crate::engine::tests::backends::run_on_postgres(super::$test);
                }
            )+
        }
    };
}
pub(super) use on_postgres;
