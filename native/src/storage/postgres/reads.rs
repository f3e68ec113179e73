//! Looking at jobs without changing them, and turning rows back into
//! records. Times come back as the server stamped them.

use std::time::SystemTime;

use postgres::types::ToSql;
use postgres::Row;

use super::{micros_of, PostgresStorage};
use crate::error::{Error, Result};
use crate::job::{ErrorRecord, Finished, JobFilter, JobRecord, State, Stats};
use crate::storage::common::timeout_from_millis;

/// What [`record`] decodes: every column of a job but its payload and
/// result, then its last error as one line.
macro_rules! record_columns {
    () => {
        "id, queue, task_name, status, priority, attempt, max_retries, retry_backoff, \
         timeout_ms, created_at, scheduled_at, started_at, finished_at, worker_id, \
         lease_expires_at, (SELECT CASE WHEN e.message = '' THEN e.error_type \
         ELSE e.error_type || ': ' || e.message END FROM job_errors e \
         WHERE e.job_id = jobs.id ORDER BY e.seq DESC LIMIT 1), unique_key, metadata, \
         progress, expires_at"
    };
}

/// What [`error_record`] decodes.
macro_rules! error_columns {
    () => {
        "attempt, error_type, message, traceback, failed_at"
    };
}

const GET_JOB: &str = concat!(
    "SELECT ",
    record_columns!(),
    " FROM jobs WHERE id = $1::int8"
);

pub(super) fn get_job(storage: &PostgresStorage, id: i64) -> Result<Option<JobRecord>> {
    storage.run(|conn| conn.query(GET_JOB, &[&id])?.first().map(record).transpose())
}

const STATE_AND_RESULT: &str = "SELECT status, result FROM jobs WHERE id = $1::int8";
const LAST_ERROR: &str = concat!(
    "SELECT ",
    error_columns!(),
    " FROM job_errors WHERE job_id = $1::int8 ORDER BY seq DESC LIMIT 1"
);

pub(super) fn finished(storage: &PostgresStorage, id: i64) -> Result<Option<Finished>> {
    storage.run(|conn| {
        let rows = conn.query(STATE_AND_RESULT, &[&id])?;
        let Some(row) = rows.first() else {
            return Err(Error::JobNotFound(crate::job::format_id(id)));
        };
        let state = state_of(row, 0)?;
        if !state.is_final() {
            return Ok(None);
        }
        // A job cancelled because a dependency failed has that failure as
        // its error; one cancelled on request has none.
        let error = if matches!(state, State::Dead | State::Cancelled) {
            conn.query(LAST_ERROR, &[&id])?.first().map(error_record)
        } else {
            None
        };
        Ok(Some(Finished {
            state,
            result: row.get(1),
            error,
        }))
    })
}

pub(super) fn list_jobs(storage: &PostgresStorage, filter: &JobFilter) -> Result<Vec<JobRecord>> {
    let mut clauses = Vec::new();
    let mut params: Vec<Box<dyn ToSql + Sync>> = Vec::new();
    if let Some(status) = filter.status {
        let states: Vec<String> = status
            .states()
            .iter()
            .map(|s| (*s as i64).to_string())
            .collect();
        clauses.push(format!("status IN ({})", states.join(", ")));
    }
    if let Some(queue) = &filter.queue {
        params.push(Box::new(queue.clone()));
        clauses.push(format!("queue = ${}::text", params.len()));
    }
    if let Some(task) = &filter.task_name {
        params.push(Box::new(task.clone()));
        clauses.push(format!("task_name = ${}::text", params.len()));
    }
    let where_clause = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    params.push(Box::new(i64::from(filter.limit)));
    params.push(Box::new(i64::from(filter.offset)));
    let sql = format!(
        "SELECT {} FROM jobs {where_clause} ORDER BY id DESC LIMIT ${}::int8 OFFSET ${}::int8",
        record_columns!(),
        params.len() - 1,
        params.len()
    );
    storage.run(|conn| {
        let bound: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref()).collect();
        conn.query(&sql, &bound)?.iter().map(record).collect()
    })
}

const ERRORS: &str = concat!(
    "SELECT ",
    error_columns!(),
    " FROM job_errors WHERE job_id = $1::int8 ORDER BY seq"
);

