//! Looking at jobs without changing them, and turning rows back into records.
//! Every read runs on a reader connection, beside the writer.

use std::sync::LazyLock;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, Row};

use super::cells::{Cells, CORRUPT};
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
         WHERE e.job_id = jobs.id ORDER BY e.rowid DESC LIMIT 1), \
         (SELECT unique_key FROM job_details WHERE job_id = jobs.id), \
         (SELECT metadata FROM job_details WHERE job_id = jobs.id), \
         (SELECT progress FROM job_details WHERE job_id = jobs.id), \
         (SELECT expires_at FROM job_details WHERE job_id = jobs.id)"
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
        // Read leniently: a row whose status is no state is not final yet
        // (maintenance quarantines it, dead, soon), and a result someone
        // stored as text is still its bytes.
        let row: Option<(Option<State>, Option<Vec<u8>>)> = conn
            .prepare_cached(STATE_AND_RESULT)?
            .query_row([id], |r| {
                let mut cells = Cells::new(r);
                Ok((cells.state(0), result_bytes(r.get_ref(1)?)))
            })
            .optional()?;
        let Some((state, result)) = row else {
            return Err(Error::JobNotFound(crate::job::format_id(id)));
        };
        let Some(state) = state.filter(|s| s.is_final()) else {
            return Ok(None);
        };
        // A job cancelled because a dependency failed has that failure as
        // its error; one cancelled on request has none.
        let error = if matches!(state, State::Dead | State::Cancelled) {
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
        "SELECT {} FROM jobs {where_clause} ORDER BY id DESC LIMIT CAST(?{} AS INTEGER) OFFSET CAST(?{} AS INTEGER)",
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
            // A status that is no state counts nowhere until maintenance
            // quarantines its rows: one bad row must not break the counts.
            if let Some(state) = Cells::new(row).state(0) {
                stats.add(state, row.get::<_, i64>(1)? as u64);
            }
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

/// How many ids one `cancel_requests` query takes (a short list is padded
/// with its last id, so that one statement is prepared and cached).
const CANCEL_LOOKUP_IDS: usize = 64;

pub(super) fn cancel_requests(storage: &SqliteStorage, ids: &[i64]) -> Result<Vec<i64>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    static SQL: LazyLock<String> = LazyLock::new(|| {
        let placeholders = vec!["?"; CANCEL_LOOKUP_IDS].join(", ");
        format!("SELECT id FROM jobs WHERE cancel_requested AND id IN ({placeholders})")
    });
    storage.read(|conn| {
        let mut stmt = conn.prepare_cached(&SQL)?;
        let mut requested = Vec::new();
        for chunk in ids.chunks(CANCEL_LOOKUP_IDS) {
            let last = chunk[chunk.len() - 1];
            let padded = chunk
                .iter()
                .copied()
                .chain(std::iter::repeat(last))
                .take(CANCEL_LOOKUP_IDS);
            let rows =
                stmt.query_map(rusqlite::params_from_iter(padded), |r| r.get::<_, i64>(0))?;
            for id in rows {
                requested.push(id?);
            }
        }
        Ok(requested)
    })
}

