//! Housekeeping a worker's maintenance thread (and its dispatcher) runs on
//! a timer: promoting jobs that fell due, reaping expired leases, purging
//! old jobs, and the cheap check for work that no notification announced.

use std::sync::atomic::Ordering;
use std::sync::LazyLock;
use std::time::Duration;

use super::outcomes::{complete, release_ids};
use super::PostgresStorage;
use crate::error::Result;
use crate::job::OutcomeKind;
use crate::job::{micros, now_micros, state_sql, Applied, AttemptRef, Micros, Outcome, State};
use crate::storage::common::worker_lost;
use crate::storage::ReapedJob;

/// Ends jobs not started by their `expires_at` expired (and settles their
/// dependents: cancels or releases them and tells the listeners), then
/// makes delayed jobs and retries due by now ready (skipping rows another
/// promoter has locked: it promotes them), notifies if any became ready or
/// ended, and says in how many µs the next waiting job falls due or
/// expires.
const PROMOTE_DUE: &str = concat!(
    "WITH expired AS (UPDATE jobs SET status = ",
    state_sql!(Expired),
    ", finished_at = now() WHERE id = ANY(ARRAY(SELECT j.id FROM job_expiry x \
     JOIN jobs j ON j.id = x.job_id WHERE x.expires_at <= now() AND j.status IN (",
    state_sql!(Ready, Scheduled, Waiting),
    ") FOR UPDATE OF j SKIP LOCKED)) RETURNING id, status, dependents, unique_key, expires_at), \
     due AS (UPDATE jobs SET status = ",
    state_sql!(Ready),
    " WHERE id = ANY(ARRAY(SELECT id FROM jobs WHERE status IN (",
    state_sql!(Scheduled, Retrying),
    ") AND scheduled_at <= now() AND id NOT IN (SELECT id FROM expired) \
     FOR UPDATE SKIP LOCKED)) RETURNING 1) \
     SELECT (SELECT nextval('changes') FROM (SELECT pg_notify($1::text, 'w') \
     FROM due LIMIT 1) AS n) AS notified, \
     (SELECT (EXTRACT(EPOCH FROM min(t) - now()) * 1000000)::int8 FROM \
     (SELECT min(scheduled_at) AS t FROM jobs WHERE status IN (",
    state_sql!(Scheduled, Retrying),
    ") AND scheduled_at > now() UNION ALL SELECT min(x.expires_at) FROM job_expiry x \
     JOIN jobs j ON j.id = x.job_id WHERE x.expires_at > now() AND j.status IN (",
    state_sql!(Ready, Scheduled, Waiting),
    ")) AS next) AS next_due_in, \
     (SELECT count(pg_notify($1::text, 'f' || id)) FROM expired) AS expired, ",
    settle_ended!("expired")
);

pub(super) fn promote_due(storage: &PostgresStorage) -> Result<Option<Micros>> {
    let due_in: Option<i64> = storage.run(|conn| {
        let rows = conn.query(PROMOTE_DUE, &[&storage.channel])?;
        Ok(rows[0].get(1))
    })?;
    // In this process's clock: the server's clock only says how long.
    Ok(due_in.map(|delay| now_micros().saturating_add(delay)))
}

/// Running and claimed attempts whose lease ran out (a bounded batch; the
/// rest wait for the next look), who held them, and their state.
const EXPIRED_LEASES: &str = concat!(
    "SELECT id, attempt, lease_token, max_retries, retry_backoff, worker_id, status FROM jobs \
     WHERE status IN (",
    state_sql!(Running, Claimed),
    ") AND lease_expires_at < now() LIMIT 1000"
);

