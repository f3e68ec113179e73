//! The workers registry: which workers serve the database, with which queues
//! and tasks, and every task name a worker ever had. Jobs wait for a worker
//! that has their task (claims filter on it), so the registry is what tells
//! an operator which jobs wait for whom, and what finally dead-letters a job
//! whose task no worker has ever known.

use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::cells::{quarantine, Cells, QuarantinedJob};
use super::ends::job_ended;
use super::outcomes::RECORD_ERROR;
use super::SqliteStorage;
use crate::error::Result;
use crate::job::{micros, state_sql, WorkerRecord};
use crate::storage::common::{json_names, unknown_task};
use crate::storage::{UnknownTaskJob, WorkerRegistration};

/// Records worker `?1` (or updates its row when it registers again).
pub(super) const REGISTER: &str = "INSERT INTO workers \
    (id, host, pid, threads, queues, tasks, started_at, heartbeat_at, expires_at) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
    ON CONFLICT (id) DO UPDATE SET threads = excluded.threads, queues = excluded.queues, \
    tasks = excluded.tasks, heartbeat_at = excluded.heartbeat_at, expires_at = excluded.expires_at";

/// Remembers task name `?1` as known at `?2`.
pub(super) const KNOW_TASK: &str = "INSERT INTO known_tasks (name, first_seen, last_seen) \
    VALUES (?1, ?2, ?2) ON CONFLICT (name) DO UPDATE SET last_seen = excluded.last_seen";

pub(super) fn register_worker(storage: &SqliteStorage, worker: &WorkerRegistration) -> Result<()> {
    let now = storage.now();
    storage.write(|tx| {
        tx.prepare_cached(REGISTER)?.execute(params![
            worker.id,
            worker.host,
            worker.pid,
            worker.threads,
            worker.queues.map(json_names),
            json_names(worker.tasks),
            now,
            now,
            now.saturating_add(micros(worker.lease)),
        ])?;
        let mut know = tx.prepare_cached(KNOW_TASK)?;
        for task in worker.tasks {
            know.execute(params![task, now])?;
        }
        Ok(())
    })
}

pub(super) const RENEW_WORKER: &str =
    "UPDATE workers SET heartbeat_at = ?2, expires_at = ?3 WHERE id = ?1";

pub(super) fn renew_worker(storage: &SqliteStorage, id: &str, lease: Duration) -> Result<bool> {
    let now = storage.now();
    let expires_at = now.saturating_add(micros(lease));
    storage.write(|tx| {
        Ok(tx
            .prepare_cached(RENEW_WORKER)?
            .execute(params![id, now, expires_at])?
            == 1)
    })
}

pub(super) fn unregister_worker(storage: &SqliteStorage, id: &str) -> Result<()> {
    storage.write(|tx| {
        tx.prepare_cached("DELETE FROM workers WHERE id = ?1")?
            .execute([id])?;
        Ok(())
    })
}

/// Workers whose heartbeat has not lapsed at `?1`, oldest first.
pub(super) const LIVE_WORKERS: &str = "SELECT id, host, pid, threads, queues, tasks, \
    started_at, heartbeat_at, expires_at FROM workers WHERE expires_at >= ?1 ORDER BY started_at, id";

pub(super) fn workers(storage: &SqliteStorage) -> Result<Vec<WorkerRecord>> {
    let now = storage.now();
    storage.read(|conn| {
        let rows: Vec<(WorkerRecord, Option<String>, String)> = conn
            .prepare_cached(LIVE_WORKERS)?
            .query_map([now], worker_row)?
            .collect::<rusqlite::Result<_>>()?;
        rows.into_iter()
            .map(|(mut worker, queues, tasks)| {
                worker.queues = queues.map(|q| names(conn, &q)).transpose()?;
                worker.tasks = names(conn, &tasks)?;
                Ok(worker)
            })
            .collect()
    })
}

/// A worker's row, with its queue and task lists still as JSON.
fn worker_row(row: &Row) -> rusqlite::Result<(WorkerRecord, Option<String>, String)> {
    Ok((
        WorkerRecord {
            id: row.get(0)?,
            host: row.get(1)?,
            pid: row.get(2)?,
            threads: row.get(3)?,
            queues: None,
            tasks: Vec::new(),
            started_at: row.get(6)?,
            heartbeat_at: row.get(7)?,
            expires_at: row.get(8)?,
        },
        row.get(4)?,
        row.get(5)?,
    ))
}

/// The strings of a JSON array, as SQLite reads it.
fn names(conn: &Connection, json: &str) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT value FROM json_each(?1)")?;
    let names = stmt
        .query_map([json], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(names)
}

