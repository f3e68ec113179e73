//! How running jobs end or go back: completions, failures, lease renewals,
//! releases, cancellation, and reviving dead jobs. Every change to a running
//! job is fenced by its lease token, so a worker that lost its lease cannot
//! overwrite what happened since.

use std::time::Duration;

use rusqlite::{params, OptionalExtension, Transaction};

use super::cells::Cells;
use super::ends::job_ended;
use super::SqliteStorage;
use crate::error::Result;
use crate::job::{
    micros, state_sql, Applied, AttemptRef, Failure, Micros, Outcome, OutcomeKind, State,
};
use crate::storage::common::after_failure;
use crate::storage::CancelRequest;

/// Ends attempt `?2` of job `?1` complete with result `?3` at `?4` (it
/// started at `?5` when that is known), if its `on_end` matches `$on_end`.
macro_rules! complete_attempt {
    ($on_end:literal) => {
        concat!(
            "UPDATE jobs SET status = ",
            state_sql!(Complete),
            ", result = ?3, finished_at = ?4, started_at = COALESCE(?5, started_at), \
             lease_expires_at = NULL WHERE id = ?1 AND status = ",
            state_sql!(Running),
            " AND lease_token = ?2 AND on_end ",
            $on_end
        )
    };
}

/// Completes a plain job (`on_end = 0`): the others take
/// `COMPLETE_WATCHED_ATTEMPT`, then their end (`ends`).
pub(super) const COMPLETE_ATTEMPT: &str = complete_attempt!("= 0");

/// `COMPLETE_ATTEMPT` for a job whose end has work to do.
pub(super) const COMPLETE_WATCHED_ATTEMPT: &str = complete_attempt!("<> 0");

/// Ends attempt `?2` of job `?1` cancelled at `?3` (started at `?4` when
/// known): the task stopped on request.
pub(super) const CANCEL_ATTEMPT: &str = concat!(
    "UPDATE jobs SET status = ",
    state_sql!(Cancelled),
    ", finished_at = ?3, started_at = COALESCE(?4, started_at), lease_expires_at = NULL \
     WHERE id = ?1 AND status = ",
    state_sql!(Running),
    " AND lease_token = ?2 RETURNING on_end"
);

pub(super) fn complete(storage: &SqliteStorage, outcomes: &[Outcome]) -> Result<Vec<Applied>> {
    if outcomes.is_empty() {
        return Ok(Vec::new());
    }
    let mut ended = false;
    let applied = storage.write(|tx| {
        let mut applied = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            let job = &outcome.job;
            applied.push(match &outcome.kind {
                OutcomeKind::Success(result) => {
                    let bind = params![
                        job.id,
                        job.token,
                        result,
                        outcome.finished_at,
                        outcome.started_at
                    ];
                    if tx.prepare_cached(COMPLETE_ATTEMPT)?.execute(bind)? == 1 {
                        Applied::Complete
                    } else if tx.prepare_cached(COMPLETE_WATCHED_ATTEMPT)?.execute(bind)? == 1 {
                        ended |= job_ended(tx, job.id, outcome.finished_at)?;
                        Applied::Complete
                    } else {
                        Applied::Stale
                    }
                }
                OutcomeKind::Failure(failure) => fail_attempt(
                    tx,
                    job,
                    failure,
                    outcome.started_at,
                    outcome.finished_at,
                    &mut ended,
                )?,
                OutcomeKind::Cancelled => {
                    let on_end: Option<i64> = tx
                        .prepare_cached(CANCEL_ATTEMPT)?
                        .query_row(
                            params![job.id, job.token, outcome.finished_at, outcome.started_at],
                            |r| r.get(0),
                        )
                        .optional()?;
                    match on_end {
                        Some(on_end) => {
                            if on_end != 0 {
                                ended |= job_ended(tx, job.id, outcome.finished_at)?;
                            }
                            Applied::Cancelled
                        }
                        None => Applied::Stale,
                    }
                }
            });
        }
        Ok(applied)
    })?;
    if ended {
        storage.wakeups.settled();
    }
    Ok(applied)
}

/// Ends failed attempt `?2` of job `?1` at `?5` (started at `?6` when known):
/// moves it to state `?3`, due at `?4` if that is a retry, unless its
/// cancellation was requested, which ends it cancelled. Returns the state it
/// ended in.
pub(super) const FAIL_ATTEMPT: &str = concat!(
    "UPDATE jobs SET status = CASE WHEN cancel_requested THEN ",
    state_sql!(Cancelled),
    " ELSE ?3 END, scheduled_at = CASE WHEN cancel_requested OR ?3 = ",
    state_sql!(Dead),
    " THEN scheduled_at ELSE ?4 END, finished_at = CASE WHEN cancel_requested OR ?3 = ",
    state_sql!(Dead),
    " THEN ?5 ELSE NULL END, started_at = COALESCE(?6, started_at), lease_expires_at = NULL \
     WHERE id = ?1 AND status = ",
    state_sql!(Running),
    " AND lease_token = ?2 RETURNING status, on_end"
);

