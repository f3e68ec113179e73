//! Housekeeping a worker's maintenance thread runs on a timer: promoting jobs
//! that fell due, reaping expired leases, purging old jobs, checkpointing the
//! log, and the cheap check for other processes' commits.

use std::sync::atomic::Ordering;

use rusqlite::Connection;

use super::outcomes::fail_attempt;
use super::SqliteStorage;
use crate::error::Result;
use crate::job::{AttemptRef, Micros};
use crate::storage::common::worker_lost;
use crate::storage::ReapedJob;

pub(super) fn promote_due(storage: &SqliteStorage, now: Micros) -> Result<Option<Micros>> {
    storage.write(|tx| {
        tx.prepare_cached(
            "UPDATE jobs SET status = 0 WHERE status IN (1, 4) AND scheduled_at <= ?1",
        )?
        .execute([now])?;
        Ok(tx
            .prepare_cached("SELECT MIN(scheduled_at) FROM jobs WHERE status IN (1, 4)")?
            .query_row([], |r| r.get(0))?)
    })
}

pub(super) fn reap_expired(storage: &SqliteStorage, now: Micros) -> Result<Vec<ReapedJob>> {
    storage.write(|tx| {
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
            let failure = worker_lost(worker.as_deref(), job.attempt);
            let applied = fail_attempt(tx, &job, &failure, now)?;
            reaped.push(ReapedJob {
                id: job.id,
                applied,
            });
        }
        Ok(reaped)
    })
}

pub(super) fn purge_dead(storage: &SqliteStorage, before: Micros) -> Result<usize> {
    storage.write(|tx| {
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

pub(super) fn purge_finished(storage: &SqliteStorage, before: Micros) -> Result<usize> {
    storage.write(|tx| {
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

pub(super) fn checkpoint(storage: &SqliteStorage) -> Result<()> {
    if storage.is_memory() {
        return Ok(());
    }
    // From a reader connection: a PASSIVE checkpoint copies what it can
    // while writers keep appending to the log, so it never delays a
    // commit. Its fsyncs then happen here instead of inside some commit
    // that crossed the auto-checkpoint threshold.
    storage.read(|conn| {
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        Ok(())
    })
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
