//! Taking due jobs: one statement locks a batch of ready jobs in claim
//! order, skipping rows other workers have locked (`FOR UPDATE SKIP
//! LOCKED`), marks the first `start` running and the rest claimed, and
//! returns them: concurrent workers never wait for each other here, nor
//! take the same job. Starting claimed jobs later, and the look at the best
//! waiting job that decides whether a prefetch is handed back.

use std::time::SystemTime;

use postgres::types::ToSql;

use super::{micros_of, micros_sql, PostgresStorage};
use crate::error::Result;
use crate::job::{micros, state_sql, AttemptRef, ClaimedJob, Feed};
use crate::storage::common::{sort_in_claim_order, timeout_from_millis};
use crate::storage::{ClaimRequest, JobScope};

/// The optional filters on the ready jobs a statement walks, numbered from
/// `first` in the order queues, tasks, priority floor (only those given).
fn filters(
    scope: JobScope,
    above_priority: Option<i64>,
    first: usize,
) -> (String, Vec<Box<dyn ToSql + Sync>>) {
    let mut sql = String::new();
    let mut params: Vec<Box<dyn ToSql + Sync>> = Vec::new();
    if let Some(queues) = scope.queues {
        params.push(Box::new(queues.to_vec()));
        sql += &format!(" AND queue = ANY(${}::text[])", first + params.len() - 1);
    }
    if let Some(tasks) = scope.tasks {
        params.push(Box::new(tasks.to_vec()));
        sql += &format!(
            " AND task_name = ANY(${}::text[])",
            first + params.len() - 1
        );
    }
    if let Some(priority) = above_priority {
        params.push(Box::new(priority));
        sql += &format!(" AND priority > ${}::int8", first + params.len() - 1);
    }
    (sql, params)
}

/// Leaves out the rate-limited tasks and queues (`request.skip_*`), which
/// only `claim_limited` takes: parameters numbered on from those given.
fn skip_limited(
    request: &ClaimRequest,
    sql: &mut String,
    params: &mut Vec<Box<dyn ToSql + Sync>>,
    first: usize,
) {
    for (skip, column) in [
        (request.skip_tasks, "task_name"),
        (request.skip_queues, "queue"),
    ] {
        if let Some(names) = skip {
            params.push(Box::new(names.to_vec()));
            *sql += &format!(
                " AND NOT ({column} = ANY(${}::text[]))",
                first + params.len() - 1
            );
        }
    }
}

/// Takes up to `$2` ready jobs in claim order for worker `$1`, leased for
/// `$4` µs: the first `$3` running (started now), the rest claimed.
///
/// The locked ids travel as one array, unnested with their rank, so that
/// the update looks each one up by primary key whatever the planner
/// guesses `LIMIT $2` to be (a generic plan guesses a tenth of the table,
/// and would merge-join the whole of it).
fn claim_sql(filters: &str) -> String {
    format!(
        concat!(
            "WITH picked AS MATERIALIZED (SELECT id, priority, scheduled_at FROM jobs \
             WHERE status = ",
            state_sql!(Ready),
            "{filters} AND (expires_at IS NULL OR expires_at > now()) \
             ORDER BY priority DESC, scheduled_at, id LIMIT $2::int8 \
             FOR UPDATE SKIP LOCKED), \
             ordered AS (SELECT array_agg(id ORDER BY priority DESC, scheduled_at, id) AS ids \
             FROM picked) \
             UPDATE jobs j SET status = CASE WHEN u.rank <= $3::int8 THEN ",
            state_sql!(Running),
            " ELSE ",
            state_sql!(Claimed),
            " END, started_at = CASE WHEN u.rank <= $3::int8 THEN now() END, \
             attempt = j.attempt + 1, lease_token = j.lease_token + 1, worker_id = $1::text, \
             lease_expires_at = now() + ",
            micros_sql!("4"),
            " FROM ordered o, unnest(o.ids) WITH ORDINALITY AS u(id, rank) WHERE j.id = u.id \
             RETURNING j.id, j.queue, j.task_name, j.payload, j.priority, j.scheduled_at, \
             j.attempt, j.lease_token, j.max_retries, j.retry_backoff, j.timeout_ms, \
             u.rank <= $3::int8, j.feed"
        ),
        filters = filters
    )
}

