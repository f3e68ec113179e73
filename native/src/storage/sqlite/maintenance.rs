//! Housekeeping a worker's maintenance thread runs on a timer: promoting jobs
//! that fell due, reaping expired leases, purging old jobs, checkpointing the
//! log, and the cheap check for other processes' commits.
//!
//! The statements that look for running or finished jobs also say the job is
//! not ready (`status <> Ready`) besides naming the states they want: that is
//! the predicate of the partial index jobs_status, which SQLite uses only when
//! a query's WHERE clause visibly implies it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rusqlite::Connection;

use super::cells::{quarantine, Cells, QuarantinedJob};
use super::ends::job_ended;
use super::outcomes::{fail_attempt, release_attempt};
use super::SqliteStorage;
use crate::error::Result;
use crate::job::{micros, state_sql, Applied, AttemptRef, Micros, State};
use crate::storage::common::worker_lost;
use crate::storage::ReapedJob;

/// Makes delayed jobs and retries due by `?1` ready.
pub(super) const PROMOTE_DUE: &str = concat!(
    "UPDATE jobs SET status = ",
    state_sql!(Ready),
    " WHERE status IN (",
    state_sql!(Scheduled, Retrying),
    ") AND scheduled_at <= ?1"
);

/// Ends jobs not started by their expiry (`?1` or before) expired, and
/// returns them (their ends drop the expiry). Written to match the partial
/// index jobs_expiry, so that jobs without an expiry cost it nothing.
pub(super) const EXPIRE_DUE: &str = concat!(
    "UPDATE jobs SET status = ",
    state_sql!(Expired),
    ", finished_at = ?1 WHERE expiry IS NOT NULL AND expiry <= ?1 AND status IN (",
    state_sql!(Ready, Scheduled, Waiting),
    ") RETURNING id"
);

/// When the next delayed job or retry falls due, or the next job expires
/// (NULL if none waits).
pub(super) const NEXT_DUE: &str = concat!(
    "SELECT MIN(t) FROM (SELECT MIN(scheduled_at) AS t FROM jobs WHERE status IN (",
    state_sql!(Scheduled, Retrying),
    ") UNION ALL SELECT MIN(expiry) FROM jobs WHERE expiry IS NOT NULL AND status IN (",
    state_sql!(Ready, Scheduled, Waiting),
    "))"
);

