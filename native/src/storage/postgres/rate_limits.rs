//! Rate limits (see the SQLite backend's): a limited claim locks its
//! buckets (in key order, so concurrent claims never deadlock), refills
//! them by the server's clock, locks the ready jobs it may take (skipping
//! rows other workers hold), marks them running and debits the buckets, in
//! one transaction.

use std::collections::HashMap;
use std::time::SystemTime;

use super::{micros_of, micros_sql, PostgresStorage};
use crate::error::Result;
use crate::job::{micros, now_micros, state_sql, ClaimedJob, Feed};
use crate::storage::common::{sort_in_claim_order, timeout_from_millis};
use crate::storage::rate_limit::{
    admit, exhausted, Bucket, Buckets, Candidate, LimitScope, LimitedClaim, RateLimit, RateLimits,
};
use crate::storage::ClaimRequest;

const UPSERT: &str =
    "INSERT INTO rate_limits (kind, name, per_second, burst, tokens, refilled_at) \
    SELECT k, n, r, b, b, now() FROM unnest($1::text[], $2::text[], $3::float8[], $4::float8[]) \
    AS t(k, n, r, b) ORDER BY k, n \
    ON CONFLICT (kind, name) DO UPDATE SET per_second = excluded.per_second, \
    burst = excluded.burst, tokens = least(rate_limits.tokens, excluded.burst)";

pub(super) fn configure_rate_limits(storage: &PostgresStorage, limits: &[RateLimit]) -> Result<()> {
    if limits.is_empty() {
        return Ok(());
    }
    let kinds: Vec<&str> = limits.iter().map(|l| l.scope.name()).collect();
    let names: Vec<&str> = limits.iter().map(|l| l.name.as_str()).collect();
    let rates: Vec<f64> = limits.iter().map(|l| l.per_second).collect();
    let bursts: Vec<f64> = limits.iter().map(|l| l.burst()).collect();
    storage.run(|conn| {
        conn.execute(UPSERT, &[&kinds, &names, &rates, &bursts])?;
        Ok(())
    })
}

/// The buckets `$1`/`$2` (kinds/names), locked in key order.
const LOCK_BUCKETS: &str = "SELECT kind, name, per_second, burst, tokens, refilled_at \
    FROM rate_limits WHERE (kind, name) IN (SELECT * FROM unnest($1::text[], $2::text[])) \
    ORDER BY kind, name FOR UPDATE";

const WRITE_BUCKETS: &str = "UPDATE rate_limits r SET tokens = t.tokens, \
    refilled_at = t.at FROM unnest($1::text[], $2::text[], $3::float8[], $4::timestamptz[]) \
    AS t(kind, name, tokens, at) WHERE r.kind = t.kind AND r.name = t.name";

/// Ready jobs, in claim order, of the tasks `$1` or in the queues `$2`,
/// among those the worker serves (`$4` queues, `$5` tasks, NULL: any), at
/// most `$3`, locked (skipping rows other workers hold).
const CANDIDATES: &str = concat!(
    "SELECT id, task_name, queue FROM jobs WHERE status = ",
    state_sql!(Ready),
    " AND (task_name = ANY($1::text[]) OR queue = ANY($2::text[])) \
     AND ($4::text[] IS NULL OR queue = ANY($4::text[])) \
     AND ($5::text[] IS NULL OR task_name = ANY($5::text[])) \
     ORDER BY priority DESC, scheduled_at, id LIMIT $3::int8 FOR UPDATE SKIP LOCKED"
);

/// Marks jobs `$1` (sorted) running for worker `$2`, leased for `$3` µs.
const TAKE: &str = concat!(
    "UPDATE jobs j SET status = ",
    state_sql!(Running),
    ", started_at = now(), attempt = j.attempt + 1, lease_token = j.lease_token + 1, \
     worker_id = $2::text, lease_expires_at = now() + ",
    micros_sql!("3"),
    " FROM unnest($1::int8[]) AS t(id) WHERE j.id = t.id AND j.status + 0 = ",
    state_sql!(Ready),
    " AND (j.expires_at IS NULL OR j.expires_at > now()) \
     RETURNING j.id, j.queue, j.task_name, j.payload, j.priority, j.scheduled_at, \
     j.attempt, j.lease_token, j.max_retries, j.retry_backoff, j.timeout_ms, j.feed"
);

/// Candidates read per job of room: some may lack their other bucket's token.
const CANDIDATES_PER_SLOT: usize = 4;

