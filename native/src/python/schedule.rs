//! The schedule half of `NativeQueue`: periodic schedules and rate limits as
//! Python hands them over (plain tuples), what the database holds of them,
//! and the checks `@queue.periodic` and `rate_limit=` make at decoration
//! time, with the engine's own parsers, so that what the decorator accepts
//! is exactly what workers run.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use super::convert::{optional_seconds, to_seconds};
use super::native_queue::NativeQueue;
use crate::engine::Declared;
use crate::error::Error;
use crate::job::{now_micros, parse_id, JobOptions};
use crate::storage::{parse_rate, CatchUp, LimitScope, PeriodicSchedule, RateLimit, Schedule};

/// A schedule as `taskito.periodic` hands it over: (name, cron, timezone,
/// catch_up, task_name, queue, priority, max_retries, retry_backoff,
/// timeout, payload).
pub(super) type ScheduleTuple = (
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    u32,
    f64,
    Option<f64>,
    Vec<u8>,
);

/// A rate limit: ("task" or "queue", name, jobs per second).
pub(super) type LimitTuple = (String, String, f64);

/// The engine's form of what a Queue declares.
pub(super) fn declared(
    periodic: Vec<ScheduleTuple>,
    rate_limits: Vec<LimitTuple>,
) -> PyResult<Declared> {
    let mut schedules = Vec::with_capacity(periodic.len());
    for (
        name,
        cron,
        timezone,
        catch_up,
        task,
        queue,
        priority,
        retries,
        backoff,
        timeout,
        payload,
    ) in periodic
    {
        let schedule = PeriodicSchedule {
            name,
            cron,
            timezone,
            catch_up: CatchUp::parse(&catch_up)?,
            options: JobOptions {
                task_name: task,
                queue,
                priority,
                delay: None,
                max_retries: retries,
                retry_backoff: backoff,
                timeout: optional_seconds(timeout, "timeout")?,
            },
            payload,
        };
        schedule.validate()?;
        schedules.push(schedule);
    }
    let mut limits = Vec::with_capacity(rate_limits.len());
    for (scope, name, per_second) in rate_limits {
        let scope = LimitScope::parse(&scope).ok_or_else(|| {
            Error::invalid(format!(
                "a rate limit applies to a task or a queue, not {scope:?}"
            ))
        })?;
        if !(per_second.is_finite() && per_second > 0.0) {
            return Err(Error::invalid(format!(
                "a rate must be above 0 a second, got {per_second}"
            ))
            .into());
        }
        limits.push(RateLimit {
            scope,
            name,
            per_second,
        });
    }
    Ok(Declared {
        periodic: schedules,
        rate_limits: limits,
    })
}

#[pymethods]
impl NativeQueue {
    /// Replaces the schedules and rate limits of this Queue's worker (ones
    /// declared after it started) and records them. Nothing without a worker.
    fn declare(
        &self,
        py: Python<'_>,
        periodic: Vec<ScheduleTuple>,
        rate_limits: Vec<LimitTuple>,
    ) -> PyResult<()> {
        let declared = declared(periodic, rate_limits)?;
        match self.worker() {
            Some(worker) => Ok(py.detach(|| worker.declare(declared))?),
            None => Ok(()),
        }
    }

    /// The schedules stored in the database: dicts of name, task_name,
    /// queue, cron, timezone, catch_up, next_tick and last_tick (Unix
    /// seconds; last_tick None before the first).
    fn periodic<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let engine = self.engine(py)?;
        let records = py.detach(|| engine.storage.periodic())?;
        records
            .iter()
            .map(|r| {
                let d = PyDict::new(py);
                d.set_item("name", &r.name)?;
                d.set_item("task_name", &r.task_name)?;
                d.set_item("queue", &r.queue)?;
                d.set_item("cron", &r.cron)?;
                d.set_item("timezone", &r.timezone)?;
                d.set_item("catch_up", &r.catch_up)?;
                d.set_item("next_tick", to_seconds(r.next_tick))?;
                d.set_item("last_tick", r.last_tick.map(to_seconds))?;
                Ok(d)
            })
            .collect()
    }

    /// A job's serialized arguments, or None if there is no such job.
    fn job_payload<'py>(
        &self,
        py: Python<'py>,
        job_id: &str,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let Ok(id) = parse_id(job_id) else {
            return Ok(None);
        };
        let engine = self.engine(py)?;
        let payload = py.detach(|| engine.storage.payload(id))?;
        Ok(payload.map(|p| PyBytes::new(py, &p)))
    }
}

/// Checks a cron pattern in a time zone, and returns its next tick after
/// `after` (Unix seconds; now by default), None if it never fires again.
/// Raises `InvalidArgumentError` naming the field at fault.
#[pyfunction]
#[pyo3(signature = (cron, timezone, after = None))]
pub(super) fn next_tick(cron: &str, timezone: &str, after: Option<f64>) -> PyResult<Option<f64>> {
    let schedule = Schedule::parse(cron, timezone)?;
    let after = after.map_or_else(now_micros, |s| (s * 1e6) as i64);
    Ok(schedule.next_after(after).map(to_seconds))
}

/// Checks a `catch_up` value.
#[pyfunction]
pub(super) fn check_catch_up(catch_up: &str) -> PyResult<()> {
    CatchUp::parse(catch_up)?;
    Ok(())
}

/// Reads a rate such as "100/m" as jobs per second; the error names `field`.
#[pyfunction]
pub(super) fn rate_per_second(rate: &str, field: &str) -> PyResult<f64> {
    Ok(parse_rate(rate, field)?)
}