pub(super) fn forget_lapsed_workers(storage: &SqliteStorage) -> Result<usize> {
    let now = storage.now();
    storage.write(|tx| {
        Ok(tx
            .prepare_cached("DELETE FROM workers WHERE expires_at < ?1")?
            .execute([now])?)
    })
}

/// Jobs waiting (ready, delayed, or failed with a retry due) for a task no
/// worker live at `?1` has, by task name.
pub(super) const UNSERVED_TASKS: &str = concat!(
    "SELECT task_name, COUNT(*) FROM jobs WHERE status IN (",
    state_sql!(Ready, Scheduled, Retrying),
    ") AND task_name NOT IN (SELECT j.value FROM workers w, json_each(w.tasks) j \
     WHERE w.expires_at >= ?1) GROUP BY task_name ORDER BY task_name"
);

pub(super) fn unserved_tasks(storage: &SqliteStorage) -> Result<Vec<(String, u64)>> {
    let now = storage.now();
    storage.read(|conn| {
        let rows = conn
            .prepare_cached(UNSERVED_TASKS)?
            .query_map([now], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    })
}

/// Ready jobs enqueued before `?1` whose task no worker has ever registered,
/// and ready jobs whose task name is no text at all (another program wrote
/// them; no worker can ever match them): a bounded batch, the rest wait for
/// the next look.
pub(super) const UNKNOWN_TASK_JOBS: &str = concat!(
    "SELECT id, attempt, task_name FROM jobs WHERE status = ",
    state_sql!(Ready),
    " AND (typeof(task_name) <> 'text' OR (created_at < ?1 \
     AND task_name NOT IN (SELECT name FROM known_tasks))) LIMIT 1000"
);

/// Dead-letters ready job `?1` at `?2`.
pub(super) const KILL_READY: &str = concat!(
    "UPDATE jobs SET status = ",
    state_sql!(Dead),
    ", finished_at = ?2 WHERE id = ?1 AND status = ",
    state_sql!(Ready),
    " RETURNING on_end"
);

pub(super) fn fail_unknown_tasks(
    storage: &SqliteStorage,
    grace: Option<Duration>,
) -> Result<Vec<UnknownTaskJob>> {
    let now = storage.now();
    // Without a grace period, only task names that cannot be read are taken.
    let enqueued_before = grace.map_or(i64::MIN, |grace| now.saturating_sub(micros(grace)));
    let (failed, quarantined) = storage.write(|tx| {
        // (id, attempt, task name), or the id and what cannot be read.
        type Found = std::result::Result<(i64, i64, String), (i64, String)>;
        let found: Vec<Found> = tx
            .prepare_cached(UNKNOWN_TASK_JOBS)?
            .query_map([enqueued_before], |r| {
                let id: i64 = r.get(0)?;
                let mut cells = Cells::new(r);
                let attempt = cells.get::<i64>(1, "attempt").unwrap_or(0);
                Ok(match cells.get::<String>(2, "task_name") {
                    Some(name) => Ok((id, attempt, name)),
                    None => Err((id, cells.problems().unwrap_or_default())),
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let (mut failed, mut quarantined) = (Vec::new(), Vec::new());
        for found in found {
            let (id, attempt, task_name) = match found {
                Ok(found) => found,
                Err((id, problem)) => {
                    quarantine(tx, id, 0, &problem)?;
                    quarantined.push(QuarantinedJob { id, problem });
                    continue;
                }
            };
            let on_end: Option<i64> = tx
                .prepare_cached(KILL_READY)?
                .query_row(params![id, now], |r| r.get(0))
                .optional()?;
            let Some(on_end) = on_end else {
                continue;
            };
            if on_end != 0 {
                job_ended(tx, id, now)?;
            }
            let failure = unknown_task(&task_name);
            tx.prepare_cached(RECORD_ERROR)?.execute(params![
                id,
                attempt,
                failure.error_type,
                failure.message,
                failure.traceback,
                now
            ])?;
            failed.push(UnknownTaskJob { id, task_name });
        }
        Ok((failed, quarantined))
    })?;
    storage.quarantined.lock().extend(quarantined);
    Ok(failed)
}

/// Whether any worker ever registered `name` (for tests and tools).
#[cfg(test)]
pub(super) fn is_known_task(storage: &SqliteStorage, name: &str) -> Result<bool> {
    storage.read(|conn| {
        Ok(conn
            .prepare_cached("SELECT 1 FROM known_tasks WHERE name = ?1")?
            .query_row([name], |_| Ok(()))
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })?
            .is_some())
    })
}