/// A job's record, read cell by cell: a row some other tool wrote badly is
/// still listed, its unreadable cells shown as empty or zero and named in
/// its `error` (and a status that is no state shown as dead, which the
/// quarantine makes it).
fn record(row: &Row) -> rusqlite::Result<JobRecord> {
    let mut cells = Cells::new(row);
    let mut record = JobRecord {
        id: row.get(0)?,
        queue: cells.get(1, "queue").unwrap_or_default(),
        task_name: cells.get(2, "task_name").unwrap_or_default(),
        state: cells.state(3).unwrap_or(State::Dead),
        priority: cells.get(4, "priority").unwrap_or_default(),
        attempt: cells.get(5, "attempt").unwrap_or_default(),
        max_retries: cells.get(6, "max_retries").unwrap_or_default(),
        retry_backoff: cells.get(7, "retry_backoff").unwrap_or_default(),
        timeout: timeout_from_millis(cells.get(8, "timeout_ms").flatten()),
        created_at: cells.get(9, "created_at").unwrap_or_default(),
        scheduled_at: cells.get(10, "scheduled_at").unwrap_or_default(),
        started_at: cells.get(11, "started_at").flatten(),
        finished_at: cells.get(12, "finished_at").flatten(),
        worker_id: cells.get(13, "worker_id").flatten(),
        lease_expires_at: cells.get(14, "lease_expires_at").flatten(),
        error: cells.get(15, "error").flatten(),
        unique_key: cells.get(16, "unique_key").flatten(),
        metadata: cells.get(17, "metadata").flatten(),
        progress: cells
            .get::<Option<i64>>(18, "progress")
            .flatten()
            .map(|p| p.clamp(0, 100) as u8),
        expires_at: cells.get(19, "expires_at").flatten(),
    };
    if let Some(problems) = cells.problems() {
        record.error = Some(format!(
            "{CORRUPT}: the job's row cannot be read: {problems}"
        ));
    }
    Ok(record)
}

/// A result as bytes, whatever type it was stored as.
fn result_bytes(value: ValueRef) -> Option<Vec<u8>> {
    match value {
        ValueRef::Null => None,
        ValueRef::Blob(b) | ValueRef::Text(b) => Some(b.to_vec()),
        ValueRef::Integer(v) => Some(v.to_string().into_bytes()),
        ValueRef::Real(v) => Some(v.to_string().into_bytes()),
    }
}

fn error_record(row: &Row) -> rusqlite::Result<ErrorRecord> {
    let mut cells = Cells::new(row);
    Ok(ErrorRecord {
        attempt: cells.get(0, "attempt").unwrap_or_default(),
        error_type: cells.get(1, "error_type").unwrap_or_default(),
        message: cells.get(2, "message").unwrap_or_default(),
        traceback: cells.get(3, "traceback").unwrap_or_default(),
        failed_at: cells.get(4, "failed_at").unwrap_or_default(),
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

/// The results of job `?1`'s dependencies, in dependency order (NULL for
/// one that did not complete, or that no longer exists).
pub(super) const DEPENDENCY_RESULTS: &str = "SELECT j.result FROM job_dependencies d \
    LEFT JOIN jobs j ON j.id = d.depends_on WHERE d.job_id = ?1 ORDER BY d.position";

pub(super) fn dependency_results(storage: &SqliteStorage, id: i64) -> Result<Vec<Option<Vec<u8>>>> {
    storage.read(|conn| {
        let mut stmt = conn.prepare_cached(DEPENDENCY_RESULTS)?;
        let rows = stmt.query_map([id], |r| Ok(result_bytes(r.get_ref(0)?)))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    })
}

/// The jobs job `?1` depends on, in order.
pub(super) const DEPENDENCIES: &str =
    "SELECT depends_on FROM job_dependencies WHERE job_id = ?1 ORDER BY position";
/// The jobs that depend on job `?1` (sorted into enqueue order after: the
/// index's order is by whether they settled).
pub(super) const DEPENDENTS: &str = "SELECT job_id FROM job_dependencies WHERE depends_on = ?1";

pub(super) fn links(storage: &SqliteStorage, id: i64) -> Result<(Vec<i64>, Vec<i64>)> {
    storage.read(|conn| {
        let tx = conn.unchecked_transaction()?;
        let ids = |sql: &str| -> Result<Vec<i64>> {
            let mut stmt = tx.prepare_cached(sql)?;
            let rows = stmt.query_map([id], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<i64>>>()?)
        };
        let mut dependents = ids(DEPENDENTS)?;
        dependents.sort_unstable();
        let links = (ids(DEPENDENCIES)?, dependents);
        tx.finish()?;
        Ok(links)
    })
}
