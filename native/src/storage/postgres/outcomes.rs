//! How running jobs end or go back: a batch of outcomes in one statement
//! (rows from arrays), lease renewals, releases, cancellation, and reviving
//! dead jobs. Every change to a running job is fenced by its lease token,
//! as on SQLite.
//!
//! Multi-row writes pass their ids sorted, and the plan (nested loops, see
//! `connect::INDEX_PLANS`) visits and locks the rows in that order, so two
//! writers touching the same jobs (a worker's commit and its lease renewal,
//! say) wait for each other at most, never in a cycle.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;
use std::time::Duration;

use super::claim::ids_and_tokens;
use super::listener::{notify_sql, Notes};
use super::PostgresStorage;
use crate::error::Result;
use crate::job::{
    micros, now_micros, state_sql, Applied, AttemptRef, Micros, Outcome, OutcomeKind, State,
};
use crate::storage::common::after_failure;
use crate::storage::CancelRequest;

const SUCCESS: i16 = 0;
const FAILURE: i16 = 1;
const CANCELLED: i16 = 2;

/// `column` microseconds as an interval.
macro_rules! ago {
    ($column:literal) => {
        concat!("(now() - ", $column, " * interval '1 microsecond')")
    };
}

/// Records a batch of attempts' outcomes (sorted by id), each fenced by its
/// lease token; a failure also records its error, and moves the job to the
/// state `$7` unless its cancellation was requested. Ages (`$5`, `$6`) are
/// how long ago, by the sender's clock, the attempt finished and started;
/// `$8` the retry's delay after the finish. `{reaping}` adds a condition
/// for reaping: the lease must have run out.
fn complete_sql(reaping: &str) -> String {
    format!(
        concat!(
            "WITH upd AS (UPDATE jobs j SET \
             status = CASE o.kind WHEN 0 THEN ",
            state_sql!(Complete),
            " WHEN 2 THEN ",
            state_sql!(Cancelled),
            " ELSE CASE WHEN j.cancel_requested THEN ",
            state_sql!(Cancelled),
            " ELSE o.next_status END END, \
             result = CASE WHEN o.kind = 0 THEN o.result ELSE j.result END, \
             finished_at = CASE WHEN o.kind <> 1 OR j.cancel_requested OR o.next_status = ",
            state_sql!(Dead),
            " THEN ",
            ago!("o.finished_age"),
            " END, scheduled_at = CASE WHEN o.kind = 1 AND NOT j.cancel_requested \
             AND o.next_status <> ",
            state_sql!(Dead),
            " THEN ",
            ago!("o.finished_age"),
            " + o.retry_delay * interval '1 microsecond' ELSE j.scheduled_at END, \
             started_at = COALESCE(",
            ago!("o.started_age"),
            ", j.started_at), lease_expires_at = NULL \
             FROM unnest($1::int8[], $2::int8[], $3::int2[], $4::bytea[], $5::int8[], \
             $6::int8[], $7::int2[], $8::int8[], $9::int4[], $10::text[], $11::text[], \
             $12::text[]) AS o(id, token, kind, result, finished_age, started_age, \
             next_status, retry_delay, attempt, error_type, message, traceback) \
             WHERE j.id = o.id AND j.lease_token = o.token AND j.status + 0 = ",
            state_sql!(Running),
            "{reaping} RETURNING j.id, j.status, o.kind, o.attempt, o.error_type, o.message, \
             o.traceback, o.finished_age, j.dependents, j.unique_key, j.expires_at), \
             errs AS (INSERT INTO job_errors (job_id, attempt, error_type, message, traceback, \
             failed_at) SELECT id, attempt, error_type, message, traceback, ",
            ago!("finished_age"),
            " FROM upd WHERE kind = 1) \
             SELECT id, status, {notify}, ",
            settle_ended!("upd"),
            " FROM upd"
        ),
        reaping = reaping,
        notify = notify_sql(13, 14, 15)
    )
}

static COMPLETE: LazyLock<String> = LazyLock::new(|| complete_sql(""));
static COMPLETE_EXPIRED: LazyLock<String> =
    LazyLock::new(|| complete_sql(" AND j.lease_expires_at < now()"));

