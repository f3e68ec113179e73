//! The workers registry (see the SQLite backend's): who serves the schema,
//! with which queues and tasks, and every task name a worker ever had.
//! Heartbeats and expiries are the server's times.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use super::listener::{notify_sql, Notes};
use super::{micros_of, PostgresStorage};
use crate::error::Result;
use crate::job::{micros, state_sql, WorkerRecord};
use crate::storage::common::unknown_task;
use crate::storage::{UnknownTaskJob, WorkerRegistration};

/// Records worker `$1` (or updates its row), and its tasks `$6` as known.
/// Task names are upserted in sorted order, so two workers registering the
/// same names at once never wait on each other in a cycle.
const REGISTER: &str = "WITH w AS (INSERT INTO workers \
    (id, host, pid, threads, queues, tasks, started_at, heartbeat_at, expires_at) \
    VALUES ($1::text, $2::text, $3::int8, $4::int8, $5::text[], $6::text[], now(), now(), \
    now() + $7::int8 * interval '1 microsecond') \
    ON CONFLICT (id) DO UPDATE SET threads = excluded.threads, queues = excluded.queues, \
    tasks = excluded.tasks, heartbeat_at = excluded.heartbeat_at, \
    expires_at = excluded.expires_at RETURNING 1), \
    known AS (INSERT INTO known_tasks (name, first_seen, last_seen) \
    SELECT DISTINCT name, now(), now() FROM unnest($6::text[]) AS name ORDER BY name \
    ON CONFLICT (name) DO UPDATE SET last_seen = excluded.last_seen RETURNING 1) \
    SELECT (SELECT count(*) FROM w), (SELECT count(*) FROM known)";

pub(super) fn register_worker(
    storage: &PostgresStorage,
    worker: &WorkerRegistration,
) -> Result<()> {
    let queues = worker.queues.map(|q| q.to_vec());
    let tasks = worker.tasks.to_vec();
    let (pid, threads, lease) = (
        i64::from(worker.pid),
        i64::from(worker.threads),
        micros(worker.lease),
    );
    storage.run(|conn| {
        conn.query(
            REGISTER,
            &[
                &worker.id,
                &worker.host,
                &pid,
                &threads,
                &queues,
                &tasks,
                &lease,
            ],
        )?;
        Ok(())
    })
}

const RENEW_WORKER: &str = "UPDATE workers SET heartbeat_at = now(), \
    expires_at = now() + $2::int8 * interval '1 microsecond' WHERE id = $1::text";

pub(super) fn renew_worker(storage: &PostgresStorage, id: &str, lease: Duration) -> Result<bool> {
    let lease = micros(lease);
    storage.run(|conn| Ok(conn.execute(RENEW_WORKER, &[&id, &lease])? == 1))
}

pub(super) fn unregister_worker(storage: &PostgresStorage, id: &str) -> Result<()> {
    storage.run(|conn| {
        conn.execute("DELETE FROM workers WHERE id = $1::text", &[&id])?;
        Ok(())
    })
}

const LIVE_WORKERS: &str = "SELECT id, host, pid, threads, queues, tasks, started_at, \
    heartbeat_at, expires_at FROM workers WHERE expires_at >= now() ORDER BY started_at, id";

pub(super) fn workers(storage: &PostgresStorage) -> Result<Vec<WorkerRecord>> {
    storage.run(|conn| {
        Ok(conn
            .query(LIVE_WORKERS, &[])?
            .iter()
            .map(|r| WorkerRecord {
                id: r.get(0),
                host: r.get(1),
                pid: r.get::<_, i64>(2) as u32,
                threads: r.get::<_, i64>(3) as u32,
                queues: r.get(4),
                tasks: r.get(5),
                started_at: micros_of(r.get::<_, SystemTime>(6)),
                heartbeat_at: micros_of(r.get::<_, SystemTime>(7)),
                expires_at: micros_of(r.get::<_, SystemTime>(8)),
            })
            .collect())
    })
}

