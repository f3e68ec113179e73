//! Settling the dependents of jobs that ended: run by every write
//! transaction before it commits (`SqliteStorage::write`), so that whatever
//! statement ended a job (a completion batch, a cancellation, reaping,
//! expiry, a quarantine), its dependents are settled in the same
//! transaction. Dependents it failed (mode success, the job not complete)
//! are cancelled with a `DependencyFailed` error naming the step that
//! failed, and their own dependents after them; the others count one
//! dependency fewer, and the last one makes them ready (or scheduled, if
//! their delay has not passed).
//!
//! A trigger would do the same, but costs every completion a call into a
//! trigger program, which measurably slowed the hot path; this costs each
//! transaction one probe of an index that is empty but for jobs that just
//! ended with dependents (`jobs_unsettled`).

use rusqlite::{params, OptionalExtension, Transaction};

use crate::error::Result;
use crate::job::{state_sql, Micros, State};
use crate::storage::common::{dependency_failed_message, DEPENDENCY_FAILED};

/// Jobs that ended with dependents not yet settled (the predicate of the
/// partial index jobs_unsettled).
pub(super) const UNSETTLED: &str = concat!(
    "SELECT id, status, task_name FROM jobs WHERE dependents > 0 AND status IN (",
    state_sql!(Complete, Dead, Cancelled, Expired),
    ")"
);

/// The message of the `DependencyFailed` error of job `?1`, if it was
/// cancelled because of a dependency: its dependents pass it on.
pub(super) const INHERITED_FAILURE: &str = "SELECT message FROM job_errors \
    WHERE job_id = ?1 AND error_type = 'DependencyFailed' ORDER BY rowid DESC LIMIT 1";

/// Records failure `?2` (of type `?4`) on the waiting jobs that job `?1`
/// fails (mode success, not settled), at `?3`.
const RECORD_FAILURES: &str = concat!(
    "INSERT INTO job_errors (job_id, attempt, error_type, message, traceback, failed_at) \
     SELECT j.id, j.attempt, ?4, ?2, '', ?3 \
     FROM job_dependencies d JOIN jobs j ON j.id = d.job_id \
     WHERE d.depends_on = ?1 AND d.satisfied = 0 AND d.mode = 0 AND j.status = ",
    state_sql!(Waiting)
);

/// Cancels at `?2` the waiting jobs that job `?1` fails.
const CANCEL_FAILED: &str = concat!(
    "UPDATE jobs SET status = ",
    state_sql!(Cancelled),
    ", finished_at = ?2 WHERE status = ",
    state_sql!(Waiting),
    " AND id IN (SELECT job_id FROM job_dependencies \
     WHERE depends_on = ?1 AND satisfied = 0 AND mode = 0)"
);

/// Counts job `?1` as settled for the waiting jobs it does not fail (all of
/// them when `?2`, it completed; else those of mode finish): ready at `?3`
/// once none is left (scheduled if their delay has not passed).
const RELEASE: &str = concat!(
    "UPDATE jobs SET pending_deps = pending_deps - 1, status = CASE \
     WHEN pending_deps > 1 THEN ",
    state_sql!(Waiting),
    " WHEN scheduled_at <= ?3 THEN ",
    state_sql!(Ready),
    " ELSE ",
    state_sql!(Scheduled),
    " END WHERE status = ",
    state_sql!(Waiting),
    " AND id IN (SELECT job_id FROM job_dependencies \
     WHERE depends_on = ?1 AND satisfied = 0 AND (mode = 1 OR ?2))"
);

const MARK_SATISFIED: &str =
    "UPDATE job_dependencies SET satisfied = 1 WHERE depends_on = ?1 AND satisfied = 0";

const SETTLED: &str = "UPDATE jobs SET dependents = 0 WHERE id = ?1";

/// Settles every job that ended with dependents, and theirs in turn (a
/// cancelled dependent with dependents is found by the next round). True
/// if it settled any: workers and waiters should hear of it.
pub(super) fn settle(tx: &Transaction, now: Micros) -> Result<bool> {
    let mut any = false;
    loop {
        let ended: Vec<(i64, i64, String)> = tx
            .prepare_cached(UNSETTLED)?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        if ended.is_empty() {
            return Ok(any);
        }
        any = true;
        for (id, status, task_name) in ended {
            let state = State::from_i64(status).unwrap_or(State::Dead);
            let complete = state == State::Complete;
            if !complete {
                let inherited: Option<String> = tx
                    .prepare_cached(INHERITED_FAILURE)?
                    .query_row([id], |r| r.get(0))
                    .optional()?;
                let message =
                    inherited.unwrap_or_else(|| dependency_failed_message(id, &task_name, state));
                tx.prepare_cached(RECORD_FAILURES)?.execute(params![
                    id,
                    message,
                    now,
                    DEPENDENCY_FAILED
                ])?;
                tx.prepare_cached(CANCEL_FAILED)?
                    .execute(params![id, now])?;
            }
            tx.prepare_cached(RELEASE)?
                .execute(params![id, complete, now])?;
            tx.prepare_cached(MARK_SATISFIED)?.execute([id])?;
            tx.prepare_cached(SETTLED)?.execute([id])?;
        }
    }
}
