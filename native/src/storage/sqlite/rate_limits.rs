//! Rate limits: the token buckets workers declare, and the claim of
//! rate-limited jobs, which debits their buckets in its own transaction.
//! The main claim leaves these jobs out (`ClaimRequest::skip_tasks`,
//! `skip_queues`), so a limited job waiting for a token never holds up
//! another task's jobs. Which jobs a token admits is decided in
//! `storage::rate_limit`.

use rusqlite::{params, OptionalExtension, Transaction};

use super::SqliteStorage;
use crate::error::Result;
use crate::job::{micros, state_sql, ClaimedJob, Feed, Micros};
use crate::storage::common::{json_names, sort_in_claim_order, timeout_from_millis};
use crate::storage::rate_limit::{
    admit, exhausted, Bucket, Buckets, Candidate, LimitScope, LimitedClaim, RateLimit, RateLimits,
};
use crate::storage::ClaimRequest;

/// A new bucket starts full; a stored one takes the new rate and keeps its
/// tokens, up to the new burst.
const UPSERT: &str =
    "INSERT INTO rate_limits (kind, name, per_second, burst, tokens, refilled_at) \
    VALUES (?1, ?2, ?3, ?4, ?4, ?5) ON CONFLICT (kind, name) DO UPDATE SET \
    per_second = excluded.per_second, burst = excluded.burst, \
    tokens = min(rate_limits.tokens, excluded.burst)";

pub(super) fn configure_rate_limits(storage: &SqliteStorage, limits: &[RateLimit]) -> Result<()> {
    if limits.is_empty() {
        return Ok(());
    }
    let now = storage.now();
    storage.write(|tx| {
        let mut stmt = tx.prepare_cached(UPSERT)?;
        for limit in limits {
            stmt.execute(params![
                limit.scope.name(),
                limit.name,
                limit.per_second,
                limit.burst(),
                now
            ])?;
        }
        Ok(())
    })
}

const READ_BUCKET: &str = "SELECT per_second, burst, tokens, refilled_at FROM rate_limits \
    WHERE kind = ?1 AND name = ?2";

const WRITE_BUCKET: &str =
    "UPDATE rate_limits SET tokens = ?3, refilled_at = ?4 WHERE kind = ?1 AND name = ?2";

/// Ready jobs, in claim order, of the tasks `?1` or in the queues `?2`
/// (JSON arrays: the limited ones with a token), among those the worker
/// serves (`?4` queues, `?5` tasks, where given); at most `?3`.
pub(super) fn candidates_sql(queues: bool, tasks: bool) -> String {
    let mut sql = String::from(concat!(
        "SELECT id, task_name, queue FROM jobs WHERE status = ",
        state_sql!(Ready),
        " AND (task_name IN (SELECT value FROM json_each(?1)) \
         OR queue IN (SELECT value FROM json_each(?2)))"
    ));
    if queues {
        sql += " AND queue IN (SELECT value FROM json_each(?4))";
    }
    if tasks {
        sql += " AND task_name IN (SELECT value FROM json_each(?5))";
    }
    // An expression, not a bare `LIMIT ?3`: see `claim::claim_sql`.
    sql + " ORDER BY priority DESC, scheduled_at, id LIMIT CAST(?3 AS INTEGER)"
}

/// Starts job `?1` for worker `?2` at `?3`, leased until `?4`, if still ready.
pub(super) const TAKE: &str = concat!(
    "UPDATE jobs SET status = ",
    state_sql!(Running),
    ", attempt = attempt + 1, lease_token = lease_token + 1, worker_id = ?2, started_at = ?3, \
     lease_expires_at = ?4 WHERE id = ?1 AND status = ",
    state_sql!(Ready),
    " AND (expiry IS NULL OR expiry > ?3) \
     RETURNING id, queue, task_name, payload, priority, scheduled_at, attempt, lease_token, \
     max_retries, retry_backoff, timeout_ms, feed"
);

/// Candidates read per job of room: some may lack their other bucket's token.
const CANDIDATES_PER_SLOT: usize = 4;

