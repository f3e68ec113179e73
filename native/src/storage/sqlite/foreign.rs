//! Guard against a second SQLite library opening our database in-process.
//!
//! taskito links its own SQLite. POSIX file locks belong to a process, not to
//! a file descriptor, and SQLite only copes with that inside one copy of the
//! library: a second copy (Python's `sqlite3` module, say) opening the same
//! file takes locks our copy believes it holds, truncates the shared-memory
//! WAL index our copy has mapped (SIGBUS), and releases our locks when it
//! closes its descriptor. So before the first connection to a file opens, we
//! refuse if any descriptor in this process already points at the database,
//! its WAL or its shared-memory file. The rule for users: read the database
//! through the Queue API, never through `sqlite3`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use crate::error::{Error, Result};

type FileKey = (u64, u64);

/// Files this library has open, with how many storages hold each.
static OPEN_FILES: Mutex<Option<HashMap<FileKey, usize>>> = Mutex::new(None);

/// Keeps a database file registered as ours while a storage uses it.
#[derive(Debug)]
pub struct OwnedFile {
    key: Option<FileKey>,
}

impl OwnedFile {
    /// True while `path` still names the file that was opened (it was not
    /// deleted, or replaced by another file). Always true for no file.
    pub fn still_at(&self, path: &Path) -> bool {
        self.key.is_none_or(|key| file_key(path) == Some(key))
    }

    /// For databases that are not files.
    pub fn none() -> Self {
        OwnedFile { key: None }
    }
}

impl Drop for OwnedFile {
    fn drop(&mut self) {
        let Some(key) = self.key else { return };
        let mut open = OPEN_FILES.lock();
        if let Some(map) = open.as_mut() {
            if let Some(count) = map.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    map.remove(&key);
                }
            }
        }
    }
}

/// Registers `db_path` (which must exist) as opened by this library, after
/// checking that no other SQLite copy in the process has it open.
pub fn claim_file(db_path: &Path) -> Result<OwnedFile> {
    let Some(key) = file_key(db_path) else {
        return Ok(OwnedFile { key: None });
    };
    let mut open = OPEN_FILES.lock();
    let map = open.get_or_insert_with(HashMap::new);
    if !map.contains_key(&key) {
        if let Some(fd) = foreign_descriptor(db_path) {
            return Err(Error::ForeignSqlite(format!(
                "{} is already open in this process outside taskito ({}). Two copies of \
                 SQLite in one process (taskito's and, for example, Python's sqlite3 module) \
                 break each other's file locks and can crash with SIGBUS. Close that \
                 connection, and read the database through the Queue API instead.",
                db_path.display(),
                fd.display()
            )));
        }
    }
    *map.entry(key).or_insert(0) += 1;
    Ok(OwnedFile { key: Some(key) })
}

#[cfg(unix)]
fn file_key(path: &Path) -> Option<FileKey> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_key(_path: &Path) -> Option<FileKey> {
    None
}

/// The first descriptor of this process that points at the database or one of
/// its companion files. Only Linux exposes descriptors this cheaply; elsewhere
/// the check is skipped (and the documented rule still applies).
fn foreign_descriptor(db_path: &Path) -> Option<PathBuf> {
    let mut targets = Vec::new();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = db_path.as_os_str().to_owned();
        name.push(suffix);
        if let Some(key) = file_key(Path::new(&name)) {
            targets.push(key);
        }
    }
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    for entry in entries.flatten() {
        let fd_path = entry.path();
        if let Some(key) = file_key(&fd_path) {
            if targets.contains(&key) {
                return Some(std::fs::read_link(&fd_path).unwrap_or(fd_path));
            }
        }
    }
    None
}
