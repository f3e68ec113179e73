//! Taking due jobs: one statement marks a batch running (or claimed, for a
//! worker's prefetch) and returns it; starting claimed jobs later; and the
//! look at the best waiting job that decides whether a prefetch is handed
//! back.

use rusqlite::{params, Statement, Transaction};

use super::cells::{quarantine, Cells, QuarantinedJob};
use super::ends::job_ended;
use super::SqliteStorage;
use crate::error::Result;
use crate::job::{micros, state_sql, AttemptRef, ClaimedJob, Feed, Micros, State};
use crate::storage::common::{json_names, sort_in_claim_order, timeout_from_millis};
use crate::storage::{ClaimRequest, JobScope};

/// Which optional filters a statement applies to the ready jobs it walks,
/// each bound as one parameter: queues (`?6`, a JSON array of names), tasks
/// (`?7`, likewise) and a priority floor (`?8`). One text per combination,
/// so each stays in the statement cache.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Filters {
    pub queues: bool,
    pub tasks: bool,
    pub above_priority: bool,
    /// Leave out rate-limited tasks (`?9`) and queues (`?10`): see
    /// `rate_limits`.
    pub skips: bool,
}

impl Filters {
    fn sql(self) -> String {
        let mut sql = String::new();
        if self.queues {
            sql += " AND queue IN (SELECT value FROM json_each(?6))";
        }
        if self.tasks {
            sql += " AND task_name IN (SELECT value FROM json_each(?7))";
        }
        if self.above_priority {
            sql += " AND priority > ?8";
        }
        if self.skips {
            sql += " AND task_name NOT IN (SELECT value FROM json_each(?9)) \
                     AND queue NOT IN (SELECT value FROM json_each(?10))";
        }
        sql
    }
}

/// Binds the filters' parameters (and only those the text uses).
fn bind_filters(
    stmt: &mut Statement,
    scope: JobScope,
    above_priority: Option<i64>,
) -> rusqlite::Result<()> {
    if let Some(queues) = scope.queues {
        stmt.raw_bind_parameter(6, json_names(queues))?;
    }
    if let Some(tasks) = scope.tasks {
        stmt.raw_bind_parameter(7, json_names(tasks))?;
    }
    if let Some(priority) = above_priority {
        stmt.raw_bind_parameter(8, priority)?;
    }
    Ok(())
}

/// Takes up to `?4` ready jobs in claim order for worker `?1` at `?2`,
/// leased until `?3`, into state `?5` (running, started now, or claimed, not
/// started), and returns them, with their expiry: one past it is ended
/// expired in the same transaction (`EXPIRE_CLAIMED`), never run.
/// Filtering expired jobs out in the subquery instead would make it read
/// every candidate's row, where now it walks the index alone.
///
/// The limit is an expression, not a bare `?4`: SQLite's planner reads the
/// value bound to a bare `LIMIT ?`, and then re-prepares the statement every
/// time that parameter is bound again, whatever the value. That cost more
/// than the claim itself: a third of a noop drain's instructions (callgrind).
pub(super) fn claim_sql(filters: Filters) -> String {
    format!(
        concat!(
            "UPDATE jobs SET status = ?5, attempt = attempt + 1, lease_token = lease_token + 1, \
             worker_id = ?1, started_at = CASE WHEN ?5 = ",
            state_sql!(Running),
            " THEN ?2 END, lease_expires_at = ?3 \
             WHERE id IN (SELECT id FROM jobs WHERE status = ",
            state_sql!(Ready),
            "{filters} ORDER BY priority DESC, scheduled_at, id LIMIT CAST(?4 AS INTEGER)) \
             RETURNING id, queue, task_name, payload, priority, scheduled_at, attempt, \
             lease_token, max_retries, retry_backoff, timeout_ms, feed, expiry"
        ),
        // A format string made by a macro cannot capture variables by name.
        filters = filters.sql()
    )
}

