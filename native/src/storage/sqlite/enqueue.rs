//! Putting jobs in: batches in one transaction, and the lone job its own
//! process may claim on the way in.

use rusqlite::Transaction;

use super::SqliteStorage;
use crate::error::Result;
use crate::job::{micros, state_sql, ClaimedJob, JobOptions, Micros, IDS};
use crate::storage::common::{claimed_at_enqueue, due_time, initial_state, timeout_millis};
use crate::storage::DirectClaim;

pub(super) fn enqueue(
    storage: &SqliteStorage,
    options: &JobOptions,
    payloads: &[Vec<u8>],
) -> Result<Vec<i64>> {
    options.validate()?;
    let now = storage.now();
    storage.write(|tx| insert_jobs(tx, options, payloads, now, None))
}

/// Whether a claimable job is waiting: a job enqueued now would queue behind it.
pub(super) const WAITING_JOB_EXISTS: &str = concat!(
    "SELECT EXISTS (SELECT 1 FROM jobs WHERE status = ",
    state_sql!(Ready),
    ")"
);

pub(super) fn enqueue_claimed(
    storage: &SqliteStorage,
    options: &JobOptions,
    payload: &[u8],
    claim: &DirectClaim,
) -> Result<(i64, Option<ClaimedJob>)> {
    options.validate()?;
    let now = storage.now();
    let immediate = options.delay.is_none_or(|d| d.is_zero());
    storage.write(|tx| {
        let others_waiting: bool = tx
            .prepare_cached(WAITING_JOB_EXISTS)?
            .query_row([], |r| r.get(0))?;
        let payloads = std::slice::from_ref(&payload);
        if others_waiting || !immediate {
            // Jobs ahead of it go first: leave it to the dispatcher.
            let id = insert_jobs(tx, options, payloads, now, None)?[0];
            return Ok((id, None));
        }
        let id = insert_jobs(tx, options, payloads, now, Some(claim))?[0];
        Ok((id, Some(claimed_at_enqueue(id, options, payload, now))))
    })
}

/// One job. `?12` is both its attempt and its lease token: 1 (with `?13` to
/// `?15` set) when it is claimed as it goes in, else 0. An id another process
/// took in the same millisecond inserts nothing.
const INSERT_JOB: &str = "INSERT INTO jobs (id, payload, queue, task_name, status, priority, \
    created_at, scheduled_at, max_retries, retry_backoff, timeout_ms, attempt, lease_token, \
    worker_id, started_at, lease_expires_at) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12, ?13, ?14, ?15) \
    ON CONFLICT (id) DO NOTHING";

/// Inserts one job per payload with one prepared statement. With `claim`,
/// the jobs start out running: claimed by that worker, first attempt, leased.
fn insert_jobs<P: AsRef<[u8]>>(
    tx: &Transaction,
    options: &JobOptions,
    payloads: &[P],
    now: Micros,
    claim: Option<&DirectClaim>,
) -> Result<Vec<i64>> {
    let due = due_time(options, now);
    let state = initial_state(claim.is_some(), due, now);
    let mut stmt = tx.prepare_cached(INSERT_JOB)?;
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
