//! Putting jobs in: a whole batch in one statement (rows from arrays, one
//! round trip, one commit, one notification), and the lone job its own
//! process may claim on the way in.

use std::sync::LazyLock;
use std::time::SystemTime;

use super::listener::{notify_sql, Notes};
use super::pool::Conn;
use super::{micros_of, micros_sql, PostgresStorage};
use crate::error::Result;
use crate::job::{micros, state_sql, ClaimedJob, JobOptions, State, IDS};
use crate::storage::common::{claimed_at_enqueue, timeout_millis};
use crate::storage::DirectClaim;

/// Delays from this many microseconds (285 years) on mean never: the job
/// is due at 'infinity', as a saturated delay is on SQLite.
macro_rules! forever_micros {
    () => {
        "9000000000000000"
    };
}

/// Inserts one job per element of `$1` (ids) and `$2` (payloads), all with
/// the same options, due `$7` µs after now. An id another process took in
/// the same millisecond inserts nothing (and is not returned).
static ENQUEUE: LazyLock<String> = LazyLock::new(|| {
    format!(
        concat!(
            "WITH ins AS (INSERT INTO jobs (id, payload, queue, task_name, status, priority, \
             created_at, scheduled_at, max_retries, retry_backoff, timeout_ms) \
             SELECT t.id, t.payload, $3::text, $4::text, $5::int2, $6::int8, now(), \
             CASE WHEN $7::int8 >= ",
            forever_micros!(),
            " THEN 'infinity' ELSE now() + ",
            micros_sql!("7"),
            " END, $8::int8, $9::float8, $10::int8 \
             FROM unnest($1::int8[], $2::bytea[]) AS t(id, payload) \
             ON CONFLICT (id) DO NOTHING RETURNING id) \
             SELECT id, {notify} FROM ins"
        ),
        notify = notify_sql(11, 12, 13)
    )
});

pub(super) fn enqueue(
    storage: &PostgresStorage,
    options: &JobOptions,
    payloads: &[Vec<u8>],
) -> Result<Vec<i64>> {
    options.validate()?;
    if payloads.is_empty() {
        return Ok(Vec::new());
    }
    let delay = options.delay.map(micros).unwrap_or(0);
    let (state, notes) = if delay > 0 {
        (State::Scheduled, Notes::default().due_in(delay))
    } else {
        (State::Ready, Notes::default().work())
    };
    let mut ids: Vec<i64> = payloads.iter().map(|_| IDS.next()).collect();
    let mut runs = 0;
    storage.run(|conn| {
        runs += 1;
        let mut todo: Vec<usize> = (0..payloads.len()).collect();
        if runs > 1 {
            // The first run may have committed before its connection died:
            // rows already holding our ids and payloads are ours.
            todo = not_yet_stored(conn, options, payloads, &ids)?;
        }
        while !todo.is_empty() {
            let batch_ids: Vec<i64> = todo.iter().map(|&i| ids[i]).collect();
            let batch: Vec<&[u8]> = todo.iter().map(|&i| payloads[i].as_slice()).collect();
            let rows = conn.query(
                &ENQUEUE,
                &[
                    &batch_ids,
                    &batch,
                    &options.queue,
                    &options.task_name,
                    &(state as i16),
                    &options.priority,
                    &delay,
                    &i64::from(options.max_retries),
                    &options.retry_backoff,
                    &options.timeout.map(timeout_millis),
                    &storage.channel,
                    &notes.payloads,
                    &notes.work,
                ],
            )?;
            let stored: std::collections::HashSet<i64> = rows.iter().map(|r| r.get(0)).collect();
            // Ids another process took in the same millisecond: new ones.
            todo.retain(|&i| !stored.contains(&ids[i]));
            for &i in &todo {
                IDS.skip_past(ids[i]);
                ids[i] = IDS.next();
            }
        }
        Ok(ids.clone())
    })
}

/// The positions of `payloads` whose id holds no row with that payload and
/// task (after a run whose commit may or may not have happened).
fn not_yet_stored(
    conn: &mut Conn,
    options: &JobOptions,
    payloads: &[Vec<u8>],
    ids: &[i64],
) -> Result<Vec<usize>> {
    let rows = conn.query(
        "SELECT id, payload FROM jobs WHERE id = ANY($1::int8[]) AND task_name = $2::text",
        &[&ids, &options.task_name],
    )?;
    let stored: std::collections::HashMap<i64, Vec<u8>> =
        rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    Ok((0..ids.len())
        .filter(|&i| stored.get(&ids[i]) != Some(&payloads[i]))
        .collect())
}