pub(super) fn claim_limited(
    storage: &SqliteStorage,
    request: &ClaimRequest,
    limits: &RateLimits,
) -> Result<LimitedClaim> {
    if request.start == 0 || limits.is_empty() {
        return Ok(LimitedClaim::default());
    }
    let now = storage.now();
    storage.write(|tx| {
        let mut buckets = read_buckets(tx, limits, now)?;
        let with_token = |scope| {
            let names: Vec<String> = buckets
                .iter()
                .filter(|((s, _), b)| *s == scope && b.tokens >= 1.0)
                .map(|((_, name), _)| name.clone())
                .collect();
            json_names(&names)
        };
        let (tasks, queues) = (with_token(LimitScope::Task), with_token(LimitScope::Queue));
        let mut claim = LimitedClaim::default();
        let mut left_waiting = false;
        if tasks != "[]" || queues != "[]" {
            let candidates = read_candidates(tx, request, &tasks, &queues)?;
            let admitted = admit(&candidates, &mut buckets, request.start);
            left_waiting = admitted.len() < candidates.len();
            claim.jobs = take(tx, request, &admitted, now)?;
            for (key, bucket) in &buckets {
                tx.prepare_cached(WRITE_BUCKET)?.execute(params![
                    key.0.name(),
                    key.1,
                    bucket.tokens,
                    bucket.refilled_at
                ])?;
            }
        }
        let empty = exhausted(&buckets);
        if !empty.is_empty() && (left_waiting || any_waiting(tx, request, &empty)?) {
            claim.retry_at = empty.iter().map(|k| buckets[k].next_token_at()).min();
        }
        Ok(claim)
    })
}

/// The buckets of `limits`, refilled to `now`. One not stored yet (its
/// worker has not registered it) counts as full.
fn read_buckets(tx: &Transaction, limits: &RateLimits, now: Micros) -> Result<Buckets> {
    let mut stmt = tx.prepare_cached(READ_BUCKET)?;
    let mut buckets = Buckets::new();
    for limit in &limits.limits {
        let stored = stmt
            .query_row(params![limit.scope.name(), limit.name], |r| {
                Ok(Bucket {
                    per_second: r.get(0)?,
                    burst: r.get(1)?,
                    tokens: r.get(2)?,
                    refilled_at: r.get(3)?,
                })
            })
            .optional()?;
        let mut bucket = stored.unwrap_or(Bucket {
            per_second: limit.per_second,
            burst: limit.burst(),
            tokens: limit.burst(),
            refilled_at: now,
        });
        bucket.refill(now);
        buckets.insert((limit.scope, limit.name.clone()), bucket);
    }
    Ok(buckets)
}

fn read_candidates(
    tx: &Transaction,
    request: &ClaimRequest,
    tasks: &str,
    queues: &str,
) -> Result<Vec<Candidate>> {
    let sql = candidates_sql(request.queues.is_some(), request.tasks.is_some());
    let mut stmt = tx.prepare_cached(&sql)?;
    stmt.raw_bind_parameter(1, tasks)?;
    stmt.raw_bind_parameter(2, queues)?;
    stmt.raw_bind_parameter(3, (request.start * CANDIDATES_PER_SLOT) as i64)?;
    if let Some(served) = request.queues {
        stmt.raw_bind_parameter(4, json_names(served))?;
    }
    if let Some(served) = request.tasks {
        stmt.raw_bind_parameter(5, json_names(served))?;
    }
    let mut rows = stmt.raw_query();
    let mut candidates = Vec::new();
    while let Some(row) = rows.next()? {
        candidates.push(Candidate {
            id: row.get(0)?,
            task: row.get(1)?,
            queue: row.get(2)?,
        });
    }
    Ok(candidates)
}

fn take(
    tx: &Transaction,
    request: &ClaimRequest,
    ids: &[i64],
    now: Micros,
) -> Result<Vec<ClaimedJob>> {
    let lease_until = now.saturating_add(micros(request.lease));
    let mut stmt = tx.prepare_cached(TAKE)?;
    let mut jobs = Vec::with_capacity(ids.len());
    for &id in ids {
        let job = stmt
            .query_row(params![id, request.worker_id, now, lease_until], |r| {
                Ok(ClaimedJob {
                    id: r.get(0)?,
                    queue: r.get(1)?,
                    task_name: r.get(2)?,
                    payload: r.get(3)?,
                    priority: r.get(4)?,
                    scheduled_at: r.get(5)?,
                    attempt: r.get(6)?,
                    token: r.get(7)?,
                    max_retries: r.get(8)?,
                    retry_backoff: r.get(9)?,
                    timeout: timeout_from_millis(r.get(10)?),
                    running: true,
                    feed: Feed::from_i64(r.get(11)?),
                })
            })
            .optional()?;
        jobs.extend(job);
    }
    sort_in_claim_order(&mut jobs);
    Ok(jobs)
}

/// Whether a ready job the worker serves waits for one of the `empty` buckets.
fn any_waiting(
    tx: &Transaction,
    request: &ClaimRequest,
    empty: &[(LimitScope, String)],
) -> Result<bool> {
    let names = |scope| {
        let names: Vec<String> = empty
            .iter()
            .filter(|(s, _)| *s == scope)
            .map(|(_, n)| n.clone())
            .collect();
        json_names(&names)
    };
    let probe = ClaimRequest {
        start: 1,
        ..request.clone()
    };
    let found = read_candidates(
        tx,
        &probe,
        &names(LimitScope::Task),
        &names(LimitScope::Queue),
    )?;
    Ok(!found.is_empty())
}
