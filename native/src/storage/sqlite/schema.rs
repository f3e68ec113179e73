//! The SQLite schema, versioned through `PRAGMA user_version`.
//!
//! Each entry of [`MIGRATIONS`] moves the database from version `i` to `i + 1`.
//! Append new entries; never edit one that has shipped.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::error::{DatabaseFault, Error, Result};

// Job states are spelled as numbers here, not with `state_sql!`: a migration
// that has shipped is history and must go on creating exactly what it
// created. Renumbering a state would take a new migration that rewrites the
// rows and rebuilds these indexes. Until then the tests tie the two together:
// the partial indexes' predicates must read as the constants spell them, and
// every hot statement, written with the constants, must use its index.
pub(super) const V1: &str = r#"
-- One row per job. `id` is the time-ordered job id (see job::IdGenerator) and
-- the rowid, so enqueue order needs no index of its own.
CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY,
    queue            TEXT    NOT NULL,
    task_name        TEXT    NOT NULL,
    status           INTEGER NOT NULL,   -- job::State
    priority         INTEGER NOT NULL,
    payload          BLOB    NOT NULL,
    created_at       INTEGER NOT NULL,   -- microseconds since the epoch
    scheduled_at     INTEGER NOT NULL,   -- due time
    attempt          INTEGER NOT NULL DEFAULT 0,  -- runs started (a refunded release gives one back)
    lease_token      INTEGER NOT NULL DEFAULT 0,  -- claims so far: fences completions
    max_retries      INTEGER NOT NULL,
    retry_backoff    REAL    NOT NULL,   -- seconds
    timeout_ms       INTEGER,
    started_at       INTEGER,
    finished_at      INTEGER,
    worker_id        TEXT,               -- lease holder while running
    lease_expires_at INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,  -- cancel_running_job() asked it to stop
    result           BLOB
);

-- Claimable jobs in claim order. Partial, so the claim never scans delayed,
-- running or finished rows.
CREATE INDEX jobs_ready ON jobs (priority DESC, scheduled_at, id) WHERE status = 0;

-- Delayed jobs and retries waiting for their time.
CREATE INDEX jobs_due ON jobs (scheduled_at) WHERE status IN (1, 4);

-- Everything else by status: stats, listings, lease reaping, result purging.
CREATE INDEX jobs_status ON jobs (status, finished_at) WHERE status <> 0;

-- Every failed attempt, oldest first by rowid, for job.errors and the dead
-- letters. Attempt numbers restart when a dead job is retried, so they are
-- not a key.
CREATE TABLE job_errors (
    job_id     INTEGER NOT NULL,
    attempt    INTEGER NOT NULL,
    error_type TEXT    NOT NULL,
    message    TEXT    NOT NULL,
    traceback  TEXT    NOT NULL,
    failed_at  INTEGER NOT NULL
);
CREATE INDEX job_errors_by_job ON job_errors (job_id);
"#;

// V2: workers record themselves, so that a job waits for a worker that has
// its task instead of failing on one that does not (rolling deploys), and
// operators can see who serves the database. Jobs gain the state Claimed
// (7: held by a worker, not started), which the partial index jobs_status
// already covers (status <> 0).
pub(super) const V2: &str = r#"
-- One row per live worker: written when it starts, its heartbeat renewed with
-- its leases, deleted when it stops. A row whose expires_at has passed is a
-- worker that died; any worker deletes such rows.
CREATE TABLE workers (
    id           TEXT    PRIMARY KEY,
    host         TEXT    NOT NULL,
    pid          INTEGER NOT NULL,
    threads      INTEGER NOT NULL,
    queues       TEXT,               -- JSON array of queue names; NULL: every queue
    tasks        TEXT    NOT NULL,   -- JSON array of the task names it can run
    started_at   INTEGER NOT NULL,   -- microseconds since the epoch
    heartbeat_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
);

-- Every task name any worker has registered: a job whose task is not here
-- after the grace period will never find a worker.
CREATE TABLE known_tasks (
    name       TEXT    PRIMARY KEY,
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
) WITHOUT ROWID;
"#;

// V4: periodic schedules and rate limits (issue 12, its schedule half; V3
// is the jobs half's), shared by every worker process through the database.
pub(super) const V4: &str = r#"
-- One row per periodic schedule (@queue.periodic), upserted by every worker
-- that declares it. next_tick is the first tick not yet stored as a job:
-- the worker that stores a tick moves it on with a compare-and-set in the
-- same transaction, so each tick is enqueued once however many processes
-- serve the database.
CREATE TABLE periodic (
    name          TEXT    PRIMARY KEY,
    task_name     TEXT    NOT NULL,
    queue         TEXT    NOT NULL,
    cron          TEXT    NOT NULL,
    timezone      TEXT    NOT NULL,
    catch_up      TEXT    NOT NULL,   -- one, all or none
    payload       BLOB    NOT NULL,   -- the jobs' arguments
    priority      INTEGER NOT NULL,
    max_retries   INTEGER NOT NULL,
    retry_backoff REAL    NOT NULL,
    timeout_ms    INTEGER,
    next_tick     INTEGER NOT NULL,   -- microseconds since the epoch
    last_tick     INTEGER,            -- the latest tick stored as a job
    updated_at    INTEGER NOT NULL
) WITHOUT ROWID;