/// Inserts job `$1` claimed by worker `$9` (running, first attempt, leased
/// for `$10` µs) when no ready job waits ahead of it; otherwise ready, and
/// then it notifies.
static ENQUEUE_CLAIMED: LazyLock<String> = LazyLock::new(|| {
    format!(
        concat!(
            "WITH waiting AS (SELECT EXISTS (SELECT 1 FROM jobs WHERE status = ",
            state_sql!(Ready),
            ") AS ahead), \
             ins AS (INSERT INTO jobs (id, payload, queue, task_name, status, priority, \
             created_at, scheduled_at, max_retries, retry_backoff, timeout_ms, attempt, \
             lease_token, worker_id, started_at, lease_expires_at) \
             SELECT $1::int8, $2::bytea, $3::text, $4::text, CASE WHEN w.ahead THEN ",
            state_sql!(Ready),
            " ELSE ",
            state_sql!(Running),
            " END, $5::int8, now(), now(), $6::int8, $7::float8, $8::int8, \
             CASE WHEN w.ahead THEN 0 ELSE 1 END, CASE WHEN w.ahead THEN 0 ELSE 1 END, \
             CASE WHEN w.ahead THEN NULL ELSE $9::text END, \
             CASE WHEN w.ahead THEN NULL ELSE now() END, \
             CASE WHEN w.ahead THEN NULL ELSE now() + ",
            micros_sql!("10"),
            " END FROM waiting w ON CONFLICT (id) DO NOTHING \
             RETURNING id, status, scheduled_at) \
             SELECT id, status, scheduled_at, CASE WHEN status = ",
            state_sql!(Ready),
            " THEN {notify} END FROM ins"
        ),
        notify = "(SELECT count(pg_notify($11::text, 'w')) + 0 * nextval('changes'))"
    )
});

pub(super) fn enqueue_claimed(
    storage: &PostgresStorage,
    options: &JobOptions,
    payload: &[u8],
    claim: &DirectClaim,
) -> Result<(i64, Option<ClaimedJob>)> {
    if options.delay.is_some_and(|d| !d.is_zero()) {
        // Not due now: it waits like any delayed job.
        let id = enqueue(storage, options, &[payload.to_vec()])?[0];
        return Ok((id, None));
    }
    options.validate()?;
    let mut id = IDS.next();
    let mut runs = 0;
    storage.run(|conn| {
        runs += 1;
        if runs > 1 && stored_as(conn, id, options, payload)? {
            // Inserted by a run whose connection died before it answered;
            // whether it was claimed is unknown, so it is not run here: a
            // claimed one goes back to the queue when its lease runs out.
            return Ok((id, None));
        }
        loop {
            let rows = conn.query(
                &ENQUEUE_CLAIMED,
                &[
                    &id,
                    &payload,
                    &options.queue,
                    &options.task_name,
                    &options.priority,
                    &i64::from(options.max_retries),
                    &options.retry_backoff,
                    &options.timeout.map(timeout_millis),
                    &claim.worker_id,
                    &micros(claim.lease),
                    &storage.channel,
                ],
            )?;
            if let Some(row) = rows.first() {
                let status: i16 = row.get(1);
                let scheduled: SystemTime = row.get(2);
                let claimed = (status == State::Running as i16)
                    .then(|| claimed_at_enqueue(id, options, payload, micros_of(scheduled)));
                return Ok((id, claimed));
            }
            // Another process took this id in the same millisecond.
            IDS.skip_past(id);
            id = IDS.next();
        }
    })
}

/// Whether job `id` exists with this task and payload.
fn stored_as(conn: &mut Conn, id: i64, options: &JobOptions, payload: &[u8]) -> Result<bool> {
    let rows = conn.query(
        "SELECT payload FROM jobs WHERE id = $1::int8 AND task_name = $2::text",
        &[&id, &options.task_name],
    )?;
    Ok(rows
        .first()
        .is_some_and(|r| r.get::<_, &[u8]>(0) == payload))
}
