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

mod foreign;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{
    params, Connection, OpenFlags, OptionalExtension, Row, Transaction, TransactionBehavior,
};

use self::foreign::OwnedFile;
use super::{CancelRequest, ClaimRequest, DirectClaim, ReapedJob, Storage};
use crate::backoff::retry_delay;
use crate::error::{Error, Result};
use crate::job::{
    micros, now_micros, Applied, AttemptRef, ClaimedJob, ErrorRecord, Failure, Finished, JobFilter,
    JobOptions, JobRecord, Micros, Outcome, OutcomeKind, State, Stats, IDS,
};

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
        if config.path == MEMORY {
            let mut writer = Connection::open_in_memory()?;
            configure(&mut writer, &config, Role::Writer, false)?;
            schema::migrate(&mut writer)?;
            return Ok(SqliteStorage {
                writer: Mutex::new(writer),
                readers: None,
                config,
                last_data_version: AtomicI64::new(0),
                _owned: OwnedFile::none(),
            });
        }
        let path = PathBuf::from(&config.path);
        create_private_file(&path)?;
        let owned = foreign::claim_file(&path)?;
        let mut writer = open_file(&path, &config, Role::Writer)?;
        schema::migrate(&mut writer)?;
        let version = data_version(&writer)?;
        Ok(SqliteStorage {
            writer: Mutex::new(writer),
            readers: Some(Mutex::new(Vec::new())),
            config,
            last_data_version: AtomicI64::new(version),
            _owned: owned,
        })
    }

    pub fn is_memory(&self) -> bool {
        self.readers.is_none()
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction on the writer connection.
    fn write<T>(&self, f: impl FnOnce(&Transaction) -> Result<T>) -> Result<T> {
        let mut conn = self.writer.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let Some(pool) = &self.readers else {
            return f(&self.writer.lock());
        };
        let idle = pool.lock().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => open_file(Path::new(&self.config.path), &self.config, Role::Reader)?,
        };
        let out = f(&conn);
        let mut idle = pool.lock();
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        out
    }

    /// The query plan SQLite picks for `sql`, for tests that pin index use.
    #[cfg(test)]
    fn plan(&self, sql: &str) -> String {
        let conn = self.writer.lock();
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<Vec<_>>>()
            .unwrap();
        rows.join("\n")
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
    configure(&mut conn, config, role, true)?;
    Ok(conn)
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
        // A worker's maintenance thread checkpoints every 200 ms without
        // blocking anyone; the automatic checkpoint (run inside whichever
        // commit crosses the threshold, fsyncs included) stays as the safety
        // net for processes that only enqueue, at 16 MB of log instead of 4.
        conn.pragma_update(None, "wal_autocheckpoint", 4000)?;
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

fn data_version(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA data_version", [], |r| r.get(0))?)
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

fn state_of(row: &Row, idx: usize) -> rusqlite::Result<State> {
    let v: i64 = row.get(idx)?;
    State::from_i64(v).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Integer,
            format!("unknown job state {v}").into(),
        )
    })
}

fn timeout_of(ms: Option<i64>) -> Option<Duration> {
    ms.map(|ms| Duration::from_millis(ms.max(0) as u64))
}

const RECORD_COLUMNS: &str = "id, queue, task_name, status, priority, attempt, max_retries, \
    retry_backoff, timeout_ms, created_at, scheduled_at, started_at, finished_at, worker_id, \
    lease_expires_at, (SELECT CASE WHEN e.message = '' THEN e.error_type \
    ELSE e.error_type || ': ' || e.message END FROM job_errors e \
    WHERE e.job_id = jobs.id ORDER BY e.rowid DESC LIMIT 1)";

fn record(row: &Row) -> rusqlite::Result<JobRecord> {
    Ok(JobRecord {
        id: row.get(0)?,
        queue: row.get(1)?,
        task_name: row.get(2)?,
        state: state_of(row, 3)?,
        priority: row.get(4)?,
        attempt: row.get(5)?,
        max_retries: row.get(6)?,
        retry_backoff: row.get(7)?,
        timeout: timeout_of(row.get(8)?),
        created_at: row.get(9)?,
        scheduled_at: row.get(10)?,
        started_at: row.get(11)?,
        finished_at: row.get(12)?,
        worker_id: row.get(13)?,
        lease_expires_at: row.get(14)?,
        error: row.get(15)?,
    })
}

