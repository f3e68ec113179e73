//! Periodic schedules (see the SQLite backend's): ticks are instants of the
//! server's clock, read with `now()` in the firing's transaction, so workers
//! whose clocks disagree still store each tick once, at its time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::listener::{notify_sql, Notes};
use super::{micros_of, PostgresStorage};
use crate::error::Result;
use crate::job::{micros, now_micros, state_sql, Micros, IDS};
use crate::storage::common::{timeout_from_millis, timeout_millis};
use crate::storage::cron::{plan_ticks, CatchUp, FiredTicks, PeriodicRecord, Schedule, LOOKAHEAD};
use crate::storage::PeriodicSchedule;

/// The latest instant stored (the end of year 9999): a pattern that never
/// fires again waits for it, as timestamptz cannot hold `i64::MAX` µs.
const NEVER: Micros = 253_402_300_799_000_000;

fn time_of(instant: Micros) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(instant.clamp(0, NEVER) as u64)
}

/// This process's clock for a server instant read at `server_now`, taken
/// when the answer came (`local_now`): what comes back to the engine.
fn local(instant: Micros, server_now: Micros, local_now: Micros) -> Micros {
    local_now.saturating_add(instant.saturating_sub(server_now))
}

const UPSERT: &str = "INSERT INTO periodic (name, task_name, queue, cron, timezone, catch_up, \
    payload, priority, max_retries, retry_backoff, timeout_ms, next_tick, updated_at) \
    VALUES ($1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::bytea, $8::int8, \
    $9::int8, $10::float8, $11::int8, $12::timestamptz, now()) \
    ON CONFLICT (name) DO UPDATE SET task_name = excluded.task_name, queue = excluded.queue, \
    catch_up = excluded.catch_up, payload = excluded.payload, priority = excluded.priority, \
    max_retries = excluded.max_retries, retry_backoff = excluded.retry_backoff, \
    timeout_ms = excluded.timeout_ms, updated_at = excluded.updated_at, \
    next_tick = CASE WHEN periodic.cron = excluded.cron AND periodic.timezone = excluded.timezone \
    THEN periodic.next_tick ELSE excluded.next_tick END, \
    cron = excluded.cron, timezone = excluded.timezone";

