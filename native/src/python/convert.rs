//! Conversions between engine values and Python ones: seconds given as
//! floats, and job records, errors and outcomes handed back as dicts and
//! tuples.

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};

use crate::error::{Error, Result};
use crate::job::{format_id, ErrorRecord, Finished, JobRecord, Micros, WorkerRecord};

pub(super) fn seconds(value: f64, what: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        Error::invalid(format!(
            "{what} must be a number of seconds >= 0, got {value}"
        ))
    })
}

pub(super) fn optional_seconds(value: Option<f64>, what: &str) -> Result<Option<Duration>> {
    value.map(|v| seconds(v, what)).transpose()
}

pub(super) fn to_seconds(us: Micros) -> f64 {
    us as f64 / 1_000_000.0
}

pub(super) fn finished_tuple(py: Python<'_>, finished: Finished) -> PyResult<Bound<'_, PyTuple>> {
    let result = finished.result.map(|r| PyBytes::new(py, &r));
    let error = finished.error.map(|e| error_dict(py, &e)).transpose()?;
    PyTuple::new(
        py,
        [
            finished.state.status().name().into_pyobject(py)?.into_any(),
            result.into_pyobject(py)?.into_any(),
            error.into_pyobject(py)?.into_any(),
        ],
    )
}

pub(super) fn record_dict<'py>(py: Python<'py>, r: &JobRecord) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("id", format_id(r.id))?;
    d.set_item("queue", &r.queue)?;
    d.set_item("task_name", &r.task_name)?;
    d.set_item("status", r.state.status().name())?;
    d.set_item("priority", r.priority)?;
    d.set_item("attempt", r.attempt)?;
    d.set_item("max_retries", r.max_retries)?;
    d.set_item("retry_backoff", r.retry_backoff)?;
    d.set_item("timeout", r.timeout.map(|t| t.as_secs_f64()))?;
    d.set_item("created_at", to_seconds(r.created_at))?;
    d.set_item("scheduled_at", to_seconds(r.scheduled_at))?;
    d.set_item("started_at", r.started_at.map(to_seconds))?;
    d.set_item("finished_at", r.finished_at.map(to_seconds))?;
    d.set_item("worker_id", &r.worker_id)?;
    d.set_item("lease_expires_at", r.lease_expires_at.map(to_seconds))?;
    d.set_item("error", &r.error)?;
    d.set_item("unique_key", &r.unique_key)?;
    d.set_item("metadata", &r.metadata)?;
    d.set_item("progress", r.progress)?;
    d.set_item("expires_at", r.expires_at.map(to_seconds))?;
    Ok(d)
}

pub(super) fn error_dict<'py>(py: Python<'py>, e: &ErrorRecord) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("attempt", e.attempt)?;
    d.set_item("type", &e.error_type)?;
    d.set_item("message", &e.message)?;
    d.set_item("traceback", &e.traceback)?;
    d.set_item("failed_at", to_seconds(e.failed_at))?;
    Ok(d)
}

pub(super) fn worker_dict<'py>(py: Python<'py>, w: &WorkerRecord) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("id", &w.id)?;
    d.set_item("host", &w.host)?;
    d.set_item("pid", w.pid)?;
    d.set_item("threads", w.threads)?;
    d.set_item("queues", &w.queues)?;
    d.set_item("tasks", &w.tasks)?;
    d.set_item("started_at", to_seconds(w.started_at))?;
    d.set_item("heartbeat_at", to_seconds(w.heartbeat_at))?;
    d.set_item("expires_at", to_seconds(w.expires_at))?;
    Ok(d)
}
