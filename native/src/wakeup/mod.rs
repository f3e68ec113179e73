//! Wake-ups between the producers and the workers of one database, in this
//! process and in others: a producer's commit wakes idle workers, a job
//! reaching a final state wakes whoever waits for results.
//!
//! For a SQLite file the beacons live in a small file beside the database,
//! mapped by every process that opens it (see `SharedFile`), and sleepers
//! wait on them with futexes: a wake-up crosses processes in microseconds,
//! and a notifier pays one load when no one sleeps. Where that file cannot
//! be used, and for `:memory:`, the beacons live in private memory: they
//! then wake this process only, and other processes' work is found by the
//! polls the engine keeps as a safety net.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod beacon;
mod shared_file;

use beacon::BeaconCell;
pub use beacon::{Beacon, Listening};
pub use shared_file::SharedFile;

use crate::job::Micros;

const MAGIC: u64 = u64::from_le_bytes(*b"TSKWAKE1");
/// Bumped whenever the layout of [`Board`] changes.
const LAYOUT: u32 = 1;

#[repr(C, align(64))]
struct Header {
    magic: AtomicU64,
    layout: AtomicU32,
    size: AtomicU32,
}

#[repr(C, align(64))]
struct DueCell {
    /// The earliest due time announced for a delayed job or retry, in
    /// microseconds since the epoch; `i64::MAX` when none is known.
    at: AtomicI64,
}

/// Result waiters are spread over this many beacons by job id, so that a
/// completion wakes only the waiters whose job shares its bucket.
pub const DONE_BUCKETS: usize = 64;

/// What the wake-up file holds; every field is atomic, so it can be shared
/// between processes as it is.
#[repr(C)]
pub struct Board {
    header: Header,
    /// New claimable work was committed.
    work: BeaconCell,
    /// Some job reached a final state (for waiters that watch many jobs).
    done_any: BeaconCell,
    due: DueCell,
    /// A job of this bucket reached a final state.
    done: [BeaconCell; DONE_BUCKETS],
}

impl Board {
    fn new() -> Board {
        let board = Board {
            header: Header {
                magic: AtomicU64::new(0),
                layout: AtomicU32::new(0),
                size: AtomicU32::new(0),
            },
            work: BeaconCell::default(),
            done_any: BeaconCell::default(),
            due: DueCell {
                at: AtomicI64::new(i64::MAX),
            },
            done: std::array::from_fn(|_| BeaconCell::default()),
        };
        board.initialise();
        board
    }

    /// Writes the header and clears what only live processes may hold.
    /// Called by a process that has the board to itself.
    pub(crate) fn initialise(&self) {
        if !self.is_initialised() {
            self.due.at.store(i64::MAX, Ordering::SeqCst);
            self.header.layout.store(LAYOUT, Ordering::SeqCst);
            self.header
                .size
                .store(std::mem::size_of::<Board>() as u32, Ordering::SeqCst);
            self.header.magic.store(MAGIC, Ordering::SeqCst);
        }
        for cell in [&self.work, &self.done_any].into_iter().chain(&self.done) {
            cell.reset_waiters();
        }
    }

    pub(crate) fn is_initialised(&self) -> bool {
        self.header.magic.load(Ordering::SeqCst) == MAGIC
            && self.header.layout.load(Ordering::SeqCst) == LAYOUT
            && self.header.size.load(Ordering::SeqCst) == std::mem::size_of::<Board>() as u32
    }
}

enum Memory {
    Private(Box<Board>),
    Shared(Arc<SharedFile>),
}

/// The wake-up board of one database, as one Queue (or engine) uses it.
pub struct Wakeups {
    memory: Memory,
    /// Why a database file's wake-ups stay in this process (other
    /// processes' commits are then found by polling).
    fallback: Option<String>,
    /// For a board in private memory that a feed of the database's own
    /// (PostgreSQL's LISTEN) bumps for other processes' commits: whether
    /// that feed is connected now.
    feed: Option<AtomicBool>,
}

/// How far idle workers back off their safety-net polls while a feed
/// brings other processes' wake-ups: a feed loses nothing while it is
/// connected, so the polls only cover what a reconnection could miss.
pub const FED_POLL_MAX: Duration = Duration::from_secs(1);

/// Set to `poll` to keep wake-ups inside each process, as where the
/// wake-up file cannot be used (for tests, and for filesystems whose shared
/// mappings do not work across processes).
pub const ENV_SWITCH: &str = "TASKITO_WAKEUPS";