pub(super) fn register_periodic(
    storage: &PostgresStorage,
    schedules: &[PeriodicSchedule],
) -> Result<()> {
    let parsed = schedules
        .iter()
        .map(PeriodicSchedule::validate)
        .collect::<Result<Vec<Schedule>>>()?;
    // Sorted by name: two workers registering the same schedules at once
    // lock their rows in the same order.
    let mut order: Vec<usize> = (0..schedules.len()).collect();
    order.sort_by(|&a, &b| schedules[a].name.cmp(&schedules[b].name));
    storage.run(|conn| {
        let upsert = conn.prepare(UPSERT)?;
        let mut tx = conn.client.transaction()?;
        let now = micros_of(tx.query_one("SELECT now()", &[])?.get(0));
        for &i in &order {
            let (s, o) = (&schedules[i], &schedules[i].options);
            let first = time_of(parsed[i].next_after(now).unwrap_or(NEVER));
            tx.execute(
                &upsert,
                &[
                    &s.name,
                    &o.task_name,
                    &o.queue,
                    &s.cron,
                    &s.timezone,
                    &s.catch_up.name(),
                    &s.payload,
                    &o.priority,
                    &i64::from(o.max_retries),
                    &o.retry_backoff,
                    &o.timeout.map(timeout_millis),
                    &first,
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    })
}

const DUE: &str = "SELECT name, task_name, queue, cron, timezone, catch_up, payload, priority, \
    max_retries, retry_backoff, timeout_ms, next_tick, now() FROM periodic \
    WHERE name = ANY($1::text[]) AND next_tick <= now() + $2::int8 * interval '1 microsecond' \
    ORDER BY name";

/// The compare-and-set: under READ COMMITTED, a second firing of the same
/// tick waits for the first to commit, then finds the tick moved on and
/// changes nothing.
const ADVANCE: &str = "UPDATE periodic SET next_tick = $3::timestamptz, \
    last_tick = coalesce($4::timestamptz, last_tick), updated_at = now() \
    WHERE name = $1::text AND next_tick = $2::timestamptz";

/// Jobs `$1` due at ticks `$2` (ready when come), with the schedule's
/// task, queue and options.
static INSERT_TICKS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    concat!(
        "INSERT INTO jobs (id, payload, queue, task_name, status, priority, created_at, \
         scheduled_at, max_retries, retry_backoff, timeout_ms) \
         SELECT t.id, $3::bytea, $4::text, $5::text, CASE WHEN t.tick <= now() THEN ",
        state_sql!(Ready),
        " ELSE ",
        state_sql!(Scheduled),
        " END, $6::int8, now(), t.tick, $7::int8, $8::float8, $9::int8 \
         FROM unnest($1::int8[], $2::timestamptz[]) AS t(id, tick) \
         ON CONFLICT (id) DO NOTHING RETURNING id"
    )
    .to_string()
});

const NEXT_TICK: &str = "SELECT min(next_tick), now() FROM periodic WHERE name = ANY($1::text[])";

pub(super) fn fire_periodic(storage: &PostgresStorage, names: &[String]) -> Result<FiredTicks> {
    if names.is_empty() {
        return Ok(FiredTicks::default());
    }
    let names = names.to_vec();
    let lookahead = micros(LOOKAHEAD);
    storage.run(|conn| {
        let due = conn.prepare(DUE)?;
        let advance = conn.prepare(ADVANCE)?;
        let insert = conn.prepare(&INSERT_TICKS)?;
        let next = conn.prepare(NEXT_TICK)?;
        let notify = conn.prepare(&format!("SELECT {}", notify_sql(1, 2, 3)))?;
        let mut tx = conn.client.transaction()?;
        let rows = tx.query(&due, &[&names, &lookahead])?;
        let mut fired = FiredTicks::default();
        let mut server_now = None;
        let mut earliest_due = None;
        for row in &rows {
            let now = micros_of(row.get(12));
            server_now = Some(now);
            let (Ok(schedule), Ok(catch_up)) = (
                Schedule::parse(row.get(3), row.get(4)),
                CatchUp::parse(row.get(5)),
            ) else {
                continue;
            };
            let stored: SystemTime = row.get(11);
            let plan = plan_ticks(&schedule, micros_of(stored), now, catch_up);
            let last = plan.ticks.last().map(|&t| time_of(t));
            let moved = tx.execute(
                &advance,
                &[
                    &row.get::<_, &str>(0),
                    &stored,
                    &time_of(plan.next_tick),
                    &last,
                ],
            )?;
            if moved != 1 || plan.ticks.is_empty() {
                continue;
            }
            let mut ids: Vec<i64> = plan.ticks.iter().map(|_| IDS.next()).collect();
            let mut todo: Vec<usize> = (0..ids.len()).collect();
            while !todo.is_empty() {
                let batch_ids: Vec<i64> = todo.iter().map(|&i| ids[i]).collect();
                let ticks: Vec<SystemTime> = todo.iter().map(|&i| time_of(plan.ticks[i])).collect();
                let stored: std::collections::HashSet<i64> = tx
                    .query(
                        &insert,
                        &[
                            &batch_ids,
                            &ticks,
                            &row.get::<_, &[u8]>(6),
                            &row.get::<_, &str>(2),
                            &row.get::<_, &str>(1),
                            &row.get::<_, i64>(7),
                            &row.get::<_, i64>(8),
                            &row.get::<_, f64>(9),
                            &timeout_from_millis(row.get(10)).map(timeout_millis),
                        ],
                    )?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                // Ids another process took in the same millisecond: new ones.
                todo.retain(|&i| !stored.contains(&ids[i]));
                for &i in &todo {
                    IDS.skip_past(ids[i]);
                    ids[i] = IDS.next();
                }
            }
            for &tick in &plan.ticks {
                if tick <= now {
                    fired.ready += 1;
                } else {
                    earliest_due = Some(earliest_due.map_or(tick, |d: Micros| d.min(tick)));
                }
            }
        }
        let next_row = tx.query_one(&next, &[&names])?;
        let next_tick: Option<SystemTime> = next_row.get(0);
        let mut notes = Notes::default();
        if fired.ready > 0 {
            notes = notes.work();
        }
        if let (Some(due), Some(now)) = (earliest_due, server_now) {
            notes = notes.due_in(due - now);
        }
        if !notes.payloads.is_empty() {
            tx.query(&notify, &[&storage.channel, &notes.payloads, &notes.work])?;
        }
        tx.commit()?;
        let (server_now, local_now) = (micros_of(next_row.get(1)), now_micros());
        fired.earliest_due = earliest_due.map(|t| local(t, server_now, local_now));
        fired.next_tick = next_tick.map(|t| local(micros_of(t), server_now, local_now));
        Ok(fired)
    })
}

const LIST: &str = "SELECT name, task_name, queue, cron, timezone, catch_up, next_tick, \
    last_tick FROM periodic ORDER BY name";

/// The stored schedules, their times as the server's clock has them (as
/// `get_job` shows a job's).
pub(super) fn periodic(storage: &PostgresStorage) -> Result<Vec<PeriodicRecord>> {
    storage.run(|conn| {
        Ok(conn
            .query(LIST, &[])?
            .iter()
            .map(|r| PeriodicRecord {
                name: r.get(0),
                task_name: r.get(1),
                queue: r.get(2),
                cron: r.get(3),
                timezone: r.get(4),
                catch_up: r.get(5),
                next_tick: micros_of(r.get(6)),
                last_tick: r.get::<_, Option<SystemTime>>(7).map(micros_of),
            })
            .collect())
    })
}

pub(super) fn payload(storage: &PostgresStorage, id: i64) -> Result<Option<Vec<u8>>> {
    storage.run(|conn| {
        let rows = conn.query("SELECT payload FROM jobs WHERE id = $1::int8", &[&id])?;
        Ok(rows.first().map(|r| r.get(0)))
    })
}
