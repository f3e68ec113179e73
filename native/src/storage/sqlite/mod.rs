//! SQLite storage (rusqlite, bundled SQLite).
//!
//! One process writes through one connection behind a mutex: threads of one
//! process queue on a cheap in-process lock instead of SQLite's sleeping busy
//! handler, and batches (a whole `map()`, a claim of many jobs, many
//! completions) share one transaction and one commit. Reads use a small pool
//! of separate connections, which WAL lets run beside the writer. Other
//! processes sharing the file serialise on SQLite's own lock: every write
//! transaction is `BEGIN IMMEDIATE`, and every connection has a busy handler.
//!
//! `:memory:` is one private in-memory database per storage, reached through
//! the writer connection alone, so every thread of one Queue sees the same
//! jobs and two Queues never see each other's.
//!
//! This file opens the database and hands out connections; each operation of
//! [`Storage`] lives with its concern: `enqueue`, `claim`, `outcomes` (how
//! running jobs end or go back), `maintenance` (timers and purges) and
//! `reads`. `schema` holds the migrations, `foreign` the guard against a
//! second SQLite library in the process, `diagnose` what a SQLite error
//! means, named after the database (every error of `open`, `read` and
//! `write` goes through it). Decisions that are not SQL (retry
//! timing, claim order, a lost worker's failure) are shared with other
//! backends in `storage::common`.

mod cells;
mod claim;
mod diagnose;
mod ends;
mod enqueue;
mod foreign;
mod graph;
mod maintenance;
mod outcomes;
mod periodic;
mod rate_limits;
mod reads;
mod registry;
mod schema;

use std::ffi::c_int;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::hooks::Wal;
use rusqlite::wal::CheckpointMode;
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use self::foreign::OwnedFile;
use self::maintenance::data_version;
use super::{
    CancelRequest, ClaimRequest, DirectClaim, FiredTicks, JobScope, LimitedClaim, PeriodicRecord,
    PeriodicSchedule, QuarantinedJob, RateLimit, RateLimits, ReapedJob, Storage, UnknownTaskJob,
    WorkerRegistration,
};
use crate::error::{DatabaseFault, Error, Result};
use crate::job::{
    now_micros, Applied, AttemptRef, ClaimedJob, ErrorRecord, Finished, GraphNode, JobFilter,
    JobOptions, JobRecord, Micros, Outcome, Stats, WorkerRecord,
};
use crate::wakeup::Wakeups;

pub const MEMORY: &str = ":memory:";

/// What a commit promises (maps to `PRAGMA synchronous` under WAL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Survives a crash of the process; the last commits may be lost if the
    /// machine loses power.
    Normal,
    /// Every commit is on disk before enqueue returns: survives a power cut.
    Full,
}

impl Durability {
    pub fn parse(text: &str) -> Result<Durability> {
        match text {
            "normal" => Ok(Durability::Normal),
            "full" => Ok(Durability::Full),
            other => Err(Error::invalid(format!(
                "durability must be \"normal\" or \"full\", got {other:?}"
            ))),
        }
    }

    fn pragma(self) -> &'static str {
        match self {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        }
    }
}

#[derive(Clone, Debug)]
pub struct SqliteConfig {
    /// A file path, or `:memory:`.
    pub path: String,
    pub durability: Durability,
    /// How long a write waits for another process's lock before failing.
    pub busy_timeout: Duration,
}

