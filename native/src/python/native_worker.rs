//! The worker side of `NativeQueue`: starting this Queue's worker with the
//! Python callbacks it runs tasks and logs through, waiting for it, stopping
//! it (gracefully, or at once), and what the registry says about workers.

use std::collections::HashMap;
use std::ffi::c_ulong;
use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::convert::{optional_seconds, seconds, worker_dict};
use super::events::{flush, python_side};
use super::native_queue::{ActiveWorker, NativeQueue};
use super::schedule::{declared, LimitTuple, ScheduleTuple};
use crate::engine::{Worker, WorkerConfig};
use crate::error::Error;
use crate::job::format_id;

#[pymethods]
impl NativeQueue {
    /// Starts a worker in background threads. `execute(task_name, payload,
    /// job_id, attempt, max_retries, queue)` runs one job and returns
    /// `(OUTCOME_SUCCESS, result_bytes)`, `(OUTCOME_FAILURE, (type, message,
    /// traceback, retryable))` or `(OUTCOME_CANCELLED, message)` (see
    /// `outcome`); `on_event(kind, job_id, task, attempt, message)` receives
    /// what is worth logging (successes and claims too with `debug_events`).
    /// It claims only jobs of `tasks` (None: any task).
    /// Coroutines (`OUTCOME_DEFERRED`) run `async_concurrency` at most at
    /// once, beside the `workers` executors. `periodic` and `rate_limits`
    /// are what the Queue declares (see `schedule`).
    #[pyo3(signature = (execute, on_event, workers, queues, lease, heartbeat, jobs_per_run, result_ttl, tasks, prefetch, unknown_task_grace, debug_events, async_concurrency = 100, periodic = Vec::new(), rate_limits = Vec::new()))]
    #[allow(clippy::too_many_arguments)]
    fn start_worker(
        &self,
        py: Python<'_>,
        execute: Py<PyAny>,
        on_event: Py<PyAny>,
        workers: usize,
        queues: Option<Vec<String>>,
        lease: f64,
        heartbeat: f64,
        jobs_per_run: usize,
        result_ttl: Option<f64>,
        tasks: Option<Vec<String>>,
        prefetch: Option<usize>,
        unknown_task_grace: Option<f64>,
        debug_events: bool,
        async_concurrency: usize,
        periodic: Vec<ScheduleTuple>,
        rate_limits: Vec<LimitTuple>,
    ) -> PyResult<String> {
        let config = WorkerConfig {
            concurrency: workers,
            async_concurrency,
            queues,
            lease: seconds(lease, "lease_duration")?,
            heartbeat: seconds(heartbeat, "heartbeat_interval")?,
            jobs_per_run,
            result_ttl: optional_seconds(result_ttl, "result_ttl")?,
            tasks,
            prefetch,
            unknown_task_grace: optional_seconds(unknown_task_grace, "unknown_task_grace")?,
            debug_events,
            declared: declared(periodic, rate_limits)?,
            ..WorkerConfig::default()
        };
        let engine = self.engine(py)?;
        if let Some(worker) = self.worker() {
            if !worker.wait_stopped(Some(Duration::ZERO)) {
                return Err(Error::invalid("a worker is already running for this Queue").into());
            }
        }
        let side = python_side(py, execute, on_event, engine.storage.clone())?;
        let worker = py.detach(|| Worker::start(engine, side.runner, side.events, config))?;
        let id = worker.id().to_string();
        match self.state.write().as_mut() {
            Some(open) => {
                open.worker = Some(ActiveWorker {
                    worker,
                    tasks: side.tasks,
                    notices: side.notices,
                })
            }
            None => {
                // Closed while the worker started: nothing else could stop it.
                py.detach(|| worker.stop(Duration::ZERO));
                return Err(Error::Closed("this Queue has been closed".into()).into());
            }
        }
        Ok(id)
    }

    /// Waits up to `timeout` seconds for the worker to stop. True once it has
    /// (or if none runs). Short waits let the caller handle signals between.
    fn wait_worker(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let timeout = seconds(timeout, "timeout")?;
        match self.worker() {
            None => Ok(true),
            Some(worker) => Ok(py.detach(|| worker.wait_stopped(Some(timeout)))),
        }
    }

    /// Asks the worker to stop claiming, without waiting.
    fn request_stop(&self) {
        if let Some(worker) = self.worker() {
            worker.request_stop();
        }
    }

    fn worker_stopping(&self) -> bool {
        self.worker().is_some_and(|w| w.is_stopping())
    }

    /// Job id -> Python thread identifier (as `threading.get_ident()` gives
    /// it in that thread) of every task of this Queue's worker now inside
    /// Python code. Empty when no worker runs.
    fn running_tasks(&self) -> HashMap<String, c_ulong> {
        let threads = self
            .with_worker(|active| active.tasks.threads())
            .unwrap_or_default();
        threads
            .into_iter()
            .map(|(id, thread)| (format_id(id), thread))
            .collect()
    }

    /// Stops the worker gracefully; returns how many tasks (executor threads
    /// inside a task, and coroutines) were still running when `grace` ran out.
    pub(super) fn stop_worker(&self, py: Python<'_>, grace: f64) -> PyResult<usize> {
        let grace = seconds(grace, "timeout")?;
        let Some((worker, notices)) =
            self.with_worker(|active| (active.worker.clone(), active.notices.clone()))
        else {
            return Ok(0);
        };
        let left = py.detach(|| worker.stop(grace));
        flush(py, &notices);
        // The worker holds the Queue's `execute` method: keeping it would keep
        // the Queue alive through a cycle Python's collector cannot see.
        if let Some(open) = self.state.write().as_mut() {
            if open
                .worker
                .as_ref()
                .is_some_and(|active| Arc::ptr_eq(&active.worker, &worker))
            {
                open.worker = None;
                open.worker_error = worker.fatal();
            }
        }
        Ok(left)
    }

    /// Cuts short a stop under way, or the next one (a second Ctrl-C): it no
    /// longer waits for running tasks, whose jobs go back to the queue with
    /// their attempt not counted.
    fn hurry_stop(&self) {
        if let Some(worker) = self.worker() {
            worker.hurry();
        }
    }

    /// Why the worker stopped on its own (its database file was deleted or
    /// replaced, say), if it did.
    #[getter]
    fn worker_error(&self) -> Option<String> {
        let state = self.state.read();
        let open = state.as_ref()?;
        match &open.worker {
            Some(active) => active.worker.fatal(),
            None => open.worker_error.clone(),
        }
    }

    /// Sets the task names this Queue's worker claims jobs of (after a task
    /// is registered while it runs). Nothing happens without a worker.
    fn set_tasks(&self, py: Python<'_>, tasks: Vec<String>) -> PyResult<()> {
        match self.worker() {
            Some(worker) => Ok(py.detach(|| worker.set_tasks(tasks))?),
            None => Ok(()),
        }
    }

    /// The workers serving this database, as the registry records them.
    fn workers<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let engine = self.engine(py)?;
        let workers = py.detach(|| engine.storage.workers())?;
        workers.iter().map(|w| worker_dict(py, w)).collect()
    }

    /// Jobs waiting for a task no live worker has, counted by task name.
    fn unserved_tasks(&self, py: Python<'_>) -> PyResult<Vec<(String, u64)>> {
        let engine = self.engine(py)?;
        Ok(py.detach(|| engine.storage.unserved_tasks())?)
    }
}
