//! The wake-up board of a database file, mapped from a small file beside it
//! (`<database>-wake`) by every process that opens the database.
//!
//! Every process holds a shared `flock` on the file while it has it mapped.
//! A process that can take the lock exclusively is alone: it (re)writes the
//! header and clears the waiter counts, which may have been left behind by
//! processes that crashed while waiting. Sequence numbers are never cleared:
//! waiters only compare them for change.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::Board;

/// The bytes mapped: whole pages, of which the board uses the start.
const MAPPED: usize = 8192;
const _: () = assert!(std::mem::size_of::<Board>() <= MAPPED);

/// One mapping of a wake-up file, shared by every `Wakeups` of this process
/// that opens the same file (so that two Queues on one database in one
/// process use the same words).
pub struct SharedFile {
    board: *mut Board,
    fd: libc::c_int,
    path: PathBuf,
    key: FileKey,
}

// SAFETY: the board is only accessed through atomics; the mapping and the
// descriptor stay valid until drop.
unsafe impl Send for SharedFile {}
unsafe impl Sync for SharedFile {}

/// A file's identity: device and inode.
type FileKey = (u64, u64);

/// The mappings this process has, so that each file is mapped once.
static OPEN: Mutex<Option<HashMap<FileKey, Weak<SharedFile>>>> = Mutex::new(None);

impl SharedFile {
    /// Maps `path` (created 0600 if missing), or returns the mapping this
    /// process already has of it.
    pub fn open(path: &Path) -> io::Result<Arc<SharedFile>> {
        let c_path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
        // SAFETY: plain system calls on a descriptor we own; every failure
        // closes it before returning.
        unsafe {
            let fd = libc::open(
                c_path.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_CLOEXEC,
                0o600 as libc::c_uint,
            );
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let key = match file_key(fd) {
                Ok(key) => key,
                Err(e) => {
                    libc::close(fd);
                    return Err(e);
                }
            };
            let mut open = OPEN.lock();
            let map = open.get_or_insert_with(HashMap::new);
            if let Some(existing) = map.get(&key).and_then(Weak::upgrade) {
                libc::close(fd);
                return Ok(existing);
            }
            match map_and_lock(fd) {
                Ok(board) => {
                    let file = Arc::new(SharedFile {
                        board,
                        fd,
                        path: path.to_path_buf(),
                        key,
                    });
                    map.insert(key, Arc::downgrade(&file));
                    Ok(file)
                }
                Err(e) => {
                    libc::close(fd);
                    Err(e)
                }
            }
        }
    }

    pub fn board(&self) -> &Board {
        // SAFETY: mapped for the life of self, and every field is atomic.
        unsafe { &*self.board }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True while `path` still names the file this mapping came from (it
    /// was not deleted or replaced).
    pub fn still_at_path(&self) -> bool {
        std::fs::metadata(&self.path)
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                (m.dev(), m.ino()) == self.key
            })
            .unwrap_or(false)
    }
}

impl Drop for SharedFile {
    fn drop(&mut self) {
        let mut open = OPEN.lock();
        if let Some(map) = open.as_mut() {
            if map.get(&self.key).is_some_and(|w| w.strong_count() == 0) {
                map.remove(&self.key);
            }
        }
        // SAFETY: ours to release; closing the descriptor drops the lock.
        unsafe {
            libc::munmap(self.board.cast(), MAPPED);
            libc::close(self.fd);
        }
    }
}

fn file_key(fd: libc::c_int) -> io::Result<FileKey> {
    // SAFETY: fstat fills the struct we own.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((st.st_dev as u64, st.st_ino as u64))
    }
}

/// Takes the shared lock (initialising the board first if this process is
/// alone) and maps the file.
unsafe fn map_and_lock(fd: libc::c_int) -> io::Result<*mut Board> {
    let alone = libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) == 0;
    if alone && libc::ftruncate(fd, MAPPED as libc::off_t) != 0 {
        return Err(io::Error::last_os_error());
    }
    if !alone && libc::flock(fd, libc::LOCK_SH) != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut st: libc::stat = std::mem::zeroed();
    if libc::fstat(fd, &mut st) != 0 {
        return Err(io::Error::last_os_error());
    }
    if (st.st_size as usize) < MAPPED {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the wake-up file is shorter than a board",
        ));
    }
    let addr = libc::mmap(
        std::ptr::null_mut(),
        MAPPED,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_SHARED,
        fd,
        0,
    );
    if addr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let board = addr.cast::<Board>();
    if alone {
        (*board).initialise();
        // Not atomic (the lock is dropped, then taken shared), which only
        // lets another process that is alone now initialise again: harmless.
        if libc::flock(fd, libc::LOCK_SH) != 0 {
            let e = io::Error::last_os_error();
            libc::munmap(addr, MAPPED);
            return Err(e);
        }
    } else if !(*board).is_initialised() {
        libc::munmap(addr, MAPPED);
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the wake-up file was written by another program or version",
        ));
    }
    Ok(board)
}
