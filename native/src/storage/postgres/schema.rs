//! The PostgreSQL schema, versioned in its own one-row table.
//!
//! Each entry of [`MIGRATIONS`] moves the schema from version `i` to
//! `i + 1`; append new entries, never edit one that has shipped. Migrations
//! run in one transaction under an advisory lock keyed by the schema's
//! name, so twenty workers starting at once on an empty database migrate
//! once: the first creates everything, the others wait for its commit and
//! find the version current.

use super::pool::Conn;
use crate::error::{Error, Result};

// States are spelled as numbers, as in the SQLite schema: a shipped
// migration is history. The claim order index and the partial predicates
// match the SQLite ones; statements name the states with `state_sql!`.
pub(super) const V1: &str = r#"
-- One row per job; `id` is the engine's time-ordered 64-bit id. Times are
-- the database server's (now()), never a worker's.
CREATE TABLE jobs (
    id               bigint      PRIMARY KEY,
    queue            text        NOT NULL,
    task_name        text        NOT NULL,
    status           smallint    NOT NULL,   -- job::State
    priority         bigint      NOT NULL,
    payload          bytea       NOT NULL,
    created_at       timestamptz NOT NULL,
    scheduled_at     timestamptz NOT NULL,   -- due time
    attempt          integer     NOT NULL DEFAULT 0,
    lease_token      bigint      NOT NULL DEFAULT 0,   -- claims so far: fences completions
    max_retries      bigint      NOT NULL,
    retry_backoff    float8      NOT NULL,   -- seconds
    timeout_ms       bigint,
    started_at       timestamptz,
    finished_at      timestamptz,
    worker_id        text,
    lease_expires_at timestamptz,
    cancel_requested boolean     NOT NULL DEFAULT false,
    result           bytea
);

-- Claimable jobs in claim order: the claim walks this index, skipping rows
-- other workers have locked.
CREATE INDEX jobs_ready ON jobs (priority DESC, scheduled_at, id) WHERE status = 0;
-- Delayed jobs and retries waiting for their time.
CREATE INDEX jobs_due ON jobs (scheduled_at) WHERE status IN (1, 4);
-- Everything else by status: stats, listings, lease reaping, purges.
CREATE INDEX jobs_status ON jobs (status, finished_at) WHERE status <> 0;

-- Every failed attempt, oldest first by seq.
CREATE TABLE job_errors (
    seq        bigserial   PRIMARY KEY,
    job_id     bigint      NOT NULL,
    attempt    integer     NOT NULL,
    error_type text        NOT NULL,
    message    text        NOT NULL,
    traceback  text        NOT NULL,
    failed_at  timestamptz NOT NULL
);
CREATE INDEX job_errors_by_job ON job_errors (job_id, seq);