impl SqliteConfig {
    pub fn new(path: impl Into<String>) -> Self {
        SqliteConfig {
            path: path.into(),
            durability: Durability::Normal,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// Idle reader connections kept for reuse; more are opened under load.
const MAX_IDLE_READERS: usize = 4;

pub struct SqliteStorage {
    writer: Mutex<Connection>,
    /// `None` for `:memory:`, where the writer connection is the database.
    readers: Option<Mutex<Vec<Connection>>>,
    config: SqliteConfig,
    last_data_version: AtomicI64,
    /// Jobs claims quarantined, until maintenance collects them to log.
    quarantined: Mutex<Vec<QuarantinedJob>>,
    /// Added to this process's clock: tests move it to make time pass.
    clock_offset: AtomicI64,
    /// Frames in the log after the writer's last commit (see
    /// `watch_log_size`): whether a checkpoint is worth its cost.
    wal_frames: Arc<AtomicI64>,
    wakeups: Wakeups,
    // Declared last so that it drops after the connections have closed.
    _owned: OwnedFile,
}

impl SqliteStorage {
    pub fn open(config: SqliteConfig) -> Result<Self> {
        if config.busy_timeout.is_zero() {
            return Err(Error::invalid("busy_timeout must be greater than 0"));
        }
        if config.path.is_empty() {
            return Err(Error::invalid("db_path must not be empty"));
        }
        let (path, busy_timeout) = (config.path.clone(), config.busy_timeout);
        Self::open_named(config).map_err(|e| diagnose::name_database(&path, busy_timeout, e))
    }

    fn open_named(config: SqliteConfig) -> Result<Self> {
        if config.path == MEMORY {
            let mut writer = Connection::open_in_memory()?;
            configure(&mut writer, &config, Role::Writer, false)?;
            schema::migrate(&mut writer)?;
            return Ok(SqliteStorage {
                writer: Mutex::new(writer),
                readers: None,
                config,
                last_data_version: AtomicI64::new(0),
                clock_offset: AtomicI64::new(0),
                wal_frames: Arc::new(AtomicI64::new(0)),
                quarantined: Mutex::new(Vec::new()),
                wakeups: Wakeups::private(),
                _owned: OwnedFile::none(),
            });
        }
        let path = PathBuf::from(&config.path);
        create_private_file(&path)?;
        let owned = foreign::claim_file(&path)?;
        let mut writer = open_file(&path, &config, Role::Writer)?;
        let wal_frames = Arc::new(AtomicI64::new(0));
        watch_log_size(&mut writer, wal_frames.clone())?;
        schema::migrate(&mut writer)?;
        let version = data_version(&writer)?;
        Ok(SqliteStorage {
            writer: Mutex::new(writer),
            readers: Some(Mutex::new(Vec::new())),
            config,
            last_data_version: AtomicI64::new(version),
            clock_offset: AtomicI64::new(0),
            wal_frames,
            quarantined: Mutex::new(Vec::new()),
            wakeups: Wakeups::for_database(&path),
            _owned: owned,
        })
    }

    pub fn is_memory(&self) -> bool {
        self.readers.is_none()
    }

    /// Now, as this backend stamps and compares times: the process's clock.
    fn now(&self) -> Micros {
        now_micros().saturating_add(self.clock_offset.load(Ordering::Relaxed))
    }

    /// Moves this storage's clock forward, for tests of leases and due times.
    #[cfg(test)]
    pub(crate) fn travel(&self, by: Duration) {
        self.clock_offset
            .fetch_add(crate::job::micros(by), Ordering::Relaxed);
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction on the writer connection.
    fn write<T>(&self, f: impl FnOnce(&Transaction) -> Result<T>) -> Result<T> {
        let mut conn = self.writer.lock();
        let out = (|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })();
        out.map_err(|e| self.name_database(e))
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let Some(pool) = &self.readers else {
            return f(&self.writer.lock()).map_err(|e| self.name_database(e));
        };
        let idle = pool.lock().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => open_file(Path::new(&self.config.path), &self.config, Role::Reader)
                .map_err(|e| self.name_database(e))?,
        };
        let out = f(&conn);
        let mut idle = pool.lock();
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        out.map_err(|e| self.name_database(e))
    }

    fn name_database(&self, error: Error) -> Error {
        diagnose::name_database(&self.config.path, self.config.busy_timeout, error)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Role {
    Writer,
    Reader,
}

fn open_file(path: &Path, config: &SqliteConfig, role: Role) -> Result<Connection> {
    // NO_MUTEX: every connection is used by one thread at a time (behind our
    // own mutex or the reader pool), so SQLite's per-call locking is waste.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags)?;
    // SQLite falls back to reading only when it cannot write the file: say
    // why now, rather than at the first write.
    if role == Role::Writer && conn.is_readonly(rusqlite::MAIN_DB)? {
        return Err(diagnose::opened_read_only());
    }
    configure(&mut conn, config, role, true)?;
    Ok(conn)
}

/// The log size at which a commit checkpoints on its own, inside the commit
/// (16 MB of 4 KB pages): the safety net for processes that run no worker,
/// whose maintenance thread checkpoints long before.
const COMMIT_CHECKPOINT_FRAMES: c_int = 4000;

/// Records in `frames` how many frames the log holds after each commit of
/// `conn`, and checkpoints within the commit past COMMIT_CHECKPOINT_FRAMES.
/// This replaces SQLite's automatic checkpoint, which is the same hook
/// without the record the maintenance thread reads.
fn watch_log_size(conn: &mut Connection, frames: Arc<AtomicI64>) -> Result<()> {
    conn.wal_hook(Some(move |wal: &mut Wal, pages: c_int| {
        frames.store(i64::from(pages), Ordering::Relaxed);
        if pages >= COMMIT_CHECKPOINT_FRAMES {
            // As SQLite's own: PASSIVE, and a busy reader only means the
            // log is copied in part, to be finished by a later checkpoint.
            let _ = wal.checkpoint_v2(CheckpointMode::PASSIVE);
        }
        Ok(())
    }))?;
    Ok(())
}

fn configure(conn: &mut Connection, config: &SqliteConfig, role: Role, file: bool) -> Result<()> {
    conn.busy_handler(Some(busy_handler(config.busy_timeout)))?;
    if file {
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::invalid(format!(
                "{} cannot use write-ahead logging (journal mode stayed {mode}); is it on a network filesystem?",
                config.path
            )));
        }
        conn.pragma_update(None, "synchronous", config.durability.pragma())?;
    }
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "cache_size", -32_000)?;
    if role == Role::Reader {
        conn.pragma_update(None, "query_only", true)?;
    }
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// Waits for another process's lock with short, growing sleeps (100 µs up to
/// 5 ms) rather than SQLite's default schedule, whose first sleeps are whole
/// milliseconds and which a queue pays on every contended commit.
fn busy_handler(timeout: Duration) -> impl FnMut(i32) -> bool + Send + 'static {
    let mut waited = Duration::ZERO;
    move |count| {
        if count == 0 {
            waited = Duration::ZERO;
        }
        if waited >= timeout {
            return false;
        }
        let step = Duration::from_micros(100 << count.clamp(0, 6)).min(Duration::from_millis(5));
        std::thread::sleep(step);
        waited += step;
        true
    }
}

/// Creates the database file readable and writable by its owner only, and its
/// folder if needed. SQLite gives the WAL and shared-memory files the same
/// permissions as the database.
fn create_private_file(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent).map_err(|e| {
                Error::io(format!("cannot create the folder {}", parent.display()), e)
            })?;
        }
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if path.is_dir() {
                return Err(Error::invalid(format!(
                    "db_path {} is a folder, not a database file",
                    path.display()
                )));
            }
            Ok(())
        }
        Err(e) => Err(Error::io(format!("cannot create {}", path.display()), e)),
    }
}