const ERROR_COLUMNS: &str = "attempt, error_type, message, traceback, failed_at";

fn error_record(row: &Row) -> rusqlite::Result<ErrorRecord> {
    Ok(ErrorRecord {
        attempt: row.get(0)?,
        error_type: row.get(1)?,
        message: row.get(2)?,
        traceback: row.get(3)?,
        failed_at: row.get(4)?,
    })
}

fn last_error(conn: &Connection, id: i64) -> Result<Option<ErrorRecord>> {
    let sql = format!(
        "SELECT {ERROR_COLUMNS} FROM job_errors WHERE job_id = ?1 ORDER BY rowid DESC LIMIT 1"
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([id], error_record)
        .optional()?)
}

/// Cancels the job if it has not started (pending, delayed or waiting to retry).
fn cancel_unstarted(tx: &Transaction, id: i64, now: Micros) -> Result<bool> {
    let changed = tx
        .prepare_cached(
            "UPDATE jobs SET status = 6, finished_at = ?2 WHERE id = ?1 AND status IN (0, 1, 4)",
        )?
        .execute(params![id, now])?;
    Ok(changed == 1)
}

fn timeout_millis(timeout: Duration) -> i64 {
    timeout.as_millis().max(1) as i64
}

/// Inserts one job per payload with one prepared statement. With `claim`,
/// the jobs start out running: claimed by that worker, first attempt, leased.
fn insert_jobs<P: AsRef<[u8]>>(
    tx: &Transaction,
    options: &JobOptions,
    payloads: &[P],
    now: Micros,
    claim: Option<&DirectClaim>,
) -> Result<Vec<i64>> {
    let due = now.saturating_add(options.delay.map(micros).unwrap_or(0));
    let state = match (claim, due > now) {
        (Some(_), _) => State::Running,
        (None, true) => State::Scheduled,
        (None, false) => State::Ready,
    };
    let mut stmt = tx.prepare_cached(
        "INSERT INTO jobs (id, payload, queue, task_name, status, priority, created_at, \
         scheduled_at, max_retries, retry_backoff, timeout_ms, attempt, lease_token, worker_id, \
         started_at, lease_expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12, ?13, ?14, ?15) \
         ON CONFLICT (id) DO NOTHING",
    )?;
    // The options are the same for every row: bind them once.
    stmt.raw_bind_parameter(3, &options.queue)?;
    stmt.raw_bind_parameter(4, &options.task_name)?;
    stmt.raw_bind_parameter(5, state as i64)?;
    stmt.raw_bind_parameter(6, options.priority)?;
    stmt.raw_bind_parameter(7, now)?;
    stmt.raw_bind_parameter(8, due)?;
    stmt.raw_bind_parameter(9, options.max_retries)?;
    stmt.raw_bind_parameter(10, options.retry_backoff)?;
    stmt.raw_bind_parameter(11, options.timeout.map(timeout_millis))?;
    stmt.raw_bind_parameter(12, claim.is_some() as i64)?;
    stmt.raw_bind_parameter(13, claim.map(|c| c.worker_id))?;
    stmt.raw_bind_parameter(14, claim.map(|_| now))?;
    stmt.raw_bind_parameter(15, claim.map(|c| now.saturating_add(micros(c.lease))))?;
    let mut ids = Vec::with_capacity(payloads.len());
    for payload in payloads {
        stmt.raw_bind_parameter(2, payload.as_ref())?;
        loop {
            let id = IDS.next();
            stmt.raw_bind_parameter(1, id)?;
            if stmt.raw_execute()? == 1 {
                ids.push(id);
                break;
            }
            // Another process took this id in the same millisecond.
            IDS.skip_past(id);
        }
    }
    Ok(ids)
}