/// Records outcomes; with `reaping`, only of attempts whose lease ran out
/// (a renewal that raced the reaper wins).
pub(super) fn complete(
    storage: &PostgresStorage,
    outcomes: &[Outcome],
    reaping: bool,
) -> Result<Vec<Applied>> {
    if outcomes.is_empty() {
        return Ok(Vec::new());
    }
    // Two outcomes of one attempt in a batch (its timeout's, then its
    // late finish): the first wins, as if they were applied in turn.
    let mut seen = HashSet::new();
    let first: Vec<bool> = outcomes
        .iter()
        .map(|o| seen.insert((o.job.id, o.job.token)))
        .collect();
    let rows = Rows::of(
        outcomes
            .iter()
            .zip(&first)
            .filter(|(_, f)| **f)
            .map(|(o, _)| o),
    );
    let notes = rows.notes(outcomes);
    let sql: &str = if reaping {
        &COMPLETE_EXPIRED
    } else {
        &COMPLETE
    };
    let ended: HashMap<i64, i16> = storage.run(|conn| {
        let found = conn.query(
            sql,
            &[
                &rows.ids,
                &rows.tokens,
                &rows.kinds,
                &rows.results,
                &rows.finished_ages,
                &rows.started_ages,
                &rows.next_states,
                &rows.retry_delays,
                &rows.attempts,
                &rows.error_types,
                &rows.messages,
                &rows.tracebacks,
                &storage.channel,
                &notes.payloads,
                &notes.work,
            ],
        )?;
        Ok(found.iter().map(|r| (r.get(0), r.get(1))).collect())
    })?;
    Ok(outcomes
        .iter()
        .zip(first)
        .map(|(outcome, first)| match ended.get(&outcome.job.id) {
            Some(&status) if first => applied(outcome, status),
            _ => Applied::Stale,
        })
        .collect())
}

/// What a job's new state means for the outcome that put it there.
fn applied(outcome: &Outcome, status: i16) -> Applied {
    match State::from_i64(i64::from(status)) {
        Some(State::Complete) => Applied::Complete,
        Some(State::Cancelled) => Applied::Cancelled,
        Some(State::Dead) => Applied::Dead,
        _ => {
            // A retry: due when `after_failure` said, in this process's clock.
            let due = match &outcome.kind {
                OutcomeKind::Failure(failure) => {
                    after_failure(&outcome.job, failure, outcome.finished_at).1
                }
                _ => outcome.finished_at,
            };
            Applied::Retry(due)
        }
    }
}

/// The outcomes of a batch as the columns the statement binds.
#[derive(Default)]
struct Rows<'a> {
    ids: Vec<i64>,
    tokens: Vec<i64>,
    kinds: Vec<i16>,
    results: Vec<Option<&'a [u8]>>,
    finished_ages: Vec<i64>,
    started_ages: Vec<Option<i64>>,
    next_states: Vec<i16>,
    retry_delays: Vec<i64>,
    attempts: Vec<i32>,
    error_types: Vec<Option<&'a str>>,
    messages: Vec<Option<&'a str>>,
    tracebacks: Vec<Option<&'a str>>,
}