/// Each operation lives with its concern; this table only routes to it.
impl Storage for SqliteStorage {
    fn enqueue(&self, options: &JobOptions, payloads: &[Vec<u8>]) -> Result<Vec<i64>> {
        enqueue::enqueue(self, options, payloads)
    }

    fn enqueue_claimed(
        &self,
        options: &JobOptions,
        payload: &[u8],
        claim: &DirectClaim,
    ) -> Result<(i64, Option<ClaimedJob>)> {
        enqueue::enqueue_claimed(self, options, payload, claim)
    }

    fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedJob>> {
        claim::claim(self, request)
    }

    fn start_claimed(&self, jobs: &[AttemptRef]) -> Result<Vec<bool>> {
        claim::start_claimed(self, jobs)
    }

    fn best_ready_priority(&self, scope: JobScope) -> Result<Option<i64>> {
        claim::best_ready_priority(self, scope)
    }

    fn complete(&self, outcomes: &[Outcome]) -> Result<Vec<Applied>> {
        outcomes::complete(self, outcomes)
    }

    fn promote_due(&self) -> Result<Option<Micros>> {
        maintenance::promote_due(self)
    }

    fn renew_leases(&self, jobs: &[AttemptRef], lease: Duration) -> Result<usize> {
        outcomes::renew_leases(self, jobs, lease)
    }

    fn release(&self, jobs: &[AttemptRef], refund_attempt: bool) -> Result<usize> {
        outcomes::release(self, jobs, refund_attempt)
    }

    fn reap_expired(&self) -> Result<Vec<ReapedJob>> {
        maintenance::reap_expired(self)
    }

    fn cancel(&self, id: i64) -> Result<bool> {
        outcomes::cancel(self, id)
    }

    fn request_cancel(&self, id: i64) -> Result<CancelRequest> {
        outcomes::request_cancel(self, id)
    }

    fn cancel_requested(&self, id: i64) -> Result<bool> {
        reads::cancel_requested(self, id)
    }

    fn cancel_requests(&self, ids: &[i64]) -> Result<Vec<i64>> {
        reads::cancel_requests(self, ids)
    }