pub(super) fn errors(storage: &PostgresStorage, id: i64) -> Result<Vec<ErrorRecord>> {
    storage.run(|conn| {
        Ok(conn
            .query(ERRORS, &[&id])?
            .iter()
            .map(error_record)
            .collect())
    })
}

/// Jobs by state, in one snapshot.
const COUNT_BY_STATE: &str = "SELECT status, count(*) FROM jobs GROUP BY status";

pub(super) fn stats(storage: &PostgresStorage) -> Result<Stats> {
    storage.run(|conn| {
        let mut stats = Stats::default();
        for row in conn.query(COUNT_BY_STATE, &[])? {
            stats.add(state_of(&row, 0)?, row.get::<_, i64>(1) as u64);
        }
        Ok(stats)
    })
}

const CANCEL_REQUESTED: &str = "SELECT cancel_requested FROM jobs WHERE id = $1::int8";

pub(super) fn cancel_requested(storage: &PostgresStorage, id: i64) -> Result<bool> {
    storage.run(|conn| {
        Ok(conn
            .query(CANCEL_REQUESTED, &[&id])?
            .first()
            .is_some_and(|r| r.get(0)))
    })
}

fn state_of(row: &Row, idx: usize) -> Result<State> {
    let v: i16 = row.get(idx);
    State::from_i64(i64::from(v))
        .ok_or_else(|| Error::invalid(format!("the database holds an unknown job state {v}")))
}

fn time(row: &Row, idx: usize) -> Option<i64> {
    row.get::<_, Option<SystemTime>>(idx).map(micros_of)
}

fn record(row: &Row) -> Result<JobRecord> {
    Ok(JobRecord {
        id: row.get(0),
        queue: row.get(1),
        task_name: row.get(2),
        state: state_of(row, 3)?,
        priority: row.get(4),
        attempt: row.get::<_, i32>(5) as u32,
        max_retries: row.get::<_, i64>(6) as u32,
        retry_backoff: row.get(7),
        timeout: timeout_from_millis(row.get(8)),
        created_at: time(row, 9).unwrap_or(0),
        scheduled_at: time(row, 10).unwrap_or(0),
        started_at: time(row, 11),
        finished_at: time(row, 12),
        worker_id: row.get(13),
        lease_expires_at: time(row, 14),
        error: row.get(15),
        unique_key: row.get(16),
        metadata: row.get(17),
        progress: row.get::<_, Option<i16>>(18).map(|p| p.clamp(0, 100) as u8),
        expires_at: time(row, 19),
    })
}

fn error_record(row: &Row) -> ErrorRecord {
    ErrorRecord {
        attempt: row.get::<_, i32>(0) as u32,
        error_type: row.get(1),
        message: row.get(2),
        traceback: row.get(3),
        failed_at: micros_of(row.get(4)),
    }
}

/// The results of job `$1`'s dependencies, in dependency order.
const DEPENDENCY_RESULTS: &str = "SELECT j.result FROM job_dependencies d \
    LEFT JOIN jobs j ON j.id = d.depends_on WHERE d.job_id = $1::int8 ORDER BY d.position";

pub(super) fn dependency_results(
    storage: &PostgresStorage,
    id: i64,
) -> Result<Vec<Option<Vec<u8>>>> {
    storage.run(|conn| {
        Ok(conn
            .query(DEPENDENCY_RESULTS, &[&id])?
            .iter()
            .map(|r| r.get(0))
            .collect())
    })
}

/// The jobs job `$1` depends on (in order), then those depending on it.
const LINKS: &str = "SELECT 0, depends_on, position::int8 FROM job_dependencies \
    WHERE job_id = $1::int8 UNION ALL SELECT 1, job_id, job_id FROM job_dependencies \
    WHERE depends_on = $1::int8 ORDER BY 1, 3";

pub(super) fn links(storage: &PostgresStorage, id: i64) -> Result<(Vec<i64>, Vec<i64>)> {
    storage.run(|conn| {
        let (mut dependencies, mut dependents) = (Vec::new(), Vec::new());
        for row in conn.query(LINKS, &[&id])? {
            let side: i32 = row.get(0);
            if side == 0 {
                dependencies.push(row.get(1));
            } else {
                dependents.push(row.get(1));
            }
        }
        Ok((dependencies, dependents))
    })
}