impl<'a> Rows<'a> {
    fn of(outcomes: impl Iterator<Item = &'a Outcome>) -> Rows<'a> {
        // Ages are measured now, against the clock the outcomes' times were
        // taken with, so a skewed clock cancels out.
        let now = now_micros();
        let mut rows = Rows::default();
        for outcome in outcomes {
            let job = &outcome.job;
            rows.ids.push(job.id);
            rows.tokens.push(job.token);
            rows.attempts.push(job.attempt as i32);
            rows.finished_ages
                .push(now.saturating_sub(outcome.finished_at).max(0));
            rows.started_ages
                .push(outcome.started_at.map(|at| now.saturating_sub(at).max(0)));
            let (kind, result, failure) = match &outcome.kind {
                OutcomeKind::Success(result) => (SUCCESS, Some(result.as_slice()), None),
                OutcomeKind::Failure(failure) => (FAILURE, None, Some(failure)),
                OutcomeKind::Cancelled => (CANCELLED, None, None),
            };
            rows.kinds.push(kind);
            rows.results.push(result);
            let (next, delay) = match failure {
                Some(f) => {
                    let (next, due) = after_failure(job, f, outcome.finished_at);
                    (next as i16, due.saturating_sub(outcome.finished_at))
                }
                None => (State::Complete as i16, 0),
            };
            rows.next_states.push(next);
            rows.retry_delays.push(delay);
            rows.error_types
                .push(failure.map(|f| f.error_type.as_str()));
            rows.messages.push(failure.map(|f| f.message.as_str()));
            rows.tracebacks.push(failure.map(|f| f.traceback.as_str()));
        }
        rows
    }

    /// Every job may end final (a failure too, when its cancellation was
    /// requested); retries make work, now or later.
    fn notes(&self, outcomes: &[Outcome]) -> Notes {
        let ids: Vec<i64> = outcomes.iter().map(|o| o.job.id).collect();
        let mut notes = Notes::default().finished(&ids);
        let retries = self
            .next_states
            .iter()
            .zip(&self.kinds)
            .zip(&self.retry_delays)
            .filter(|((next, kind), _)| **kind == FAILURE && **next != State::Dead as i16);
        let mut soonest: Option<Micros> = None;
        for (_, delay) in retries {
            soonest = Some(soonest.map_or(*delay, |s| s.min(*delay)));
        }
        match soonest {
            Some(0) => notes = notes.work(),
            Some(delay) => notes = notes.due_in(delay),
            None => {}
        }
        notes
    }
}

/// Extends the leases of attempts `$1`/`$2` (running or claimed) to `$3`
/// µs from now.
const RENEW_LEASES: &str = concat!(
    "UPDATE jobs j SET lease_expires_at = now() + $3::int8 * interval '1 microsecond' \
     FROM unnest($1::int8[], $2::int8[]) AS t(id, token) \
     WHERE j.id = t.id AND j.lease_token = t.token AND j.status + 0 IN (",
    state_sql!(Running, Claimed),
    ")"
);

pub(super) fn renew_leases(
    storage: &PostgresStorage,
    jobs: &[AttemptRef],
    lease: Duration,
) -> Result<usize> {
    if jobs.is_empty() {
        return Ok(0);
    }
    let (ids, tokens) = ids_and_tokens(jobs);
    let lease = micros(lease);
    storage.run(|conn| Ok(conn.execute(RENEW_LEASES, &[&ids, &tokens, &lease])? as usize))
}

/// Hands attempts `$1`/`$2` (running or claimed) back as ready, giving back
/// `$3` attempts; a job whose cancellation was requested ends cancelled.
fn release_sql(reaping: &str) -> String {
    format!(
        concat!(
            "WITH upd AS (UPDATE jobs j SET status = CASE WHEN j.cancel_requested THEN ",
            state_sql!(Cancelled),
            " ELSE ",
            state_sql!(Ready),
            " END, finished_at = CASE WHEN j.cancel_requested THEN now() END, \
             attempt = j.attempt - $3::int4, worker_id = NULL, lease_expires_at = NULL, \
             started_at = NULL FROM unnest($1::int8[], $2::int8[]) AS t(id, token) \
             WHERE j.id = t.id AND j.lease_token = t.token AND j.status + 0 IN (",
            state_sql!(Running, Claimed),
            "){reaping} RETURNING j.id, j.status, j.dependents, j.unique_key, \
             j.expires_at) \
             SELECT id, {notify}, ",
            settle_ended!("upd"),
            " FROM upd"
        ),
        reaping = reaping,
        notify = notify_sql(4, 5, 6)
    )
}

static RELEASE: LazyLock<String> = LazyLock::new(|| release_sql(""));
static RELEASE_EXPIRED: LazyLock<String> =
    LazyLock::new(|| release_sql(" AND j.lease_expires_at < now()"));

/// Releases attempts; with `reaping`, only those whose lease ran out.
/// Returns the ids released.
pub(super) fn release_ids(
    storage: &PostgresStorage,
    jobs: &[AttemptRef],
    refund_attempt: bool,
    reaping: bool,
) -> Result<Vec<i64>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let (ids, tokens) = ids_and_tokens(jobs);
    let notes = Notes::default().work().finished(&ids);
    let refund = i32::from(refund_attempt);
    let sql: &str = if reaping { &RELEASE_EXPIRED } else { &RELEASE };
    storage.run(|conn| {
        let rows = conn.query(
            sql,
            &[
                &ids,
                &tokens,
                &refund,
                &storage.channel,
                &notes.payloads,
                &notes.work,
            ],
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    })
}

pub(super) fn release(
    storage: &PostgresStorage,
    jobs: &[AttemptRef],
    refund_attempt: bool,
    reaping: bool,
) -> Result<usize> {
    Ok(release_ids(storage, jobs, refund_attempt, reaping)?.len())
}

/// Cancels job `$1` unless it is running or final.
static CANCEL_UNSTARTED: LazyLock<String> = LazyLock::new(|| {
    format!(
        concat!(
            "WITH upd AS (UPDATE jobs SET status = ",
            state_sql!(Cancelled),
            ", finished_at = now(), lease_expires_at = NULL WHERE id = $1::int8 AND status IN (",
            state_sql!(Ready, Scheduled, Retrying, Claimed, Waiting),
            ") RETURNING id, status, dependents, unique_key, expires_at) \
             SELECT id, {notify}, ",
            settle_ended!("upd"),
            " FROM upd"
        ),
        notify = notify_sql(2, 3, 4)
    )
});

pub(super) fn cancel(storage: &PostgresStorage, id: i64) -> Result<bool> {
    let notes = Notes::default().finished(&[id]);
    storage.run(|conn| {
        let rows = conn.query(
            &CANCEL_UNSTARTED,
            &[&id, &storage.channel, &notes.payloads, &notes.work],
        )?;
        Ok(!rows.is_empty())
    })
}

pub(super) fn request_cancel(storage: &PostgresStorage, id: i64) -> Result<CancelRequest> {
    let notes = Notes::default().finished(&[id]);
    storage.run(|conn| {
        let lock = conn.prepare("SELECT status FROM jobs WHERE id = $1::int8 FOR UPDATE")?;
        let ask = conn.prepare("UPDATE jobs SET cancel_requested = true WHERE id = $1::int8")?;
        let cancel = conn.prepare(&CANCEL_UNSTARTED)?;
        let mut tx = conn.client.transaction()?;
        let state = tx
            .query_opt(&lock, &[&id])?
            .and_then(|r| State::from_i64(i64::from(r.get::<_, i16>(0))));
        let request = match state {
            None => CancelRequest::NotFound,
            Some(State::Running) => {
                tx.execute(&ask, &[&id])?;
                CancelRequest::Requested
            }
            Some(s) if s.is_final() => CancelRequest::AlreadyFinal,
            Some(_) => {
                tx.query(
                    &cancel,
                    &[&id, &storage.channel, &notes.payloads, &notes.work],
                )?;
                CancelRequest::Cancelled
            }
        };
        tx.commit()?;
        Ok(request)
    })
}

/// Makes dead job `$1` ready now with a fresh set of attempts; its payload,
/// options and error history stay. Its unique key stays unless another live
/// job took it meanwhile: then the revived job goes without. Its expiry, which
/// its death dropped, is kept again.
static REVIVE_DEAD: LazyLock<String> = LazyLock::new(|| {
    format!(
        concat!(
            "WITH dead AS (SELECT id, unique_key, expires_at FROM jobs WHERE id = $1::int8 \
             AND status = ",
            state_sql!(Dead),
            " FOR UPDATE), \
             kept AS (INSERT INTO unique_keys (key, job_id) SELECT unique_key, id FROM dead \
             WHERE unique_key IS NOT NULL ON CONFLICT DO NOTHING RETURNING key), \
             expiry AS (INSERT INTO job_expiry (job_id, expires_at) SELECT id, expires_at \
             FROM dead WHERE expires_at IS NOT NULL ON CONFLICT DO NOTHING), \
             upd AS (UPDATE jobs SET status = ",
            state_sql!(Ready),
            ", attempt = 0, scheduled_at = now(), started_at = NULL, finished_at = NULL, \
             worker_id = NULL, lease_expires_at = NULL, result = NULL, cancel_requested = false, \
             unique_key = (SELECT key FROM kept) WHERE id = (SELECT id FROM dead) RETURNING id) \
             SELECT id, {notify} FROM upd"
        ),
        notify = notify_sql(2, 3, 4)
    )
});

pub(super) fn retry_dead(storage: &PostgresStorage, id: i64) -> Result<bool> {
    let notes = Notes::default().work();
    storage.run(|conn| {
        let rows = conn.query(
            &REVIVE_DEAD,
            &[&id, &storage.channel, &notes.payloads, &notes.work],
        )?;
        Ok(!rows.is_empty())
    })
}

/// Records the progress `$2` that the tasks of running jobs `$1` reported.
const RECORD_PROGRESS: &str = "UPDATE jobs j SET progress = t.progress \
    FROM unnest($1::int8[], $2::int2[]) AS t(id, progress) WHERE j.id = t.id";

pub(super) fn record_progress(storage: &PostgresStorage, progress: &[(i64, u8)]) -> Result<()> {
    if progress.is_empty() {
        return Ok(());
    }
    let mut sorted = progress.to_vec();
    // In id order, as every multi-row write locks its rows.
    sorted.sort_unstable();
    let ids: Vec<i64> = sorted.iter().map(|p| p.0).collect();
    let values: Vec<i16> = sorted.iter().map(|p| i16::from(p.1)).collect();
    storage.run(|conn| {
        conn.execute(RECORD_PROGRESS, &[&ids, &values])?;
        Ok(())
    })
}