pub(super) fn claim(storage: &SqliteStorage, request: &ClaimRequest) -> Result<Vec<ClaimedJob>> {
    if request.limit() == 0 {
        return Ok(Vec::new());
    }
    let sql = claim_sql(Filters {
        queues: request.queues.is_some(),
        tasks: request.tasks.is_some(),
        above_priority: request.above_priority.is_some(),
        skips: request.skip_tasks.is_some() || request.skip_queues.is_some(),
    });
    let now = storage.now();
    let mut expired = false;
    let (jobs, quarantined) = storage.write(|tx| {
        let mut quarantined = Vec::new();
        let mut jobs = take(
            tx,
            &sql,
            request,
            State::Running,
            request.start,
            now,
            &mut quarantined,
            &mut expired,
        )?;
        // The held ones come after every started one in claim order: the
        // first statement took the best, and both run in one transaction.
        let held = take(
            tx,
            &sql,
            request,
            State::Claimed,
            request.hold,
            now,
            &mut quarantined,
            &mut expired,
        )?;
        jobs.extend(held);
        Ok((jobs, quarantined))
    })?;
    if expired {
        // Their waiters, and their dependents' (settled by their ends).
        storage.wakeups.settled();
    }
    storage.quarantined.lock().extend(quarantined);
    Ok(jobs)
}

/// Takes up to `limit` jobs into `state`. A row that cannot be read is
/// quarantined instead (and another job taken in its place), so that one bad
/// row never fails the claims of every worker.
#[allow(clippy::too_many_arguments)]
fn take(
    tx: &Transaction,
    sql: &str,
    request: &ClaimRequest,
    state: State,
    limit: usize,
    now: Micros,
    quarantined: &mut Vec<QuarantinedJob>,
    expired: &mut bool,
) -> Result<Vec<ClaimedJob>> {
    let mut jobs = Vec::with_capacity(limit);
    while jobs.len() < limit {
        let want = limit - jobs.len();
        let (good, bad) = take_once(tx, sql, request, state, want, now)?;
        let (unexpired, past): (Vec<Taken>, Vec<Taken>) = good
            .into_iter()
            .partition(|(_, expires)| expires.is_none_or(|e| e > now));
        let (taken, replace) = (
            unexpired.len() + past.len() + bad.len(),
            past.len() + bad.len(),
        );
        jobs.extend(unexpired.into_iter().map(|(job, _)| job));
        for (job, _) in past {
            tx.prepare_cached(EXPIRE_CLAIMED)?
                .execute(params![job.id, now])?;
            job_ended(tx, job.id, now)?;
            *expired = true;
        }
        for (id, attempt, problem) in bad {
            quarantine(tx, id, attempt, &problem)?;
            quarantined.push(QuarantinedJob { id, problem });
        }
        // Only quarantines and expiries leave room to fill; fewer rows means
        // none left.
        if replace == 0 || taken < want {
            break;
        }
    }
    // RETURNING yields rows in update order, which SQLite does not promise
    // to match the subquery's ORDER BY.
    sort_in_claim_order(&mut jobs);
    Ok(jobs)
}

/// A job row that could not be read: its id, its attempt as far as it could
/// be read, and what was wrong.
type Unreadable = (i64, i64, String);

/// A claimed job, and when it expires.
type Taken = (ClaimedJob, Option<Micros>);

/// Ends job `?1`, claimed in this transaction past its expiry, expired at
/// `?2`, as if never claimed (its attempt given back).
pub(super) const EXPIRE_CLAIMED: &str = concat!(
    "UPDATE jobs SET status = ",
    state_sql!(Expired),
    ", finished_at = ?2, started_at = NULL, worker_id = NULL, lease_expires_at = NULL, \
     attempt = attempt - 1 WHERE id = ?1"
);