impl Wakeups {
    /// Wake-ups within this process only: for a database no other process
    /// can open (`:memory:`).
    pub fn private() -> Wakeups {
        Wakeups {
            memory: Memory::Private(Box::new(Board::new())),
            fallback: None,
            feed: None,
        }
    }

    /// Wake-ups in private memory that the database's own notifications
    /// (PostgreSQL's LISTEN/NOTIFY, fed by a listener thread) bump for
    /// other processes' commits. They cross processes while the feed is
    /// connected (`set_fed`).
    pub fn fed() -> Wakeups {
        Wakeups {
            feed: Some(AtomicBool::new(false)),
            ..Wakeups::private()
        }
    }

    /// These wake-ups, with the reason they do not cross processes (for
    /// `fallback`).
    pub fn with_fallback(self, reason: String) -> Wakeups {
        Wakeups {
            fallback: Some(reason),
            ..self
        }
    }

    /// A fed board's feed connected or went away.
    pub fn set_fed(&self, connected: bool) {
        if let Some(feed) = &self.feed {
            feed.store(connected, Ordering::SeqCst);
        }
    }

    /// How far idle workers back off their polls for other processes'
    /// work: `configured`, or [`FED_POLL_MAX`] while a feed is connected.
    pub fn idle_poll_max(&self, configured: Duration) -> Duration {
        match &self.feed {
            Some(feed) if feed.load(Ordering::SeqCst) => FED_POLL_MAX.max(configured),
            _ => configured,
        }
    }

    /// Wake-ups shared with every process that opens the database file at
    /// `db_path`, through `<db_path>-wake`; private ones, with the reason,
    /// when that file cannot be used.
    pub fn for_database(db_path: &Path) -> Wakeups {
        let mut name = db_path.as_os_str().to_owned();
        name.push("-wake");
        let path = PathBuf::from(name);
        let reason = if std::env::var(ENV_SWITCH).is_ok_and(|v| v == "poll") {
            format!("{ENV_SWITCH}=poll")
        } else {
            match SharedFile::open(&path) {
                Ok(file) => {
                    return Wakeups {
                        memory: Memory::Shared(file),
                        fallback: None,
                        feed: None,
                    }
                }
                Err(e) => format!("cannot use {}: {e}", path.display()),
            }
        };
        Wakeups {
            fallback: Some(reason),
            ..Wakeups::private()
        }
    }

    /// Why wake-ups of a database file do not cross processes, if they do not.
    pub fn fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    fn board(&self) -> &Board {
        match &self.memory {
            Memory::Private(board) => board,
            Memory::Shared(file) => file.board(),
        }
    }

    /// True when other processes see these wake-ups (through the shared
    /// file, or a connected feed).
    pub fn crosses_processes(&self) -> bool {
        self.shared_memory()
            || self
                .feed
                .as_ref()
                .is_some_and(|feed| feed.load(Ordering::SeqCst))
    }

    /// Whether the beacons are in memory other processes map (their
    /// futexes must then not be process-private).
    fn shared_memory(&self) -> bool {
        matches!(self.memory, Memory::Shared(_))
    }

    /// The file the board is mapped from, if any.
    pub fn file(&self) -> Option<&SharedFile> {
        match &self.memory {
            Memory::Private(_) => None,
            Memory::Shared(file) => Some(file),
        }
    }