    fn retry_dead(&self, id: i64) -> Result<bool> {
        outcomes::retry_dead(self, id)
    }

    fn purge_dead(&self, older_than: Duration) -> Result<usize> {
        maintenance::purge_dead(self, older_than)
    }

    fn get_job(&self, id: i64) -> Result<Option<JobRecord>> {
        reads::get_job(self, id)
    }

    fn finished(&self, id: i64) -> Result<Option<Finished>> {
        reads::finished(self, id)
    }

    fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>> {
        reads::list_jobs(self, filter)
    }

    fn errors(&self, id: i64) -> Result<Vec<ErrorRecord>> {
        reads::errors(self, id)
    }

    fn stats(&self) -> Result<Stats> {
        reads::stats(self)
    }

    fn purge_finished(&self, older_than: Duration) -> Result<usize> {
        maintenance::purge_finished(self, older_than)
    }

    fn external_change(&self) -> Result<bool> {
        maintenance::external_change(self)
    }

    fn checkpoint(&self) -> Result<()> {
        maintenance::checkpoint(self)
    }

    fn wakeups(&self) -> &Wakeups {
        &self.wakeups
    }

    fn register_worker(&self, worker: &WorkerRegistration) -> Result<()> {
        registry::register_worker(self, worker)
    }

    fn renew_worker(&self, id: &str, lease: Duration) -> Result<bool> {
        registry::renew_worker(self, id, lease)
    }

    fn check_still_there(&self) -> Result<()> {
        let path = Path::new(&self.config.path);
        if self._owned.still_at(path) {
            return Ok(());
        }
        Err(Error::Database {
            path: self.config.path.clone(),
            fault: DatabaseFault::Gone,
            message: format!(
                "{} was deleted or replaced while it was open: jobs written now would go to a \
                 file no other process opens; stopping (restore the file, or start the worker \
                 again to use the new one)",
                path.display()
            ),
            source: None,
        })
    }

    fn quarantine_unreadable(&self) -> Result<Vec<QuarantinedJob>> {
        let mut found = self.write(cells::quarantine_unknown_states)?;
        found.append(&mut self.quarantined.lock());
        Ok(found)
    }

    fn unregister_worker(&self, id: &str) -> Result<()> {
        registry::unregister_worker(self, id)
    }

    fn workers(&self) -> Result<Vec<WorkerRecord>> {
        registry::workers(self)
    }

    fn forget_lapsed_workers(&self) -> Result<usize> {
        registry::forget_lapsed_workers(self)
    }

    fn unserved_tasks(&self) -> Result<Vec<(String, u64)>> {
        registry::unserved_tasks(self)
    }

    fn fail_unknown_tasks(&self, grace: Option<Duration>) -> Result<Vec<UnknownTaskJob>> {
        registry::fail_unknown_tasks(self, grace)
    }

    // Schedule half of scheduling and workflows

    fn register_periodic(&self, schedules: &[PeriodicSchedule]) -> Result<()> {
        periodic::register_periodic(self, schedules)
    }

    fn fire_periodic(&self, names: &[String]) -> Result<FiredTicks> {
        periodic::fire_periodic(self, names)
    }

    fn periodic(&self) -> Result<Vec<PeriodicRecord>> {
        periodic::periodic(self)
    }

    fn configure_rate_limits(&self, limits: &[RateLimit]) -> Result<()> {
        rate_limits::configure_rate_limits(self, limits)
    }

    fn claim_limited(&self, request: &ClaimRequest, limits: &RateLimits) -> Result<LimitedClaim> {
        rate_limits::claim_limited(self, request, limits)
    }

    fn payload(&self, id: i64) -> Result<Option<Vec<u8>>> {
        periodic::payload(self, id)
    }

    // Jobs half of scheduling and workflows

    fn enqueue_graph(&self, nodes: &[GraphNode]) -> Result<Vec<i64>> {
        graph::enqueue_graph(self, nodes)
    }

    fn dependency_results(&self, id: i64) -> Result<Vec<Option<Vec<u8>>>> {
        reads::dependency_results(self, id)
    }

    fn links(&self, id: i64) -> Result<(Vec<i64>, Vec<i64>)> {
        reads::links(self, id)
    }

    fn record_progress(&self, progress: &[(i64, u8)]) -> Result<()> {
        outcomes::record_progress(self, progress)
    }
}

#[cfg(test)]
mod tests;
