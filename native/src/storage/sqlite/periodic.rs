//! Periodic schedules: recording the ones workers declare, and firing due
//! ticks, each moved on by a compare-and-set in the transaction that stores
//! its jobs. What ticks a firing stores is decided in `storage::cron`.

use rusqlite::{params, OptionalExtension, Transaction};

use super::SqliteStorage;
use crate::error::Result;
use crate::job::{micros, Micros, State, IDS};
use crate::storage::common::{json_names, timeout_from_millis, timeout_millis};
use crate::storage::cron::{plan_ticks, CatchUp, FiredTicks, PeriodicRecord, Schedule, LOOKAHEAD};
use crate::storage::PeriodicSchedule;

/// Records schedule `?1`, whose next tick is `?12` unless it is stored with
/// the same pattern and zone already: then it keeps its own.
const UPSERT: &str = "INSERT INTO periodic (name, task_name, queue, cron, timezone, catch_up, \
    payload, priority, max_retries, retry_backoff, timeout_ms, next_tick, updated_at) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
    ON CONFLICT (name) DO UPDATE SET task_name = excluded.task_name, queue = excluded.queue, \
    catch_up = excluded.catch_up, payload = excluded.payload, priority = excluded.priority, \
    max_retries = excluded.max_retries, retry_backoff = excluded.retry_backoff, \
    timeout_ms = excluded.timeout_ms, updated_at = excluded.updated_at, \
    next_tick = CASE WHEN periodic.cron = excluded.cron AND periodic.timezone = excluded.timezone \
    THEN periodic.next_tick ELSE excluded.next_tick END, \
    cron = excluded.cron, timezone = excluded.timezone";

pub(super) fn register_periodic(
    storage: &SqliteStorage,
    schedules: &[PeriodicSchedule],
) -> Result<()> {
    let parsed = schedules
        .iter()
        .map(PeriodicSchedule::validate)
        .collect::<Result<Vec<Schedule>>>()?;
    let now = storage.now();
    storage.write(|tx| {
        let mut stmt = tx.prepare_cached(UPSERT)?;
        for (s, schedule) in schedules.iter().zip(&parsed) {
            let first = schedule.next_after(now).unwrap_or(i64::MAX);
            let o = &s.options;
            stmt.execute(params![
                s.name,
                o.task_name,
                o.queue,
                s.cron,
                s.timezone,
                s.catch_up.name(),
                s.payload,
                o.priority,
                o.max_retries,
                o.retry_backoff,
                o.timeout.map(timeout_millis),
                first,
                now
            ])?;
        }
        Ok(())
    })
}

/// Schedules among `?1` (a JSON array of names) whose next tick falls by `?2`.
const DUE: &str = "SELECT name, task_name, queue, cron, timezone, catch_up, payload, priority, \
    max_retries, retry_backoff, timeout_ms, next_tick FROM periodic \
    WHERE name IN (SELECT value FROM json_each(?1)) AND next_tick <= ?2";

/// The compare-and-set: moves schedule `?1` from tick `?2` to `?3`.
const ADVANCE: &str = "UPDATE periodic SET next_tick = ?3, last_tick = coalesce(?4, last_tick), \
    updated_at = ?5 WHERE name = ?1 AND next_tick = ?2";

const NEXT_TICK: &str =
    "SELECT min(next_tick) FROM periodic WHERE name IN (SELECT value FROM json_each(?1))";

/// One job of a schedule's tick: due at its tick (`?8`), ready when that
/// has come. An id another process took in the same millisecond inserts
/// nothing.
const INSERT_TICK: &str = "INSERT INTO jobs (id, payload, queue, task_name, status, priority, \
    created_at, scheduled_at, max_retries, retry_backoff, timeout_ms) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) ON CONFLICT (id) DO NOTHING";

/// A due schedule as read from its row.
struct Due {
    name: String,
    task_name: String,
    queue: String,
    cron: String,
    timezone: String,
    catch_up: String,
    payload: Vec<u8>,
    priority: i64,
    max_retries: i64,
    retry_backoff: f64,
    timeout_ms: Option<i64>,
    next_tick: Micros,
}