pub(super) fn reap_expired(storage: &PostgresStorage) -> Result<Vec<ReapedJob>> {
    let expired: Vec<(AttemptRef, Option<String>, i16)> = storage.run(|conn| {
        let rows = conn.query(EXPIRED_LEASES, &[])?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    AttemptRef {
                        id: r.get(0),
                        attempt: r.get::<_, i32>(1) as u32,
                        token: r.get(2),
                        max_retries: r.get::<_, i64>(3) as u32,
                        retry_backoff: r.get(4),
                    },
                    r.get(5),
                    r.get(6),
                )
            })
            .collect())
    })?;
    if expired.is_empty() {
        return Ok(Vec::new());
    }
    let now = now_micros();
    let (claimed, running): (Vec<_>, Vec<_>) = expired
        .into_iter()
        .partition(|(_, _, state)| *state == State::Claimed as i16);
    // Never started: ready again, the attempt not counted. Each statement
    // checks the lease again, so a renewal that came meanwhile wins.
    let claimed: Vec<AttemptRef> = claimed.into_iter().map(|(job, _, _)| job).collect();
    let mut reaped: Vec<ReapedJob> = release_ids(storage, &claimed, true, true)?
        .into_iter()
        .map(|id| ReapedJob {
            id,
            applied: Applied::Retry(now),
        })
        .collect();
    let failures: Vec<Outcome> = running
        .iter()
        .map(|(job, worker, _)| Outcome {
            job: *job,
            started_at: None,
            finished_at: now,
            kind: OutcomeKind::Failure(worker_lost(worker.as_deref(), job.attempt)),
        })
        .collect();
    let applied = complete(storage, &failures, true)?;
    reaped.extend(
        failures
            .iter()
            .zip(applied)
            .filter(|(_, applied)| *applied != Applied::Stale)
            .map(|(outcome, applied)| ReapedJob {
                id: outcome.job.id,
                applied,
            }),
    );
    Ok(reaped)
}

/// Deletes the jobs in states `{states}` that finished more than `$1` µs
/// ago, and their error history.
fn purge_sql(states: &str) -> String {
    format!(
        "WITH gone AS (DELETE FROM jobs WHERE status IN ({states}) \
         AND finished_at < now() - $1::int8 * interval '1 microsecond' RETURNING id), \
         errors AS (DELETE FROM job_errors WHERE job_id IN (SELECT id FROM gone)), \
         links AS (DELETE FROM job_dependencies WHERE job_id IN (SELECT id FROM gone)) \
         SELECT count(*) FROM gone"
    )
}

static PURGE_DEAD: LazyLock<String> = LazyLock::new(|| purge_sql(state_sql!(Dead)));
static PURGE_FINISHED: LazyLock<String> =
    LazyLock::new(|| purge_sql(state_sql!(Complete, Cancelled, Expired)));

fn purge(storage: &PostgresStorage, sql: &str, older_than: Duration) -> Result<usize> {
    let age = micros(older_than);
    storage.run(|conn| Ok(conn.query(sql, &[&age])?[0].get::<_, i64>(0) as usize))
}

pub(super) fn purge_dead(storage: &PostgresStorage, older_than: Duration) -> Result<usize> {
    purge(storage, &PURGE_DEAD, older_than)
}

pub(super) fn purge_finished(storage: &PostgresStorage, older_than: Duration) -> Result<usize> {
    purge(storage, &PURGE_FINISHED, older_than)
}

/// Whether work may have been committed that no notification announced.
/// While the listener is connected, none can be (notifications of committed
/// transactions are delivered to every listening session), so this costs
/// nothing. After it reconnected, the answer is yes, once. Without a
/// listener it reads the `changes` sequence, which every statement that
/// makes jobs claimable bumps: one tiny read, and no row any writer locks.
/// (nextval is not transactional, so a look can run just before the commit
/// it announces; the next poll, at most a backed-off interval later, sees
/// the job.)
pub(super) fn external_change(storage: &PostgresStorage) -> Result<bool> {
    if let Some(listener) = &storage.listener {
        if listener.take_reconnected() {
            return Ok(true);
        }
        if storage.wakeups.crosses_processes() {
            return Ok(false);
        }
    }
    let version: i64 = storage.run(|conn| {
        Ok(conn
            // A fresh sequence says 1 before its first nextval too.
            .query(
                "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM changes",
                &[],
            )?[0]
            .get(0))
    })?;
    let before = storage.last_change.swap(version, Ordering::Relaxed);
    Ok(before != i64::MIN && before != version)
}