/// Ends a failed attempt: schedules the next run, or moves the job to the
/// dead letters when it is out of attempts or the failure is not retryable.
/// A job whose cancellation was requested ends cancelled instead. Fenced like
/// every completion; returns `Stale` if the attempt no longer holds the job.
fn fail_attempt(
    tx: &Transaction,
    job: &AttemptRef,
    failure: &Failure,
    now: Micros,
) -> Result<Applied> {
    let retry = failure.retryable && job.attempt <= job.max_retries;
    let (next, due) = if retry {
        let due = now.saturating_add(micros(retry_delay(job.retry_backoff, job.attempt)));
        (
            if due == now {
                State::Ready
            } else {
                State::Retrying
            },
            due,
        )
    } else {
        (State::Dead, now)
    };
    let ended: Option<i64> = tx
        .prepare_cached(
            "UPDATE jobs SET \
               status = CASE WHEN cancel_requested THEN 6 ELSE ?3 END, \
               scheduled_at = CASE WHEN cancel_requested OR ?3 = 5 THEN scheduled_at ELSE ?4 END, \
               finished_at = CASE WHEN cancel_requested OR ?3 = 5 THEN ?5 ELSE NULL END, \
               lease_expires_at = NULL \
             WHERE id = ?1 AND status = 2 AND lease_token = ?2 \
             RETURNING status",
        )?
        .query_row(params![job.id, job.token, next as i64, due, now], |r| {
            r.get(0)
        })
        .optional()?;
    let Some(ended) = ended else {
        return Ok(Applied::Stale);
    };
    tx.prepare_cached(
        "INSERT INTO job_errors (job_id, attempt, error_type, message, traceback, failed_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        job.id,
        job.attempt,
        failure.error_type,
        failure.message,
        failure.traceback,
        now
    ])?;
    Ok(match State::from_i64(ended) {
        Some(State::Cancelled) => Applied::Cancelled,
        Some(State::Dead) => Applied::Dead,
        _ => Applied::Retry(due),
    })
}

impl Storage for SqliteStorage {
    fn enqueue(&self, options: &JobOptions, payloads: &[Vec<u8>]) -> Result<Vec<i64>> {
        options.validate()?;
        self.write(|tx| insert_jobs(tx, options, payloads, now_micros(), None))
    }