pub(super) const RECORD_ERROR: &str = "INSERT INTO job_errors \
    (job_id, attempt, error_type, message, traceback, failed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// Ends a failed attempt: schedules the next run, or moves the job to the
/// dead letters when it is out of attempts or the failure is not retryable.
/// A job whose cancellation was requested ends cancelled instead. Fenced like
/// every completion; returns `Stale` if the attempt no longer holds the job.
/// A job that ended with work for its end gets it done (`ended` set).
pub(super) fn fail_attempt(
    tx: &Transaction,
    job: &AttemptRef,
    failure: &Failure,
    started_at: Option<Micros>,
    now: Micros,
    ended_any: &mut bool,
) -> Result<Applied> {
    let (next, due) = after_failure(job, failure, now);
    let row: Option<(i64, i64)> = tx
        .prepare_cached(FAIL_ATTEMPT)?
        .query_row(
            params![job.id, job.token, next as i64, due, now, started_at],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((ended, on_end)) = row else {
        return Ok(Applied::Stale);
    };
    tx.prepare_cached(RECORD_ERROR)?.execute(params![
        job.id,
        job.attempt,
        failure.error_type,
        failure.message,
        failure.traceback,
        now
    ])?;
    if on_end != 0 {
        *ended_any |= job_ended(tx, job.id, now)?;
    }
    Ok(match State::from_i64(ended) {
        Some(State::Cancelled) => Applied::Cancelled,
        Some(State::Dead) => Applied::Dead,
        _ => Applied::Retry(due),
    })
}

/// Extends the lease of attempt `?2` of job `?1` (running or claimed) to `?3`.
pub(super) const RENEW_LEASE: &str = concat!(
    "UPDATE jobs SET lease_expires_at = ?3 WHERE id = ?1 AND status IN (",
    state_sql!(Running, Claimed),
    ") AND lease_token = ?2"
);

pub(super) fn renew_leases(
    storage: &SqliteStorage,
    jobs: &[AttemptRef],
    lease: Duration,
) -> Result<usize> {
    let until = storage.now().saturating_add(micros(lease));
    storage.write(|tx| {
        let mut stmt = tx.prepare_cached(RENEW_LEASE)?;
        let mut renewed = 0;
        for job in jobs {
            renewed += stmt.execute(params![job.id, job.token, until])?;
        }
        Ok(renewed)
    })
}

/// Hands attempt `?2` of job `?1` (running or claimed) back as ready, giving
/// back `?3` attempts (0 or 1); a job whose cancellation was requested ends
/// cancelled at `?4`.
pub(super) const RELEASE_ATTEMPT: &str = concat!(
    "UPDATE jobs SET status = CASE WHEN cancel_requested THEN ",
    state_sql!(Cancelled),
    " ELSE ",
    state_sql!(Ready),
    " END, finished_at = CASE WHEN cancel_requested THEN ?4 END, attempt = attempt - ?3, \
     worker_id = NULL, lease_expires_at = NULL, started_at = NULL \
     WHERE id = ?1 AND status IN (",
    state_sql!(Running, Claimed),
    ") AND lease_token = ?2 RETURNING on_end"
);

pub(super) fn release(
    storage: &SqliteStorage,
    jobs: &[AttemptRef],
    refund_attempt: bool,
) -> Result<usize> {
    if jobs.is_empty() {
        return Ok(0);
    }
    let mut ended = false;
    let released = storage.write(|tx| {
        let now = storage.now();
        let mut released = 0;
        for job in jobs {
            released += release_attempt(tx, job, refund_attempt, now, &mut ended)? as usize;
        }
        Ok(released)
    })?;
    if ended {
        storage.wakeups.settled();
    }
    Ok(released)
}

/// Hands one attempt back (`RELEASE_ATTEMPT`); a job that ends cancelled
/// instead gets its end done. False if the attempt no longer held the job.
pub(super) fn release_attempt(
    tx: &Transaction,
    job: &AttemptRef,
    refund_attempt: bool,
    now: Micros,
    ended: &mut bool,
) -> Result<bool> {
    let on_end: Option<i64> = tx
        .prepare_cached(RELEASE_ATTEMPT)?
        .query_row(
            params![job.id, job.token, refund_attempt as i64, now],
            |r| r.get(0),
        )
        .optional()?;
    if on_end.is_some_and(|bits| bits != 0) {
        *ended |= job_ended(tx, job.id, now)?;
    }
    Ok(on_end.is_some())
}

pub(super) fn cancel(storage: &SqliteStorage, id: i64) -> Result<bool> {
    let now = storage.now();
    let (cancelled, ended) = storage.write(|tx| cancel_unstarted(tx, id, now))?;
    if ended {
        storage.wakeups.settled();
    }
    Ok(cancelled)
}

pub(super) const STATE_OF_JOB: &str = "SELECT status FROM jobs WHERE id = ?1";

/// Records that job `?1` should stop; the running task sees it.
pub(super) const ASK_TO_STOP: &str = "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1";

pub(super) fn request_cancel(storage: &SqliteStorage, id: i64) -> Result<CancelRequest> {
    let now = storage.now();
    let mut ended = false;
    let request = storage.write(|tx| {
        let state: Option<Option<State>> = tx
            .prepare_cached(STATE_OF_JOB)?
            .query_row([id], |r| Ok(Cells::new(r).state(0)))
            .optional()?;
        Ok(match state {
            None => CancelRequest::NotFound,
            // A row that cannot be read is quarantined, never run.
            Some(None) => CancelRequest::AlreadyFinal,
            Some(Some(state)) => match state {
                State::Running => {
                    tx.prepare_cached(ASK_TO_STOP)?.execute([id])?;
                    CancelRequest::Requested
                }
                s if s.is_final() => CancelRequest::AlreadyFinal,
                _ => {
                    ended = cancel_unstarted(tx, id, now)?.1;
                    CancelRequest::Cancelled
                }
            },
        })
    })?;
    if ended {
        storage.wakeups.settled();
    }
    Ok(request)
}

/// Cancels job `?1` at `?2` unless it is running or final. A claimed job
/// has not started: its worker finds it cancelled when it goes to start it.
pub(super) const CANCEL_UNSTARTED: &str = concat!(
    "UPDATE jobs SET status = ",
    state_sql!(Cancelled),
    ", finished_at = ?2, lease_expires_at = NULL WHERE id = ?1 AND status IN (",
    state_sql!(Ready, Scheduled, Retrying, Claimed, Waiting),
    ") RETURNING on_end"
);

/// Cancels the job if it has not started (pending, delayed, waiting to retry
/// or for its dependencies, or claimed by a worker that has not started
/// it). Returns whether it did, and whether its end had work to do.
fn cancel_unstarted(tx: &Transaction, id: i64, now: Micros) -> Result<(bool, bool)> {
    let on_end: Option<i64> = tx
        .prepare_cached(CANCEL_UNSTARTED)?
        .query_row(params![id, now], |r| r.get(0))
        .optional()?;
    let ended = match on_end {
        Some(bits) if bits != 0 => job_ended(tx, id, now)?,
        _ => false,
    };
    Ok((on_end.is_some(), ended))
}

/// Makes dead job `?1` ready at `?2` with a fresh set of attempts; its
/// payload, options and error history stay.
pub(super) const REVIVE_DEAD: &str = concat!(
    "UPDATE jobs SET status = ",
    state_sql!(Ready),
    ", attempt = 0, scheduled_at = ?2, started_at = NULL, finished_at = NULL, \
     worker_id = NULL, lease_expires_at = NULL, result = NULL, cancel_requested = 0 \
     WHERE id = ?1 AND status = ",
    state_sql!(Dead)
);

/// Job `?1`'s unique key, if it was given one.
pub(super) const KEY_OF: &str = "SELECT unique_key FROM job_details WHERE job_id = ?1";

/// Takes unique key `?1` for job `?2` unless a live job holds it.
pub(super) const TAKE_KEY: &str =
    "INSERT INTO unique_keys (key, job_id) VALUES (?1, ?2) ON CONFLICT DO NOTHING";

/// The revived job `?1` holds its key again: its end frees it.
pub(super) const KEEP_KEY: &str = "UPDATE jobs SET on_end = on_end | 2 WHERE id = ?1";

/// The revived job `?1` goes without its key (another live job holds it).
pub(super) const DROP_KEY: &str = "UPDATE job_details SET unique_key = NULL WHERE job_id = ?1";

pub(super) fn retry_dead(storage: &SqliteStorage, id: i64) -> Result<bool> {
    let now = storage.now();
    storage.write(|tx| {
        if tx.prepare_cached(REVIVE_DEAD)?.execute(params![id, now])? == 0 {
            return Ok(false);
        }
        let key: Option<String> = tx
            .prepare_cached(KEY_OF)?
            .query_row([id], |r| r.get(0))
            .optional()?
            .flatten();
        if let Some(key) = key {
            // Its key is its own again, unless another live job took it
            // while it was dead: then it goes without.
            if tx.prepare_cached(TAKE_KEY)?.execute(params![key, id])? == 1 {
                tx.prepare_cached(KEEP_KEY)?.execute([id])?;
            } else {
                tx.prepare_cached(DROP_KEY)?.execute([id])?;
            }
        }
        Ok(true)
    })
}

/// Records the progress `?2` that the task of running job `?1` reported.
pub(super) const RECORD_PROGRESS: &str = "INSERT INTO job_details (job_id, progress) \
    VALUES (?1, ?2) ON CONFLICT (job_id) DO UPDATE SET progress = excluded.progress";

pub(super) fn record_progress(storage: &SqliteStorage, progress: &[(i64, u8)]) -> Result<()> {
    if progress.is_empty() {
        return Ok(());
    }
    storage.write(|tx| {
        let mut stmt = tx.prepare_cached(RECORD_PROGRESS)?;
        for &(id, value) in progress {
            stmt.execute(params![id, value])?;
        }
        Ok(())
    })
}