pub(super) fn promote_due(storage: &SqliteStorage) -> Result<Option<Micros>> {
    let now = storage.now();
    let (next, expired) = storage.write(|tx| {
        // Expired first: a job due and expired at once never runs.
        let expired: Vec<i64> = tx
            .prepare_cached(EXPIRE_DUE)?
            .query_map([now], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for &id in &expired {
            job_ended(tx, id, now)?;
        }
        tx.prepare_cached(PROMOTE_DUE)?.execute([now])?;
        let next = tx.prepare_cached(NEXT_DUE)?.query_row([], |r| r.get(0))?;
        Ok((next, !expired.is_empty()))
    })?;
    if expired {
        // Their waiters, and their dependents' (settled by their ends).
        storage.wakeups.settled();
    }
    Ok(next)
}

/// Running and claimed attempts whose lease ran out before `?1`, who held
/// them, and which of the two states each was in.
pub(super) const EXPIRED_LEASES: &str = concat!(
    "SELECT id, attempt, lease_token, max_retries, retry_backoff, worker_id, status FROM jobs \
     WHERE status <> ",
    state_sql!(Ready),
    " AND status IN (",
    state_sql!(Running, Claimed),
    ") AND lease_expires_at < ?1"
);

pub(super) fn reap_expired(storage: &SqliteStorage) -> Result<Vec<ReapedJob>> {
    let now = storage.now();
    let (reaped, quarantined, ended) = storage.write(|tx| {
        // (the attempt, who held it, its state), or the row's id and what of
        // it cannot be read.
        type Expired = std::result::Result<(AttemptRef, Option<String>, i64), (i64, String)>;
        let expired: Vec<Expired> = tx
            .prepare_cached(EXPIRED_LEASES)?
            .query_map([now], |r| {
                let mut cells = Cells::new(r);
                let id: i64 = r.get(0)?;
                let attempt = cells.get(1, "attempt");
                let token = cells.get(2, "lease_token");
                let max_retries = cells.get(3, "max_retries");
                let retry_backoff = cells.get(4, "retry_backoff");
                let worker = cells.get(5, "worker_id");
                let state: Option<i64> = cells.get(6, "status");
                Ok(
                    match (attempt, token, max_retries, retry_backoff, worker, state) {
                        (
                            Some(attempt),
                            Some(token),
                            Some(max_retries),
                            Some(retry_backoff),
                            Some(worker),
                            Some(state),
                        ) => Ok((
                            AttemptRef {
                                id,
                                attempt,
                                token,
                                max_retries,
                                retry_backoff,
                            },
                            worker,
                            state,
                        )),
                        _ => Err((id, cells.problems().unwrap_or_default())),
                    },
                )
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut reaped = Vec::with_capacity(expired.len());
        let mut quarantined = Vec::new();
        let mut ended = false;
        for found in expired {
            let (job, worker, state) = match found {
                Ok(found) => found,
                Err((id, problem)) => {
                    quarantine(tx, id, 0, &problem)?;
                    quarantined.push(QuarantinedJob { id, problem });
                    continue;
                }
            };
            let applied = if state == State::Claimed as i64 {
                // Never started: ready again, the attempt not counted.
                release_attempt(tx, &job, true, now, &mut ended)?;
                Applied::Retry(now)
            } else {
                let failure = worker_lost(worker.as_deref(), job.attempt);
                fail_attempt(tx, &job, &failure, None, now, &mut ended)?
            };
            reaped.push(ReapedJob {
                id: job.id,
                applied,
            });
        }
        Ok((reaped, quarantined, ended))
    })?;
    if ended {
        storage.wakeups.settled();
    }
    storage.quarantined.lock().extend(quarantined);
    Ok(reaped)
}

/// The error history of jobs that died before `?1`, then those jobs.
pub(super) const PURGE_DEAD_ERRORS: &str = concat!(
    "DELETE FROM job_errors WHERE job_id IN (SELECT id FROM jobs WHERE status <> ",
    state_sql!(Ready),
    " AND status = ",
    state_sql!(Dead),
    " AND finished_at < ?1)"
);
pub(super) const PURGE_DEAD: &str = concat!(
    "DELETE FROM jobs WHERE status <> ",
    state_sql!(Ready),
    " AND status = ",
    state_sql!(Dead),
    " AND finished_at < ?1"
);

pub(super) fn purge_dead(storage: &SqliteStorage, older_than: Duration) -> Result<usize> {
    let before = storage.now().saturating_sub(micros(older_than));
    storage.write(|tx| {
        tx.prepare_cached(PURGE_DEAD_ERRORS)?.execute([before])?;
        Ok(tx.prepare_cached(PURGE_DEAD)?.execute([before])?)
    })
}

/// The error history of jobs completed or cancelled before `?1`, then those
/// jobs.
pub(super) const PURGE_FINISHED_ERRORS: &str = concat!(
    "DELETE FROM job_errors WHERE job_id IN (SELECT id FROM jobs WHERE status <> ",
    state_sql!(Ready),
    " AND status IN (",
    state_sql!(Complete, Cancelled),
    ") AND finished_at < ?1)"
);
pub(super) const PURGE_FINISHED: &str = concat!(
    "DELETE FROM jobs WHERE status <> ",
    state_sql!(Ready),
    " AND status IN (",
    state_sql!(Complete, Cancelled),
    ") AND finished_at < ?1"
);

pub(super) fn purge_finished(storage: &SqliteStorage, older_than: Duration) -> Result<usize> {
    let before = storage.now().saturating_sub(micros(older_than));
    storage.write(|tx| {
        tx.prepare_cached(PURGE_FINISHED_ERRORS)?
            .execute([before])?;
        Ok(tx.prepare_cached(PURGE_FINISHED)?.execute([before])?)
    })
}

/// Below this many frames of log, checkpoints are left to later: one that
/// empties the log makes the next commit start it over, and starting over
/// syncs the log's header to disk (about a millisecond, paid by whichever
/// commit comes first, such as the first enqueue after an idle spell). A
/// short log costs readers nothing worth that.
const CHECKPOINT_FRAMES: i64 = 1000;

pub(super) fn checkpoint(storage: &SqliteStorage) -> Result<()> {
    if storage.is_memory() || storage.wal_frames.load(Ordering::Relaxed) < CHECKPOINT_FRAMES {
        return Ok(());
    }
    // From a reader connection: a PASSIVE checkpoint copies what it can
    // while writers keep appending to the log, so it never delays a
    // commit. Its fsyncs then happen here instead of inside some commit
    // that crossed the auto-checkpoint threshold.
    storage.read(|conn| {
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        Ok(())
    })?;
    // Until the writer's next commit says how long the log is again.
    storage.wal_frames.store(0, Ordering::Relaxed);
    Ok(())
}

pub(super) fn external_change(storage: &SqliteStorage) -> Result<bool> {
    if storage.is_memory() {
        return Ok(false);
    }
    let version = data_version(&storage.writer.lock())?;
    Ok(storage.last_data_version.swap(version, Ordering::Relaxed) != version)
}

/// Changes whenever another connection commits to the database; this
/// connection's own commits leave it alone.
pub(super) fn data_version(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA data_version", [], |r| r.get(0))?)
}