-- The workers registry (see the SQLite schema's V2).
CREATE TABLE workers (
    id           text        PRIMARY KEY,
    host         text        NOT NULL,
    pid          bigint      NOT NULL,
    threads      bigint      NOT NULL,
    queues       text[],                 -- NULL: every queue
    tasks        text[]      NOT NULL,
    started_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL
);

CREATE TABLE known_tasks (
    name       text        PRIMARY KEY,
    first_seen timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL
);

-- Bumped (nextval) by every statement that makes jobs claimable, in the
-- same statement: idle workers whose notifications may have been lost read
-- last_value to learn cheaply whether to look for work. A sequence, not a
-- counter row: nextval takes no row lock, so writers never queue on it.
CREATE SEQUENCE changes;
"#;

// V4: periodic schedules and rate limits (see the SQLite schema's V4).
pub(super) const V4: &str = r#"
-- One row per periodic schedule; next_tick is the first tick not yet stored
-- as a job, moved on by a compare-and-set in the transaction that stores it.
CREATE TABLE periodic (
    name          text        PRIMARY KEY,
    task_name     text        NOT NULL,
    queue         text        NOT NULL,
    cron          text        NOT NULL,
    timezone      text        NOT NULL,
    catch_up      text        NOT NULL,
    payload       bytea       NOT NULL,
    priority      bigint      NOT NULL,
    max_retries   bigint      NOT NULL,
    retry_backoff float8      NOT NULL,
    timeout_ms    bigint,
    next_tick     timestamptz NOT NULL,
    last_tick     timestamptz,
    updated_at    timestamptz NOT NULL
);

-- One token bucket per rate-limited task name ('task') and queue ('queue').
CREATE TABLE rate_limits (
    kind        text        NOT NULL,
    name        text        NOT NULL,
    per_second  float8      NOT NULL,
    burst       float8      NOT NULL,
    tokens      float8      NOT NULL,
    refilled_at timestamptz NOT NULL,
    PRIMARY KEY (kind, name)
);
"#;

// V3: the jobs half of issue 12 (see the SQLite schema's V3). It shipped
// after V4, and the list is in the order migrations shipped (the version
// counts the entries applied): a schema at version 2 (V1, V4) gets V3 next.
pub(super) const V3: &str = r#"
ALTER TABLE jobs ADD COLUMN unique_key text;
ALTER TABLE jobs ADD COLUMN expires_at timestamptz;
ALTER TABLE jobs ADD COLUMN metadata text;              -- JSON given at enqueue
ALTER TABLE jobs ADD COLUMN progress smallint;          -- 0..100, as the task reported
ALTER TABLE jobs ADD COLUMN feed smallint NOT NULL DEFAULT 0;          -- job::Feed
ALTER TABLE jobs ADD COLUMN pending_deps integer NOT NULL DEFAULT 0;   -- dependencies not yet settled
ALTER TABLE jobs ADD COLUMN dependents integer NOT NULL DEFAULT 0;     -- dependency rows naming it

-- Keys and expiry are in tables of their own, not in indexes on jobs: a
-- partial index costs every claim and completion its predicate (and one
-- naming status, an entry per status change), even for jobs with neither.

-- The live job (not final) holding each key; the job's end deletes it.
CREATE TABLE unique_keys (
    key    text   PRIMARY KEY,
    job_id bigint NOT NULL
);

-- When each job that may expire does; the job's end deletes it. Only jobs
-- not started (ready, scheduled, waiting) expire: the others' rows wait
-- for their end.
CREATE TABLE job_expiry (
    job_id     bigint      PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
CREATE INDEX job_expiry_by_time ON job_expiry (expires_at);

CREATE TABLE job_dependencies (
    job_id     bigint   NOT NULL,
    position   integer  NOT NULL,
    depends_on bigint   NOT NULL,
    mode       smallint NOT NULL,          -- job::DependencyMode
    satisfied  boolean  NOT NULL DEFAULT false,
    PRIMARY KEY (job_id, position)
);
CREATE INDEX job_dependencies_by_parent ON job_dependencies (depends_on) WHERE NOT satisfied;
CREATE INDEX job_dependencies_dependents ON job_dependencies (depends_on, job_id);

-- Does what the end of job `ended` (just put in final state `state`) must:
-- frees its key, drops its expiry, settles its dependents; in the
-- statement (and transaction) that ended it. Every statement that ends
-- jobs calls it for those with a key, an expiry or dependents (see
-- `settle_ended!`), so plain jobs pay nothing (a trigger, even one whose
-- WHEN is false, cost every claim and completion about 3 µs).
CREATE FUNCTION job_ended(ended bigint, state smallint) RETURNS integer
LANGUAGE plpgsql AS $fn$
DECLARE
    job record;
BEGIN
    SELECT unique_key, expires_at, dependents INTO job FROM jobs WHERE id = ended;
    IF job.unique_key IS NOT NULL THEN
        DELETE FROM unique_keys WHERE key = job.unique_key AND job_id = ended;
    END IF;
    IF job.expires_at IS NOT NULL THEN
        DELETE FROM job_expiry WHERE job_id = ended;
    END IF;
    IF job.dependents > 0 THEN
        RETURN settle_dependents(ended, state);
    END IF;
    RETURN 0;
END
$fn$;

-- Settles the dependents of job `ended`, for `job_ended`. Dependents
-- it failed (mode success, not complete) are cancelled with an error
-- naming the step that failed, and settled in turn; the others count one
-- dependency fewer and are ready at none. Tells the listeners: work for the
-- released, finished for the cancelled. Returns the jobs it released.
CREATE FUNCTION settle_dependents(ended bigint, state smallint) RETURNS integer
LANGUAGE plpgsql AS $fn$
DECLARE
    channel text := 'taskito:' || current_schema();
    failure text;
    cancelled bigint[];
    victim record;
    released integer;
BEGIN
    IF state <> 3 THEN
        failure := COALESCE(
            (SELECT e.message FROM job_errors e WHERE e.job_id = ended
             AND e.error_type = 'DependencyFailed' ORDER BY e.seq DESC LIMIT 1),
            (SELECT 'dependency ' || lpad(to_hex(ended), 16, '0') || ' (' || j.task_name || ') '
             || CASE state WHEN 5 THEN 'died' WHEN 6 THEN 'was cancelled' ELSE 'expired' END
             FROM jobs j WHERE j.id = ended));
        WITH victims AS (
            SELECT j.id, j.attempt FROM job_dependencies d JOIN jobs j ON j.id = d.job_id
            WHERE d.depends_on = ended AND NOT d.satisfied AND d.mode = 0 AND j.status = 8
            ORDER BY j.id FOR UPDATE OF j),
        errs AS (
            INSERT INTO job_errors (job_id, attempt, error_type, message, traceback, failed_at)
            SELECT id, attempt, 'DependencyFailed', failure, '', now() FROM victims)
        SELECT array_agg(id) INTO cancelled FROM victims;
        IF cancelled IS NOT NULL THEN
            FOR victim IN
                UPDATE jobs SET status = 6, finished_at = now() WHERE id = ANY(cancelled)
                RETURNING id
            LOOP
                PERFORM job_ended(victim.id, 6::smallint);
            END LOOP;
            PERFORM pg_notify(channel, 'f' || array_to_string(cancelled, ','));
        END IF;
    END IF;
    WITH freed AS (
        UPDATE jobs j SET pending_deps = j.pending_deps - 1,
               status = CASE WHEN j.pending_deps > 1 THEN 8
                             WHEN j.scheduled_at <= now() THEN 0 ELSE 1 END
        FROM job_dependencies d
        WHERE d.depends_on = ended AND NOT d.satisfied AND (d.mode = 1 OR state = 3)
              AND j.id = d.job_id AND j.status = 8
        RETURNING j.status)
    SELECT count(*) FILTER (WHERE status <> 8) INTO released FROM freed;
    UPDATE job_dependencies SET satisfied = true WHERE depends_on = ended AND NOT satisfied;
    IF released > 0 THEN
        PERFORM pg_notify(channel, 'w'), nextval('changes');
    END IF;
    RETURN released;
END
$fn$;
"#;

const MIGRATIONS: &[&str] = &[V1, V4, V3];

pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings `schema` up to [`VERSION`], creating it on first use. Refuses a
/// schema a newer taskito wrote.
pub(crate) fn migrate(conn: &mut Conn, schema: &str) -> Result<()> {
    let table = format!("\"{schema}\".schema_version");
    // Without the lock first: a current schema needs no privilege to
    // create anything, and starting workers do not queue on the lock.
    if current_version(conn, &table)? == Some(VERSION) {
        return Ok(());
    }
    let mut tx = conn.client.transaction()?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('taskito schema ' || $1::text))",
        &[&schema],
    )?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS \"{schema}\"; \
         CREATE TABLE IF NOT EXISTS {table} (version bigint NOT NULL)"
    ))?;
    let found: Option<i64> = tx
        .query_opt(&format!("SELECT version FROM {table}"), &[])?
        .map(|row| row.get(0));
    let current = found.unwrap_or(0);
    refuse_newer(schema, current)?;
    for sql in MIGRATIONS.iter().skip(current as usize) {
        // search_path names the schema: the statements create their
        // objects in it.
        tx.batch_execute(sql)?;
    }
    if found.is_none() {
        tx.execute(&format!("INSERT INTO {table} VALUES ($1)"), &[&VERSION])?;
    } else if current != VERSION {
        tx.execute(&format!("UPDATE {table} SET version = $1"), &[&VERSION])?;
    }
    tx.commit()?;
    Ok(())
}

fn current_version(conn: &mut Conn, table: &str) -> Result<Option<i64>> {
    let exists: bool = conn
        .client
        .query_one("SELECT to_regclass($1::text) IS NOT NULL", &[&table])?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let version: Option<i64> = conn
        .client
        .query_opt(&format!("SELECT version FROM {table}"), &[])?
        .map(|row| row.get(0));
    if let Some(v) = version {
        let schema = table.split('.').next().unwrap_or(table).trim_matches('"');
        refuse_newer(schema, v)?;
    }
    Ok(version)
}

fn refuse_newer(schema: &str, version: i64) -> Result<()> {
    if version > VERSION {
        return Err(Error::invalid(format!(
            "the PostgreSQL schema {schema:?} was created by a newer taskito (schema version \
             {version}, this one knows {VERSION}): upgrade taskito, or use another schema"
        )));
    }
    Ok(())
}