pub(super) fn forget_lapsed_workers(storage: &PostgresStorage) -> Result<usize> {
    storage
        .run(|conn| Ok(conn.execute("DELETE FROM workers WHERE expires_at < now()", &[])? as usize))
}

/// Jobs waiting (ready, delayed, or failed with a retry due) for a task no
/// live worker has, by task name.
const UNSERVED_TASKS: &str = concat!(
    "SELECT task_name, count(*) FROM jobs j WHERE status IN (",
    state_sql!(Ready, Scheduled, Retrying),
    ") AND NOT EXISTS (SELECT 1 FROM workers w WHERE w.expires_at >= now() \
     AND j.task_name = ANY(w.tasks)) GROUP BY task_name ORDER BY task_name"
);

pub(super) fn unserved_tasks(storage: &PostgresStorage) -> Result<Vec<(String, u64)>> {
    storage.run(|conn| {
        Ok(conn
            .query(UNSERVED_TASKS, &[])?
            .iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
            .collect())
    })
}

/// Dead-letters ready jobs enqueued more than `$1` µs ago whose task no
/// worker has ever registered (a bounded batch, skipping rows others hold),
/// and settles their dependents.
const KILL_UNKNOWN: &str = concat!(
    "WITH upd AS (UPDATE jobs SET status = ",
    state_sql!(Dead),
    ", finished_at = now() WHERE id = ANY(ARRAY(SELECT id FROM jobs WHERE status = ",
    state_sql!(Ready),
    " AND created_at < now() - $1::int8 * interval '1 microsecond' AND NOT EXISTS \
     (SELECT 1 FROM known_tasks k WHERE k.name = jobs.task_name) LIMIT 1000 \
     FOR UPDATE SKIP LOCKED)) RETURNING id, attempt, task_name, status, dependents, \
     unique_key, expires_at) \
     SELECT id, attempt, task_name, ",
    settle_ended!("upd"),
    " FROM upd"
);

/// Records the errors `$1`.. of the jobs just dead-lettered, and tells
/// their waiters.
static RECORD_UNKNOWN: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH e AS (INSERT INTO job_errors (job_id, attempt, error_type, message, traceback, \
         failed_at) SELECT * , now() FROM unnest($1::int8[], $2::int4[], $3::text[], \
         $4::text[], $5::text[]) RETURNING 1) SELECT (SELECT count(*) FROM e), {notify}",
        notify = notify_sql(6, 7, 8)
    )
});

pub(super) fn fail_unknown_tasks(
    storage: &PostgresStorage,
    grace: Duration,
) -> Result<Vec<UnknownTaskJob>> {
    let grace = micros(grace);
    storage.run(|conn| {
        let kill = conn.prepare(KILL_UNKNOWN)?;
        let record = conn.prepare(&RECORD_UNKNOWN)?;
        let mut tx = conn.client.transaction()?;
        let found: Vec<(i64, i32, String)> = tx
            .query(&kill, &[&grace])?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        if found.is_empty() {
            return Ok(Vec::new());
        }
        let failures: Vec<_> = found
            .iter()
            .map(|(_, _, task)| unknown_task(task))
            .collect();
        let ids: Vec<i64> = found.iter().map(|(id, _, _)| *id).collect();
        let attempts: Vec<i32> = found.iter().map(|(_, a, _)| *a).collect();
        let types: Vec<&str> = failures.iter().map(|f| f.error_type.as_str()).collect();
        let messages: Vec<&str> = failures.iter().map(|f| f.message.as_str()).collect();
        let traces: Vec<&str> = failures.iter().map(|f| f.traceback.as_str()).collect();
        let notes = Notes::default().finished(&ids);
        tx.query(
            &record,
            &[
                &ids,
                &attempts,
                &types,
                &messages,
                &traces,
                &storage.channel,
                &notes.payloads,
                &notes.work,
            ],
        )?;
        tx.commit()?;
        Ok(found
            .into_iter()
            .map(|(id, _, task_name)| UnknownTaskJob { id, task_name })
            .collect())
    })
}