pub(super) fn claim_limited(
    storage: &PostgresStorage,
    request: &ClaimRequest,
    limits: &RateLimits,
) -> Result<LimitedClaim> {
    if request.start == 0 || limits.is_empty() {
        return Ok(LimitedClaim::default());
    }
    let mut keys: Vec<(&str, &str)> = limits
        .limits
        .iter()
        .map(|l| (l.scope.name(), l.name.as_str()))
        .collect();
    keys.sort();
    let kinds: Vec<&str> = keys.iter().map(|k| k.0).collect();
    let names: Vec<&str> = keys.iter().map(|k| k.1).collect();
    let served_queues = request.queues.map(|q| q.to_vec());
    let served_tasks = request.tasks.map(|t| t.to_vec());
    storage.run(|conn| {
        let lock = conn.prepare(LOCK_BUCKETS)?;
        let candidates = conn.prepare(CANDIDATES)?;
        let take = conn.prepare(TAKE)?;
        let write = conn.prepare(WRITE_BUCKETS)?;
        let mut tx = conn.client.transaction()?;
        let server_now = micros_of(tx.query_one("SELECT now()", &[])?.get(0));
        let rows = tx.query(&lock, &[&kinds, &names])?;
        let mut stored: HashMap<(LimitScope, String), Bucket> = HashMap::new();
        for r in &rows {
            let Some(scope) = LimitScope::parse(r.get(0)) else {
                continue;
            };
            stored.insert(
                (scope, r.get(1)),
                Bucket {
                    per_second: r.get(2),
                    burst: r.get(3),
                    tokens: r.get(4),
                    refilled_at: micros_of(r.get::<_, SystemTime>(5)),
                },
            );
        }
        let mut buckets = Buckets::new();
        for limit in &limits.limits {
            let key = (limit.scope, limit.name.clone());
            // One not stored yet (its worker has not registered it) counts as full.
            let mut bucket = stored.remove(&key).unwrap_or(Bucket {
                per_second: limit.per_second,
                burst: limit.burst(),
                tokens: limit.burst(),
                refilled_at: server_now,
            });
            bucket.refill(server_now);
            buckets.insert(key, bucket);
        }
        let with_token = |scope| -> Vec<String> {
            buckets
                .iter()
                .filter(|((s, _), b)| *s == scope && b.tokens >= 1.0)
                .map(|((_, n), _)| n.clone())
                .collect()
        };
        let (tasks, queues) = (with_token(LimitScope::Task), with_token(LimitScope::Queue));
        let mut claim = LimitedClaim::default();
        let mut left_waiting = false;
        if !tasks.is_empty() || !queues.is_empty() {
            let limit = (request.start * CANDIDATES_PER_SLOT) as i64;
            let found: Vec<Candidate> = tx
                .query(
                    &candidates,
                    &[&tasks, &queues, &limit, &served_queues, &served_tasks],
                )?
                .iter()
                .map(|r| Candidate {
                    id: r.get(0),
                    task: r.get(1),
                    queue: r.get(2),
                })
                .collect();
            let mut admitted = admit(&found, &mut buckets, request.start);
            left_waiting = admitted.len() < found.len();
            admitted.sort_unstable();
            let lease = micros(request.lease);
            claim.jobs = tx
                .query(&take, &[&admitted, &request.worker_id, &lease])?
                .iter()
                .map(|r| ClaimedJob {
                    id: r.get(0),
                    queue: r.get(1),
                    task_name: r.get(2),
                    payload: r.get(3),
                    priority: r.get(4),
                    scheduled_at: micros_of(r.get::<_, SystemTime>(5)),
                    attempt: r.get::<_, i32>(6) as u32,
                    token: r.get(7),
                    max_retries: r.get::<_, i64>(8) as u32,
                    retry_backoff: r.get(9),
                    timeout: timeout_from_millis(r.get(10)),
                    running: true,
                    feed: Feed::from_i64(i64::from(r.get::<_, i16>(11))),
                })
                .collect();
            sort_in_claim_order(&mut claim.jobs);
            let mut sorted: Vec<(&(LimitScope, String), &Bucket)> = buckets.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(b.0));
            let kinds: Vec<&str> = sorted.iter().map(|(k, _)| k.0.name()).collect();
            let names: Vec<&str> = sorted.iter().map(|(k, _)| k.1.as_str()).collect();
            let tokens: Vec<f64> = sorted.iter().map(|(_, b)| b.tokens).collect();
            let at: Vec<SystemTime> = sorted
                .iter()
                .map(|(_, b)| {
                    std::time::UNIX_EPOCH
                        + std::time::Duration::from_micros(b.refilled_at.max(0) as u64)
                })
                .collect();
            tx.execute(&write, &[&kinds, &names, &tokens, &at])?;
        }
        let empty = exhausted(&buckets);
        if !empty.is_empty() {
            let waiting = left_waiting || {
                let names_of = |scope| -> Vec<String> {
                    empty
                        .iter()
                        .filter(|(s, _)| *s == scope)
                        .map(|(_, n)| n.clone())
                        .collect()
                };
                let one = 1i64;
                !tx.query(
                    &candidates,
                    &[
                        &names_of(LimitScope::Task),
                        &names_of(LimitScope::Queue),
                        &one,
                        &served_queues,
                        &served_tasks,
                    ],
                )?
                .is_empty()
            };
            if waiting {
                let at = empty.iter().map(|k| buckets[k].next_token_at()).min();
                claim.retry_at = at.map(|t| now_micros().saturating_add(t - server_now));
            }
        }
        tx.commit()?;
        Ok(claim)
    })
}