pub(super) fn claim(storage: &PostgresStorage, request: &ClaimRequest) -> Result<Vec<ClaimedJob>> {
    if request.limit() == 0 {
        return Ok(Vec::new());
    }
    let scope = JobScope {
        queues: request.queues,
        tasks: request.tasks,
    };
    let (mut filter_sql, mut filter_params) = filters(scope, request.above_priority, 5);
    skip_limited(request, &mut filter_sql, &mut filter_params, 5);
    let sql = claim_sql(&filter_sql);
    let (limit, start, lease) = (
        request.limit() as i64,
        request.start as i64,
        micros(request.lease),
    );
    storage.run(|conn| {
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&request.worker_id, &limit, &start, &lease];
        params.extend(filter_params.iter().map(|p| p.as_ref()));
        let rows = conn.query(&sql, &params)?;
        let mut jobs: Vec<ClaimedJob> = rows
            .iter()
            .map(|row| ClaimedJob {
                id: row.get(0),
                queue: row.get(1),
                task_name: row.get(2),
                payload: row.get(3),
                priority: row.get(4),
                scheduled_at: micros_of(row.get::<_, SystemTime>(5)),
                attempt: row.get::<_, i32>(6) as u32,
                token: row.get(7),
                max_retries: row.get::<_, i64>(8) as u32,
                retry_backoff: row.get(9),
                timeout: timeout_from_millis(row.get(10)),
                running: row.get(11),
                feed: Feed::from_i64(i64::from(row.get::<_, i16>(12))),
            })
            .collect();
        // RETURNING comes in update order, not claim order.
        sort_in_claim_order(&mut jobs);
        Ok(jobs)
    })
}

/// Starts the claimed attempts `$1`/`$2` (ids/tokens, sorted by id) still
/// held; returns the ids started.
///
/// Statements that look jobs up by id walk the given ids in order, each
/// through the primary key (see `outcomes` for why the order matters). They
/// say `status + 0` rather than `status`, so that no plan walks an index by
/// status instead: the entries a status index keeps for every job that ever
/// had that status (until vacuum) would make each batch cost as much as the
/// queue's history.
///
/// One that expired while it was held ends expired instead (not started).
const START_CLAIMED: &str = concat!(
    "WITH upd AS (UPDATE jobs j SET status = CASE WHEN j.expires_at <= now() THEN ",
    state_sql!(Expired),
    " ELSE ",
    state_sql!(Running),
    " END, started_at = CASE WHEN j.expires_at <= now() THEN NULL ELSE now() END, \
     finished_at = CASE WHEN j.expires_at <= now() THEN now() END, \
     lease_expires_at = CASE WHEN j.expires_at <= now() THEN NULL ELSE j.lease_expires_at END \
     FROM unnest($1::int8[], $2::int8[]) AS t(id, token) \
     WHERE j.id = t.id AND j.lease_token = t.token AND j.status + 0 = ",
    state_sql!(Claimed),
    " RETURNING j.id, j.status, j.dependents, j.unique_key, j.expires_at) \
     SELECT id, status = ",
    state_sql!(Running),
    ", ",
    settle_ended!("upd"),
    " FROM upd"
);

pub(super) fn start_claimed(storage: &PostgresStorage, jobs: &[AttemptRef]) -> Result<Vec<bool>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let (ids, tokens) = ids_and_tokens(jobs);
    let started: std::collections::HashSet<i64> = storage.run(|conn| {
        let rows = conn.query(START_CLAIMED, &[&ids, &tokens])?;
        Ok(rows.iter().filter(|r| r.get(1)).map(|r| r.get(0)).collect())
    })?;
    Ok(jobs.iter().map(|j| started.contains(&j.id)).collect())
}

/// Ids and lease tokens of attempts, as two arrays to bind, in id order.
pub(super) fn ids_and_tokens(jobs: &[AttemptRef]) -> (Vec<i64>, Vec<i64>) {
    let mut pairs: Vec<(i64, i64)> = jobs.iter().map(|j| (j.id, j.token)).collect();
    pairs.sort_unstable();
    pairs.into_iter().unzip()
}

pub(super) fn best_ready_priority(
    storage: &PostgresStorage,
    scope: JobScope,
) -> Result<Option<i64>> {
    let (filter_sql, filter_params) = filters(scope, None, 1);
    let sql = format!(
        concat!(
            "SELECT priority FROM jobs WHERE status = ",
            state_sql!(Ready),
            "{} ORDER BY priority DESC, scheduled_at, id LIMIT 1"
        ),
        filter_sql
    );
    storage.run(|conn| {
        let params: Vec<&(dyn ToSql + Sync)> = filter_params.iter().map(|p| p.as_ref()).collect();
        Ok(conn.query(&sql, &params)?.first().map(|r| r.get(0)))
    })
}