fn take_once(
    tx: &Transaction,
    sql: &str,
    request: &ClaimRequest,
    state: State,
    limit: usize,
    now: Micros,
) -> Result<(Vec<Taken>, Vec<Unreadable>)> {
    if limit == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut stmt = tx.prepare_cached(sql)?;
    stmt.raw_bind_parameter(1, request.worker_id)?;
    stmt.raw_bind_parameter(2, now)?;
    stmt.raw_bind_parameter(3, now.saturating_add(micros(request.lease)))?;
    stmt.raw_bind_parameter(4, limit as i64)?;
    stmt.raw_bind_parameter(5, state as i64)?;
    let scope = JobScope {
        queues: request.queues,
        tasks: request.tasks,
    };
    bind_filters(&mut stmt, scope, request.above_priority)?;
    if request.skip_tasks.is_some() || request.skip_queues.is_some() {
        stmt.raw_bind_parameter(9, json_names(request.skip_tasks.unwrap_or_default()))?;
        stmt.raw_bind_parameter(10, json_names(request.skip_queues.unwrap_or_default()))?;
    }
    let mut rows = stmt.raw_query();
    let (mut good, mut bad) = (Vec::with_capacity(limit), Vec::new());
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        // Every cell is read, so that a quarantine names every bad one.
        let mut cells = Cells::new(row);
        let queue = cells.get(1, "queue");
        let task_name = cells.get(2, "task_name");
        let payload = cells.get(3, "payload");
        let priority = cells.get(4, "priority");
        let scheduled_at = cells.get(5, "scheduled_at");
        let attempt = cells.get(6, "attempt");
        let token = cells.get(7, "lease_token");
        let max_retries = cells.get(8, "max_retries");
        let retry_backoff = cells.get(9, "retry_backoff");
        let timeout_ms = cells.get::<Option<i64>>(10, "timeout_ms");
        let feed = cells.get::<i64>(11, "feed");
        let expires_at = cells.get::<Option<i64>>(12, "expiry");
        let job = (|| {
            Some(ClaimedJob {
                id,
                queue: queue?,
                task_name: task_name?,
                payload: payload?,
                priority: priority?,
                scheduled_at: scheduled_at?,
                attempt: attempt?,
                token: token?,
                max_retries: max_retries?,
                retry_backoff: retry_backoff?,
                timeout: timeout_from_millis(timeout_ms?),
                running: state == State::Running,
                feed: Feed::from_i64(feed?),
            })
        })();
        match job.zip(expires_at) {
            Some(taken) => good.push(taken),
            None => {
                let attempt = row.get::<_, i64>(6).unwrap_or(0);
                bad.push((id, attempt, cells.problems().unwrap_or_default()));
            }
        }
    }
    Ok((good, bad))
}

/// Starts claimed attempt `?2` of job `?1` at `?3`, unless it was cancelled
/// or taken back meanwhile, or expired while it was held (it stays claimed
/// until its lease runs out, then the claims pass over it and
/// `promote_due` ends it expired: it never runs).
pub(super) const START_CLAIMED: &str = concat!(
    "UPDATE jobs SET status = ",
    state_sql!(Running),
    ", started_at = ?3 WHERE id = ?1 AND status = ",
    state_sql!(Claimed),
    " AND lease_token = ?2 AND (expiry IS NULL OR expiry > ?3)"
);

pub(super) fn start_claimed(storage: &SqliteStorage, jobs: &[AttemptRef]) -> Result<Vec<bool>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let now = storage.now();
    storage.write(|tx| {
        let mut stmt = tx.prepare_cached(START_CLAIMED)?;
        let mut started = Vec::with_capacity(jobs.len());
        for job in jobs {
            started.push(stmt.execute(params![job.id, job.token, now])? == 1);
        }
        Ok(started)
    })
}

/// The priority of the first ready job in claim order (among the filtered).
pub(super) fn best_ready_sql(filters: Filters) -> String {
    format!(
        concat!(
            "SELECT priority FROM jobs WHERE status = ",
            state_sql!(Ready),
            "{filters} ORDER BY priority DESC, scheduled_at, id LIMIT 1"
        ),
        filters = filters.sql()
    )
}

pub(super) fn best_ready_priority(storage: &SqliteStorage, scope: JobScope) -> Result<Option<i64>> {
    let sql = best_ready_sql(Filters {
        queues: scope.queues.is_some(),
        tasks: scope.tasks.is_some(),
        above_priority: false,
        skips: false,
    });
    storage.read(|conn| {
        let mut stmt = conn.prepare_cached(&sql)?;
        bind_filters(&mut stmt, scope, None)?;
        let mut rows = stmt.raw_query();
        Ok(match rows.next()? {
            Some(row) => Some(row.get(0)?),
            None => None,
        })
    })
}