    /// Idle workers wait on this; producers notify it after committing work.
    pub fn work(&self) -> Beacon<'_> {
        Beacon::new(&self.board().work, self.shared_memory())
    }

    /// What a waiter for job `id` sleeps on.
    pub fn done_for(&self, id: i64) -> Beacon<'_> {
        let bucket = id.rem_euclid(DONE_BUCKETS as i64) as usize;
        Beacon::new(&self.board().done[bucket], self.shared_memory())
    }

    /// What a waiter for many jobs at once sleeps on (woken by any job).
    pub fn done_any(&self) -> Beacon<'_> {
        Beacon::new(&self.board().done_any, self.shared_memory())
    }

    /// Tells the waiters of these jobs that they reached a final state. Call
    /// after the commit. Costs a few loads when no one waits.
    pub fn finished(&self, ids: impl IntoIterator<Item = i64>) {
        self.done_any().notify();
        for id in ids {
            self.done_for(id).notify();
        }
    }

    /// Jobs reached a final state by a path that does not know their ids
    /// (expiry, dependencies settled in the database): wakes every waiter,
    /// and idle workers for the dependents that became ready.
    pub fn settled(&self) {
        self.work().notify();
        self.finished(0..DONE_BUCKETS as i64);
    }

    /// Records that a job falls due at `at`. True if that is earlier than
    /// every time announced before (idle workers should look again).
    pub fn announce_due(&self, at: Micros) -> bool {
        self.board().due.at.fetch_min(at, Ordering::SeqCst) > at
    }

    /// The earliest announced due time (`i64::MAX`: none).
    pub fn due_hint(&self) -> Micros {
        self.board().due.at.load(Ordering::SeqCst)
    }

    /// After promoting due jobs: the hint read before promoting (`seen`) is
    /// replaced by the next due time found in storage, unless someone
    /// announced another time meanwhile.
    pub fn settle_due(&self, seen: Micros, next: Micros) {
        let _ =
            self.board()
                .due
                .at
                .compare_exchange(seen, next, Ordering::SeqCst, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn two_opens_of_one_file_share_the_board() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let a = Wakeups::for_database(&db);
        let b = Wakeups::for_database(&db);
        let _l = a.work().listen();
        assert_eq!(b.work().waiters(), 1);
        let seen = a.work().seq();
        b.work().notify();
        assert!(a.work().wait(seen, Duration::from_secs(5)));
    }

    #[test]
    fn due_hints_keep_the_earliest_until_settled() {
        let w = Wakeups::private();
        assert!(w.announce_due(50));
        assert!(!w.announce_due(90));
        assert!(w.announce_due(20));
        let seen = w.due_hint();
        assert_eq!(seen, 20);
        w.settle_due(seen, 70);
        assert_eq!(w.due_hint(), 70);
        // An announcement between the read and the settle wins.
        let seen = w.due_hint();
        w.announce_due(10);
        w.settle_due(seen, 500);
        assert_eq!(w.due_hint(), 10);
    }

    #[test]
    fn a_file_another_program_wrote_is_not_used_while_others_hold_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let wake = dir.path().join("t.db-wake");
        std::fs::write(&wake, vec![7u8; 8192]).unwrap();
        // Another holder of the file: a lock on a separate open of it.
        let other = std::fs::File::open(&wake).unwrap();
        use std::os::fd::AsRawFd;
        assert_eq!(unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_SH) }, 0);
        let w = Wakeups::for_database(&db);
        assert!(!w.crosses_processes());
        assert!(w.fallback().unwrap().contains("another program or version"));
        drop(other);
        // Alone, a process rewrites it.
        let w = Wakeups::for_database(&db);
        assert!(w.crosses_processes(), "{:?}", w.fallback());
    }

    #[test]
    fn waiters_left_by_a_dead_process_are_cleared_by_the_next_one_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let w = Wakeups::for_database(&db);
        std::mem::forget(w.work().listen());
        assert_eq!(w.work().waiters(), 1);
        drop(w);
        let w = Wakeups::for_database(&db);
        assert_eq!(w.work().waiters(), 0);
    }

    #[test]
    fn finished_wakes_only_the_bucket_of_the_job_and_the_any_waiters() {
        let w = Wakeups::private();
        let (mine, other) = (5, 6);
        let _a = w.done_for(mine).listen();
        let _b = w.done_any().listen();
        let (seen_mine, seen_other, seen_any) = (
            w.done_for(mine).seq(),
            w.done_for(other).seq(),
            w.done_any().seq(),
        );
        let _c = w.done_for(other).listen();
        w.finished([mine]);
        assert_ne!(w.done_for(mine).seq(), seen_mine);
        assert_eq!(w.done_for(other).seq(), seen_other);
        assert_ne!(w.done_any().seq(), seen_any);
    }

    /// A waiter in a forked child is woken by a notify in the parent.
    #[test]
    fn a_notify_crosses_processes() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let parent = Wakeups::for_database(&db);
        assert!(parent.crosses_processes());
        let ready = dir.path().join("ready");
        // SAFETY: the child only makes system calls and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let w = &parent;
            let _l = w.work().listen();
            let seen = w.work().seq();
            std::fs::write(&ready, b"1").unwrap();
            let woke = w.work().wait(seen, Duration::from_secs(10));
            unsafe { libc::_exit(if woke { 0 } else { 1 }) };
        }
        let start = Instant::now();
        while !ready.exists() {
            assert!(start.elapsed() < Duration::from_secs(10));
            std::thread::yield_now();
        }
        parent.work().notify();
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }
}