    fn enqueue_claimed(
        &self,
        options: &JobOptions,
        payload: &[u8],
        claim: &DirectClaim,
    ) -> Result<(i64, Option<ClaimedJob>)> {
        options.validate()?;
        let now = now_micros();
        let immediate = options.delay.is_none_or(|d| d.is_zero());
        self.write(|tx| {
            let others_waiting: bool = tx
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM jobs WHERE status = 0)")?
                .query_row([], |r| r.get(0))?;
            let payloads = std::slice::from_ref(&payload);
            if others_waiting || !immediate {
                // Jobs ahead of it go first: leave it to the dispatcher.
                let id = insert_jobs(tx, options, payloads, now, None)?[0];
                return Ok((id, None));
            }
            let id = insert_jobs(tx, options, payloads, now, Some(claim))?[0];
            Ok((
                id,
                Some(ClaimedJob {
                    id,
                    queue: options.queue.clone(),
                    task_name: options.task_name.clone(),
                    payload: payload.to_vec(),
                    priority: options.priority,
                    scheduled_at: now,
                    attempt: 1,
                    token: 1,
                    max_retries: options.max_retries,
                    retry_backoff: options.retry_backoff,
                    timeout: options
                        .timeout
                        .map(|t| Duration::from_millis(timeout_millis(t) as u64)),
                }),
            ))
        })
    }

    fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedJob>> {
        if request.limit == 0 {
            return Ok(Vec::new());
        }
        let queue_filter = match request.queues {
            None => String::new(),
            Some(queues) => {
                let slots: Vec<String> = (0..queues.len()).map(|i| format!("?{}", i + 5)).collect();
                format!("AND queue IN ({})", slots.join(", "))
            }
        };
        let sql = format!(
            "UPDATE jobs SET status = 2, attempt = attempt + 1, lease_token = lease_token + 1, \
             worker_id = ?1, started_at = ?2, lease_expires_at = ?3 \
             WHERE id IN (SELECT id FROM jobs WHERE status = 0 {queue_filter} \
                          ORDER BY priority DESC, scheduled_at, id LIMIT ?4) \
             RETURNING id, queue, task_name, payload, priority, scheduled_at, attempt, \
                       lease_token, max_retries, retry_backoff, timeout_ms"
        );
        let now = now_micros();
        let mut jobs = self.write(|tx| {
            let mut stmt = tx.prepare_cached(&sql)?;
            stmt.raw_bind_parameter(1, request.worker_id)?;
            stmt.raw_bind_parameter(2, now)?;
            stmt.raw_bind_parameter(3, now.saturating_add(micros(request.lease)))?;
            stmt.raw_bind_parameter(4, request.limit as i64)?;
            for (i, queue) in request.queues.unwrap_or(&[]).iter().enumerate() {
                stmt.raw_bind_parameter(i + 5, queue)?;
            }
            let mut rows = stmt.raw_query();
            let mut jobs = Vec::with_capacity(request.limit);
            while let Some(row) = rows.next()? {
                jobs.push(ClaimedJob {
                    id: row.get(0)?,
                    queue: row.get(1)?,
                    task_name: row.get(2)?,
                    payload: row.get(3)?,
                    priority: row.get(4)?,
                    scheduled_at: row.get(5)?,
                    attempt: row.get(6)?,
                    token: row.get(7)?,
                    max_retries: row.get(8)?,
                    retry_backoff: row.get(9)?,
                    timeout: timeout_of(row.get(10)?),
                });
            }
            Ok(jobs)
        })?;
        // RETURNING yields rows in update order, which SQLite does not promise
        // to match the subquery's ORDER BY.
        jobs.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then(a.scheduled_at.cmp(&b.scheduled_at))
                .then(a.id.cmp(&b.id))
        });
        Ok(jobs)
    }

    fn complete(&self, outcomes: &[Outcome]) -> Result<Vec<Applied>> {
        if outcomes.is_empty() {
            return Ok(Vec::new());
        }
        self.write(|tx| {
            let mut applied = Vec::with_capacity(outcomes.len());
            for outcome in outcomes {
                let job = &outcome.job;
                applied.push(match &outcome.kind {
                    OutcomeKind::Success(result) => {
                        let changed = tx
                            .prepare_cached(
                                "UPDATE jobs SET status = 3, result = ?3, finished_at = ?4, \
                                 lease_expires_at = NULL WHERE id = ?1 AND status = 2 AND lease_token = ?2",
                            )?
                            .execute(params![job.id, job.token, result, outcome.finished_at])?;
                        if changed == 1 {
                            Applied::Complete
                        } else {
                            Applied::Stale
                        }
                    }
                    OutcomeKind::Failure(failure) => {
                        fail_attempt(tx, job, failure, outcome.finished_at)?
                    }
                    OutcomeKind::Cancelled => {
                        let changed = tx
                            .prepare_cached(
                                "UPDATE jobs SET status = 6, finished_at = ?3, lease_expires_at = NULL \
                                 WHERE id = ?1 AND status = 2 AND lease_token = ?2",
                            )?
                            .execute(params![job.id, job.token, outcome.finished_at])?;
                        if changed == 1 {
                            Applied::Cancelled
                        } else {
                            Applied::Stale
                        }
                    }
                });
            }
            Ok(applied)
        })
    }

    fn promote_due(&self, now: Micros) -> Result<Option<Micros>> {
        self.write(|tx| {
            tx.prepare_cached(
                "UPDATE jobs SET status = 0 WHERE status IN (1, 4) AND scheduled_at <= ?1",
            )?
            .execute([now])?;
            Ok(tx
                .prepare_cached("SELECT MIN(scheduled_at) FROM jobs WHERE status IN (1, 4)")?
                .query_row([], |r| r.get(0))?)
        })
    }

    fn renew_leases(&self, jobs: &[AttemptRef], until: Micros) -> Result<usize> {
        self.write(|tx| {
            let mut stmt = tx.prepare_cached(
                "UPDATE jobs SET lease_expires_at = ?3 WHERE id = ?1 AND status = 2 AND lease_token = ?2",
            )?;
            let mut renewed = 0;
            for job in jobs {
                renewed += stmt.execute(params![job.id, job.token, until])?;
            }
            Ok(renewed)
        })
    }

    fn release(&self, jobs: &[AttemptRef], refund_attempt: bool) -> Result<usize> {
        if jobs.is_empty() {
            return Ok(0);
        }
        self.write(|tx| {
            let mut stmt = tx.prepare_cached(
                "UPDATE jobs SET status = CASE WHEN cancel_requested THEN 6 ELSE 0 END, \
                 finished_at = CASE WHEN cancel_requested THEN ?4 END, \
                 attempt = attempt - ?3, worker_id = NULL, lease_expires_at = NULL, started_at = NULL \
                 WHERE id = ?1 AND status = 2 AND lease_token = ?2",
            )?;
            let now = now_micros();
            let mut released = 0;
            for job in jobs {
                released += stmt.execute(params![job.id, job.token, refund_attempt as i64, now])?;
            }
            Ok(released)
        })
    }

    fn reap_expired(&self, now: Micros) -> Result<Vec<ReapedJob>> {
        self.write(|tx| {
            let expired: Vec<(AttemptRef, Option<String>)> = tx
                .prepare_cached(
                    "SELECT id, attempt, lease_token, max_retries, retry_backoff, worker_id FROM jobs \
                     WHERE status <> 0 AND status = 2 AND lease_expires_at < ?1",
                )?
                .query_map([now], |r| {
                    Ok((
                        AttemptRef {
                            id: r.get(0)?,
                            attempt: r.get(1)?,
                            token: r.get(2)?,
                            max_retries: r.get(3)?,
                            retry_backoff: r.get(4)?,
                        },
                        r.get(5)?,
                    ))
                })?
                .collect::<rusqlite::Result<_>>()?;
            let mut reaped = Vec::with_capacity(expired.len());
            for (job, worker) in expired {
                let failure = Failure {
                    error_type: "WorkerLost".to_string(),
                    message: format!(
                        "worker {} stopped renewing its lease on attempt {}",
                        worker.as_deref().unwrap_or("?"),
                        job.attempt
                    ),
                    traceback: String::new(),
                    retryable: true,
                };
                let applied = fail_attempt(tx, &job, &failure, now)?;
                reaped.push(ReapedJob { id: job.id, applied });
            }
            Ok(reaped)
        })
    }

    fn cancel(&self, id: i64) -> Result<bool> {
        let now = now_micros();
        self.write(|tx| cancel_unstarted(tx, id, now))
    }

    fn request_cancel(&self, id: i64) -> Result<CancelRequest> {
        let now = now_micros();
        self.write(|tx| {
            let state: Option<State> = tx
                .prepare_cached("SELECT status FROM jobs WHERE id = ?1")?
                .query_row([id], |r| state_of(r, 0))
                .optional()?;
            Ok(match state {
                None => CancelRequest::NotFound,
                Some(State::Running) => {
                    tx.prepare_cached("UPDATE jobs SET cancel_requested = 1 WHERE id = ?1")?
                        .execute([id])?;
                    CancelRequest::Requested
                }
                Some(s) if s.is_final() => CancelRequest::AlreadyFinal,
                Some(_) => {
                    cancel_unstarted(tx, id, now)?;
                    CancelRequest::Cancelled
                }
            })
        })
    }

    fn cancel_requested(&self, id: i64) -> Result<bool> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached("SELECT cancel_requested FROM jobs WHERE id = ?1")?
                .query_row([id], |r| r.get::<_, bool>(0))
                .optional()?
                .unwrap_or(false))
        })
    }

    fn retry_dead(&self, id: i64) -> Result<bool> {
        let now = now_micros();
        self.write(|tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE jobs SET status = 0, attempt = 0, scheduled_at = ?2, started_at = NULL, \
                     finished_at = NULL, worker_id = NULL, lease_expires_at = NULL, result = NULL, \
                     cancel_requested = 0 WHERE id = ?1 AND status = 5",
                )?
                .execute(params![id, now])?;
            Ok(changed == 1)
        })
    }

    fn purge_dead(&self, before: Micros) -> Result<usize> {
        self.write(|tx| {
            tx.prepare_cached(
                "DELETE FROM job_errors WHERE job_id IN (SELECT id FROM jobs \
                 WHERE status <> 0 AND status = 5 AND finished_at < ?1)",
            )?
            .execute([before])?;
            Ok(tx
                .prepare_cached(
                    "DELETE FROM jobs WHERE status <> 0 AND status = 5 AND finished_at < ?1",
                )?
                .execute([before])?)
        })
    }

    fn get_job(&self, id: i64) -> Result<Option<JobRecord>> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM jobs WHERE id = ?1");
        self.read(|conn| {
            Ok(conn
                .prepare_cached(&sql)?
                .query_row([id], record)
                .optional()?)
        })
    }

    fn finished(&self, id: i64) -> Result<Option<Finished>> {
        self.read(|conn| {
            let row: Option<(State, Option<Vec<u8>>)> = conn
                .prepare_cached("SELECT status, result FROM jobs WHERE id = ?1")?
                .query_row([id], |r| Ok((state_of(r, 0)?, r.get(1)?)))
                .optional()?;
            let Some((state, result)) = row else {
                return Err(Error::JobNotFound(crate::job::format_id(id)));
            };
            if !state.is_final() {
                return Ok(None);
            }
            let error = if state == State::Dead {
                last_error(conn, id)?
            } else {
                None
            };
            Ok(Some(Finished {
                state,
                result,
                error,
            }))
        })
    }

    fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>> {
        let mut clauses = Vec::new();
        let mut values: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(status) = filter.status {
            let states: Vec<String> = status
                .states()
                .iter()
                .map(|s| (*s as i64).to_string())
                .collect();
            clauses.push(format!("status IN ({})", states.join(", ")));
        }
        if let Some(queue) = &filter.queue {
            values.push(queue.clone().into());
            clauses.push(format!("queue = ?{}", values.len()));
        }
        if let Some(task) = &filter.task_name {
            values.push(task.clone().into());
            clauses.push(format!("task_name = ?{}", values.len()));
        }
        let where_clause = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        values.push((filter.limit as i64).into());
        values.push((filter.offset as i64).into());
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM jobs {where_clause} ORDER BY id DESC LIMIT ?{} OFFSET ?{}",
            values.len() - 1,
            values.len()
        );
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(values.iter()), record)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn errors(&self, id: i64) -> Result<Vec<ErrorRecord>> {
        let sql =
            format!("SELECT {ERROR_COLUMNS} FROM job_errors WHERE job_id = ?1 ORDER BY rowid");
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map([id], error_record)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn stats(&self) -> Result<Stats> {
        self.read(|conn| {
            // One consistent snapshot across both counts.
            let tx = conn.unchecked_transaction()?;
            let mut stats = Stats::default();
            let ready: i64 = tx
                .prepare_cached("SELECT COUNT(*) FROM jobs WHERE status = 0")?
                .query_row([], |r| r.get(0))?;
            stats.add(State::Ready, ready as u64);
            let mut stmt = tx.prepare_cached(
                "SELECT status, COUNT(*) FROM jobs WHERE status <> 0 GROUP BY status",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                stats.add(state_of(row, 0)?, row.get::<_, i64>(1)? as u64);
            }
            drop(rows);
            drop(stmt);
            tx.finish()?;
            Ok(stats)
        })
    }

    fn purge_finished(&self, before: Micros) -> Result<usize> {
        self.write(|tx| {
            tx.prepare_cached(
                "DELETE FROM job_errors WHERE job_id IN (SELECT id FROM jobs \
                 WHERE status <> 0 AND status IN (3, 6) AND finished_at < ?1)",
            )?
            .execute([before])?;
            Ok(tx
                .prepare_cached(
                    "DELETE FROM jobs WHERE status <> 0 AND status IN (3, 6) AND finished_at < ?1",
                )?
                .execute([before])?)
        })
    }

    fn checkpoint(&self) -> Result<()> {
        if self.is_memory() {
            return Ok(());
        }
        // From a reader connection: a PASSIVE checkpoint copies what it can
        // while writers keep appending to the log, so it never delays a
        // commit. Its fsyncs then happen here instead of inside some commit
        // that crossed the auto-checkpoint threshold.
        self.read(|conn| {
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
            Ok(())
        })
    }

    fn external_change(&self) -> Result<bool> {
        if self.is_memory() {
            return Ok(false);
        }
        let version = data_version(&self.writer.lock())?;
        Ok(self.last_data_version.swap(version, Ordering::Relaxed) != version)
    }
}

#[cfg(test)]
mod tests;