pub(super) fn fire_periodic(storage: &SqliteStorage, names: &[String]) -> Result<FiredTicks> {
    if names.is_empty() {
        return Ok(FiredTicks::default());
    }
    let now = storage.now();
    let names = json_names(names);
    storage.write(|tx| {
        let mut fired = FiredTicks::default();
        for due in due_schedules(tx, &names, now.saturating_add(micros(LOOKAHEAD)))? {
            // A row another taskito wrote with a pattern this one cannot
            // read is left alone: its own workers fire it.
            let (Ok(schedule), Ok(catch_up)) = (
                Schedule::parse(&due.cron, &due.timezone),
                CatchUp::parse(&due.catch_up),
            ) else {
                continue;
            };
            let plan = plan_ticks(&schedule, due.next_tick, now, catch_up);
            let advanced = tx.prepare_cached(ADVANCE)?.execute(params![
                due.name,
                due.next_tick,
                plan.next_tick,
                plan.ticks.last(),
                now
            ])?;
            if advanced == 1 {
                store_ticks(tx, &due, &plan.ticks, now, &mut fired)?;
            }
        }
        fired.next_tick = tx
            .prepare_cached(NEXT_TICK)?
            .query_row([&names], |r| r.get::<_, Option<Micros>>(0))?;
        Ok(fired)
    })
}

fn due_schedules(tx: &Transaction, names: &str, by: Micros) -> Result<Vec<Due>> {
    let mut stmt = tx.prepare_cached(DUE)?;
    let rows = stmt.query_map(params![names, by], |r| {
        Ok(Due {
            name: r.get(0)?,
            task_name: r.get(1)?,
            queue: r.get(2)?,
            cron: r.get(3)?,
            timezone: r.get(4)?,
            catch_up: r.get(5)?,
            payload: r.get(6)?,
            priority: r.get(7)?,
            max_retries: r.get(8)?,
            retry_backoff: r.get(9)?,
            timeout_ms: r.get(10)?,
            next_tick: r.get(11)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<Due>>>()?)
}

fn store_ticks(
    tx: &Transaction,
    due: &Due,
    ticks: &[Micros],
    now: Micros,
    fired: &mut FiredTicks,
) -> Result<()> {
    let mut stmt = tx.prepare_cached(INSERT_TICK)?;
    for &tick in ticks {
        let state = if tick <= now {
            fired.ready += 1;
            State::Ready
        } else {
            fired.earliest_due = Some(fired.earliest_due.map_or(tick, |d| d.min(tick)));
            State::Scheduled
        };
        loop {
            let id = IDS.next();
            let inserted = stmt.execute(params![
                id,
                due.payload,
                due.queue,
                due.task_name,
                state as i64,
                due.priority,
                now,
                tick,
                due.max_retries,
                due.retry_backoff,
                timeout_from_millis(due.timeout_ms).map(timeout_millis),
            ])?;
            if inserted == 1 {
                break;
            }
            IDS.skip_past(id);
        }
    }
    Ok(())
}

const LIST: &str = "SELECT name, task_name, queue, cron, timezone, catch_up, next_tick, \
    last_tick FROM periodic ORDER BY name";

pub(super) fn periodic(storage: &SqliteStorage) -> Result<Vec<PeriodicRecord>> {
    storage.read(|conn| {
        let mut stmt = conn.prepare_cached(LIST)?;
        let rows = stmt.query_map([], |r| {
            Ok(PeriodicRecord {
                name: r.get(0)?,
                task_name: r.get(1)?,
                queue: r.get(2)?,
                cron: r.get(3)?,
                timezone: r.get(4)?,
                catch_up: r.get(5)?,
                next_tick: r.get(6)?,
                last_tick: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    })
}

pub(super) fn payload(storage: &SqliteStorage, id: i64) -> Result<Option<Vec<u8>>> {
    storage.read(|conn| {
        Ok(conn
            .prepare_cached("SELECT payload FROM jobs WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?)
    })
}
