//! What happens when a job that carries more than options ends (complete,
//! dead, cancelled or expired), in the transaction that ended it: its
//! `on_end` bits say what to do. Its dependents are settled: the ones it
//! fails (mode success, and it did not complete) are cancelled with a
//! `DependencyFailed` error naming the step that failed, and their own ends
//! run in turn; the others count one dependency fewer, and the last one makes
//! them ready (or scheduled, if their delay has not passed). Its unique key
//! is freed, and its expiry dropped.
//!
//! Plain jobs (`on_end = 0`) never come here: the hot statements that end
//! jobs say `AND on_end = 0`, and only when that changes nothing do they
//! retry without it and call [`job_ended`]. A trigger, or a partial index
//! over ended jobs, would cost every completion; this costs plain jobs one
//! comparison.

use rusqlite::{params, OptionalExtension, Transaction};

use super::cells::Cells;
use crate::error::Result;
use crate::job::{state_sql, Micros, State};
use crate::storage::common::{dependency_failed_message, DEPENDENCY_FAILED};

/// `on_end` bits.
pub(super) const SETTLE_DEPENDENTS: i64 = 1;
pub(super) const FREE_KEY: i64 = 2;
pub(super) const DROP_EXPIRY: i64 = 4;

const ON_END: &str = "SELECT on_end FROM jobs WHERE id = ?1";

const ENDED_JOB: &str = "SELECT status, task_name, unique_key FROM jobs WHERE id = ?1";

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

/// Cancels at `?2` the waiting jobs that job `?1` fails; returns those whose
/// own end has work to do.
const CANCEL_FAILED: &str = concat!(
    "UPDATE jobs SET status = ",
    state_sql!(Cancelled),
    ", finished_at = ?2 WHERE status = ",
    state_sql!(Waiting),
    " AND id IN (SELECT job_id FROM job_dependencies \
     WHERE depends_on = ?1 AND satisfied = 0 AND mode = 0) RETURNING id, on_end"
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

const FREE: &str = "DELETE FROM unique_keys WHERE key = ?1 AND job_id = ?2";

const DONE: &str = "UPDATE jobs SET on_end = 0, expiry = NULL WHERE id = ?1";

/// Runs the end of job `id`, which a statement of this transaction just
/// ended, and of the dependents it cancels. True if it had anything to do
/// (workers and waiters should hear of it).
pub(super) fn job_ended(tx: &Transaction, id: i64, now: Micros) -> Result<bool> {
    let mut todo = vec![id];
    let mut any = false;
    while let Some(id) = todo.pop() {
        // Read leniently: a quarantined row may hold cells of any type.
        let on_end: Option<i64> = tx
            .prepare_cached(ON_END)?
            .query_row([id], |r| Ok(r.get(0).unwrap_or(0)))
            .optional()?;
        if on_end.unwrap_or(0) == 0 {
            continue;
        }
        let on_end = on_end.unwrap_or(0);
        let (state, task_name, key) = tx.prepare_cached(ENDED_JOB)?.query_row([id], |r| {
            let mut cells = Cells::new(r);
            Ok((
                cells.state(0).unwrap_or(State::Dead),
                cells.get::<String>(1, "task_name").unwrap_or_default(),
                cells.get::<Option<String>>(2, "unique_key").flatten(),
            ))
        })?;
        if !state.is_final() {
            continue;
        }
        any = true;
        if on_end & FREE_KEY != 0 {
            if let Some(key) = key {
                tx.prepare_cached(FREE)?.execute(params![key, id])?;
            }
        }
        if on_end & SETTLE_DEPENDENTS != 0 {
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
                let cancelled: Vec<(i64, i64)> = tx
                    .prepare_cached(CANCEL_FAILED)?
                    .query_map(params![id, now], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                todo.extend(
                    cancelled
                        .into_iter()
                        .filter(|(_, on_end)| *on_end != 0)
                        .map(|(id, _)| id),
                );
            }
            tx.prepare_cached(RELEASE)?
                .execute(params![id, complete, now])?;
            tx.prepare_cached(MARK_SATISFIED)?.execute([id])?;
        }
        tx.prepare_cached(DONE)?.execute([id])?;
    }
    Ok(any)
}