-- One token bucket per rate-limited task name (kind 'task') and queue
-- (kind 'queue'), shared by every worker: a claim refills it by the time
-- elapsed and debits what it takes, in the claim's transaction.
CREATE TABLE rate_limits (
    kind        TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    per_second  REAL    NOT NULL,
    burst       REAL    NOT NULL,
    tokens      REAL    NOT NULL,
    refilled_at INTEGER NOT NULL,     -- microseconds since the epoch
    PRIMARY KEY (kind, name)
) WITHOUT ROWID;
"#;

// V3: the jobs half of issue 12 (unique keys, dependencies, expiry,
// metadata, progress). It shipped after V4: the list is in the order the
// migrations shipped, because `user_version` counts the entries applied.
// A database at version 3 (V1, V2, V4) gets V3 as its fourth.
pub(super) const V3: &str = r#"
ALTER TABLE jobs ADD COLUMN unique_key TEXT;          -- as given at enqueue
ALTER TABLE jobs ADD COLUMN expires_at INTEGER;       -- as given at enqueue (microseconds)
ALTER TABLE jobs ADD COLUMN expiry INTEGER;           -- expires_at, until the job ends
ALTER TABLE jobs ADD COLUMN metadata TEXT;            -- JSON given at enqueue
ALTER TABLE jobs ADD COLUMN progress INTEGER;         -- 0..100, as the task reported
ALTER TABLE jobs ADD COLUMN feed INTEGER NOT NULL DEFAULT 0;          -- job::Feed
ALTER TABLE jobs ADD COLUMN pending_deps INTEGER NOT NULL DEFAULT 0;  -- dependencies not yet settled
-- What must happen when the job ends (ends.rs), as bits: 1 settle its
-- dependents, 2 free its unique key, 4 drop its expiry. 0 for plain jobs,
-- whose completion checks it and does nothing more.
ALTER TABLE jobs ADD COLUMN on_end INTEGER NOT NULL DEFAULT 0;

-- The unique key of each live job (pending, scheduled, waiting, claimed,
-- running or retrying): an enqueue with a key inserts here first and takes
-- the job it finds instead when the key is held; a job's end frees its key.
-- A table of its own, not a partial index on jobs over live states: such an
-- index would be looked at by every change of every job's status.
CREATE TABLE unique_keys (
    key    TEXT    PRIMARY KEY,
    job_id INTEGER NOT NULL
) WITHOUT ROWID;

-- Jobs that may still expire, by when. Partial on expiry alone (cleared when
-- the job ends), so that status changes never touch it.
CREATE INDEX jobs_expiry ON jobs (expiry) WHERE expiry IS NOT NULL;

-- What each job waits for, in dependency order (position). mode is
-- job::DependencyMode; satisfied turns 1 once the dependency settled, so a
-- revived dependency never settles its dependents twice.
CREATE TABLE job_dependencies (
    job_id     INTEGER NOT NULL,
    position   INTEGER NOT NULL,
    depends_on INTEGER NOT NULL,
    mode       INTEGER NOT NULL,
    satisfied  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, position)
) WITHOUT ROWID;
CREATE INDEX job_dependencies_by_parent ON job_dependencies (depends_on, satisfied);
"#;

const MIGRATIONS: &[&str] = &[V1, V2, V4, V3];

/// A table some migration creates, if a database taskito never touched
/// already has one (`jobs` first: the one users recognise).
const TAKEN_TABLE: &str = "SELECT name FROM sqlite_master WHERE type = 'table' \
     AND name IN ('jobs', 'job_errors', 'workers', 'known_tasks', 'periodic', 'rate_limits', \
     'job_dependencies', 'unique_keys') \
     ORDER BY name <> 'jobs', name LIMIT 1";

pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database up to [`VERSION`]. Safe to race from many processes:
/// the check and the upgrade run inside one `BEGIN IMMEDIATE` transaction.
pub fn migrate(conn: &mut Connection) -> Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current == VERSION {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let path = tx.path().filter(|p| !p.is_empty()).unwrap_or(":memory:");
    if current > VERSION {
        return Err(Error::invalid(format!(
            "{path} was created by a newer taskito (schema version {current}, this one knows {VERSION})"
        )));
    }
    if current == 0 {
        // Version 0 is also every database taskito never touched: one with a
        // table of our names would make a migration fail with its whole SQL
        // text. Say what is wrong instead.
        let taken: Option<String> = tx.query_row(TAKEN_TABLE, [], |r| r.get(0)).optional()?;
        if let Some(table) = taken {
            return Err(Error::Database {
                path: path.to_string(),
                fault: DatabaseFault::NotOurs,
                message: format!(
                    "{path} has a table named {table} that taskito did not create; use another file"
                ),
                source: None,
            });
        }
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    tx.commit()?;
    Ok(())
}
