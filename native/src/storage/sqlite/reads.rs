//! Looking at jobs without changing them, and turning rows back into records.
//! Every read runs on a reader connection, beside the writer.

use rusqlite::{Connection, OptionalExtension, Row};

use super::SqliteStorage;
use crate::error::{Error, Result};
use crate::job::{state_sql, ErrorRecord, Finished, JobFilter, JobRecord, State, Stats};
use crate::storage::common::timeout_from_millis;

/// What [`record`] decodes: every column of a job but its payload and
/// result, then its last error as one line.
macro_rules! record_columns {
    () => {
        "id, queue, task_name, status, priority, attempt, max_retries, retry_backoff, \
         timeout_ms, created_at, scheduled_at, started_at, finished_at, worker_id, \
         lease_expires_at, (SELECT CASE WHEN e.message = '' THEN e.error_type \
         ELSE e.error_type || ': ' || e.message END FROM job_errors e \
         WHERE e.job_id = jobs.id ORDER BY e.rowid DESC LIMIT 1)"
    };
}

/// What [`error_record`] decodes.
macro_rules! error_columns {
    () => {
        "attempt, error_type, message, traceback, failed_at"
    };
}

pub(super) const GET_JOB: &str = concat!("SELECT ", record_columns!(), " FROM jobs WHERE id = ?1");

pub(super) fn get_job(storage: &SqliteStorage, id: i64) -> Result<Option<JobRecord>> {
    storage.read(|conn| {
        Ok(conn
            .prepare_cached(GET_JOB)?
            .query_row([id], record)
            .optional()?)
    })
}

pub(super) const STATE_AND_RESULT: &str = "SELECT status, result FROM jobs WHERE id = ?1";

pub(super) fn finished(storage: &SqliteStorage, id: i64) -> Result<Option<Finished>> {
    storage.read(|conn| {
        let row: Option<(State, Option<Vec<u8>>)> = conn
            .prepare_cached(STATE_AND_RESULT)?
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

pub(super) fn list_jobs(storage: &SqliteStorage, filter: &JobFilter) -> Result<Vec<JobRecord>> {
    let (sql, values) = list_jobs_query(filter);
    storage.read(|conn| {
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(values.iter()), record)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    })
}

/// The listing `filter` asks for, newest first, and the values to bind.
pub(super) fn list_jobs_query(filter: &JobFilter) -> (String, Vec<rusqlite::types::Value>) {
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
        "SELECT {} FROM jobs {where_clause} ORDER BY id DESC LIMIT ?{} OFFSET ?{}",
        record_columns!(),
        values.len() - 1,
        values.len()
    );
    (sql, values)
}

/// Every failed attempt of job `?1`, oldest first.
pub(super) const ERRORS: &str = concat!(
    "SELECT ",
    error_columns!(),
    " FROM job_errors WHERE job_id = ?1 ORDER BY rowid"
);

pub(super) fn errors(storage: &SqliteStorage, id: i64) -> Result<Vec<ErrorRecord>> {
    storage.read(|conn| {
        let mut stmt = conn.prepare_cached(ERRORS)?;
        let rows = stmt.query_map([id], error_record)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    })
}

// Two counts, so that each is answered from a partial index alone.
pub(super) const COUNT_READY: &str = concat!(
    "SELECT COUNT(*) FROM jobs WHERE status = ",
    state_sql!(Ready)
);
pub(super) const COUNT_NOT_READY: &str = concat!(
    "SELECT status, COUNT(*) FROM jobs WHERE status <> ",
    state_sql!(Ready),
    " GROUP BY status"
);

pub(super) fn stats(storage: &SqliteStorage) -> Result<Stats> {
    storage.read(|conn| {
        // One consistent snapshot across both counts.
        let tx = conn.unchecked_transaction()?;
        let mut stats = Stats::default();
        let ready: i64 = tx
            .prepare_cached(COUNT_READY)?
            .query_row([], |r| r.get(0))?;
        stats.add(State::Ready, ready as u64);
        let mut stmt = tx.prepare_cached(COUNT_NOT_READY)?;
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

pub(super) const CANCEL_REQUESTED: &str = "SELECT cancel_requested FROM jobs WHERE id = ?1";

pub(super) fn cancel_requested(storage: &SqliteStorage, id: i64) -> Result<bool> {
    storage.read(|conn| {
        Ok(conn
            .prepare_cached(CANCEL_REQUESTED)?
            .query_row([id], |r| r.get::<_, bool>(0))
            .optional()?
            .unwrap_or(false))
    })
}

pub(super) fn state_of(row: &Row, idx: usize) -> rusqlite::Result<State> {
    let v: i64 = row.get(idx)?;
    State::from_i64(v).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Integer,
            format!("unknown job state {v}").into(),
        )
    })
}

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
        timeout: timeout_from_millis(row.get(8)?),
        created_at: row.get(9)?,
        scheduled_at: row.get(10)?,
        started_at: row.get(11)?,
        finished_at: row.get(12)?,
        worker_id: row.get(13)?,
        lease_expires_at: row.get(14)?,
        error: row.get(15)?,
    })
}

fn error_record(row: &Row) -> rusqlite::Result<ErrorRecord> {
    Ok(ErrorRecord {
        attempt: row.get(0)?,
        error_type: row.get(1)?,
        message: row.get(2)?,
        traceback: row.get(3)?,
        failed_at: row.get(4)?,
    })
}

pub(super) const LAST_ERROR: &str = concat!(
    "SELECT ",
    error_columns!(),
    " FROM job_errors WHERE job_id = ?1 ORDER BY rowid DESC LIMIT 1"
);

fn last_error(conn: &Connection, id: i64) -> Result<Option<ErrorRecord>> {
    Ok(conn
        .prepare_cached(LAST_ERROR)?
        .query_row([id], error_record)
        .optional()?)
}
