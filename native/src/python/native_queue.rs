//! `NativeQueue`, the pyclass wrapping the engine of one Python `Queue`:
//! opens its database (a SQLite file or `:memory:`, or a PostgreSQL schema:
//! after that, nothing here knows which), converts the arguments, releases
//! the GIL around every storage call and wait, starts and stops the worker,
//! and reopens the database in a child made by `fork()`.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use super::convert::{error_dict, finished_tuple, optional_seconds, record_dict, seconds};
use super::errors;
use super::events::Notice;
use super::runner::RunningTasks;
use super::watch::AsyncWatch;
use crate::engine::{self, Worker};
use crate::error::{Error, Result};
use crate::job::{format_id, parse_id, JobFilter, JobOptions, Status};
use crate::storage::{
    CancelRequest, Durability, PostgresConfig, PostgresStorage, SqliteConfig, SqliteStorage,
    Storage,
};

/// Longest wait accepted; `None` timeouts mean this.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The engine of one Python `Queue`, as Python sees it. Named apart from
/// [`engine::Engine`], the Python-free state it wraps.
#[pyclass(module = "taskito._native", frozen)]
pub struct NativeQueue {
    config: Backend,
    pub(super) max_payload_size: usize,
    pub(super) state: RwLock<Option<Open>>,
}

pub(super) struct Open {
    engine: Arc<engine::Engine>,
    pub(super) worker: Option<ActiveWorker>,
    /// Why the last worker stopped on its own, if it did.
    pub(super) worker_error: Option<String>,
    pid: u32,
}

/// The worker started by this Queue, and what its runner knows of the tasks
/// it runs.
pub(super) struct ActiveWorker {
    pub(super) worker: Arc<Worker>,
    pub(super) tasks: Arc<RunningTasks>,
    /// To the worker's Python thread, to flush its log at stop.
    pub(super) notices: crossbeam_channel::Sender<Notice>,
}

/// Which database a Queue opens.
#[derive(Clone)]
enum Backend {
    Sqlite(SqliteConfig),
    Postgres(PostgresConfig),
}

impl Backend {
    /// Where the jobs are, as messages show it (a URL without its password).
    fn shown(&self) -> String {
        match self {
            Backend::Sqlite(config) => config.path.clone(),
            Backend::Postgres(config) => config.shown(),
        }
    }
}

fn open(config: &Backend) -> Result<Open> {
    let storage: Arc<dyn Storage> = match config {
        Backend::Sqlite(config) => Arc::new(SqliteStorage::open(config.clone())?),
        Backend::Postgres(config) => Arc::new(PostgresStorage::open(config.clone())?),
    };
    Ok(Open {
        engine: engine::Engine::new(storage),
        worker: None,
        worker_error: None,
        pid: std::process::id(),
    })
}

impl NativeQueue {
    /// The open engine. In a child made by `fork()`, the parent's connections
    /// and threads are unusable: a file database is reopened (the inherited
    /// handles are leaked, never closed, so the parent's locks stay intact);
    /// a `:memory:` one cannot follow the fork and is refused.
    pub(super) fn engine(&self, py: Python<'_>) -> Result<Arc<engine::Engine>> {
        {
            let state = self.state.read();
            match &*state {
                None => return Err(Error::Closed("this Queue has been closed".into())),
                Some(open) if open.pid == std::process::id() => return Ok(open.engine.clone()),
                Some(_) => {}
            }
        }
        let mut state = self.state.write();
        let Some(current) = state.take() else {
            return Err(Error::Closed("this Queue has been closed".into()));
        };
        if current.pid == std::process::id() {
            let engine = current.engine.clone();
            *state = Some(current);
            return Ok(engine);
        }
        std::mem::forget(current);
        if matches!(&self.config, Backend::Sqlite(c) if c.path == crate::storage::MEMORY) {
            return Err(Error::Closed(
                "a Queue on :memory: cannot be used after fork(): the child has no access to the \
                 parent's in-memory database. Use a file database, or create the Queue in the child."
                    .into(),
            ));
        }
        let reopened = py.detach(|| open(&self.config))?;
        let engine = reopened.engine.clone();
        *state = Some(reopened);
        Ok(engine)
    }

    /// This process's worker. A child made by `fork()` has none: the
    /// parent's threads do not exist there.
    pub(super) fn worker(&self) -> Option<Arc<Worker>> {
        self.with_worker(|active| active.worker.clone())
    }

    pub(super) fn with_worker<T>(&self, f: impl FnOnce(&ActiveWorker) -> T) -> Option<T> {
        self.state
            .read()
            .as_ref()
            .filter(|open| open.pid == std::process::id())
            .and_then(|open| open.worker.as_ref())
            .map(f)
    }
}

#[pymethods]
impl NativeQueue {
    /// A SQLite database at `path`, or, with `db_url`, the PostgreSQL
    /// schema `schema` on that server (`path`, `durability` and
    /// `busy_timeout` then unused).
    #[new]
    #[pyo3(signature = (
        path, durability = "normal", busy_timeout = 5.0, max_payload_size = 16 << 20, *,
        db_url = None, schema = "taskito", connect_timeout = 10.0
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: String,
        durability: &str,
        busy_timeout: f64,
        max_payload_size: usize,
        db_url: Option<String>,
        schema: &str,
        connect_timeout: f64,
    ) -> PyResult<Self> {
        let config = match db_url {
            Some(url) => Backend::Postgres(PostgresConfig {
                connect_timeout: seconds(connect_timeout, "connect_timeout")?,
                ..PostgresConfig::new(url, schema)
            }),
            None => Backend::Sqlite(SqliteConfig {
                path,
                durability: Durability::parse(durability)?,
                busy_timeout: seconds(busy_timeout, "busy_timeout")?,
            }),
        };
        let opened = py.detach(|| open(&config))?;
        Ok(NativeQueue {
            config,
            max_payload_size,
            state: RwLock::new(Some(opened)),
        })
    }

    /// The SQLite path, or the PostgreSQL URL without its password.
    #[getter]
    fn path(&self) -> String {
        self.config.shown()
    }

    /// For tests and tooling: closes this queue and drops its PostgreSQL
    /// schema with every job in it. Refused for SQLite.
    fn drop_schema(&self, py: Python<'_>) -> PyResult<()> {
        let Backend::Postgres(config) = &self.config else {
            return Err(Error::invalid("drop_schema() is for PostgreSQL queues").into());
        };
        self.close(py, 0.0)?;
        Ok(py.detach(|| PostgresStorage::drop_schema(config))?)
    }

    /// Enqueues one job per payload in one transaction; returns their ids.
    #[pyo3(signature = (task_name, queue, payloads, priority, delay, max_retries, retry_backoff, timeout))]
    #[allow(clippy::too_many_arguments)]
    fn enqueue(
        &self,
        py: Python<'_>,
        task_name: String,
        queue: String,
        payloads: &Bound<'_, PyList>,
        priority: i64,
        delay: Option<f64>,
        max_retries: u32,
        retry_backoff: f64,
        timeout: Option<f64>,
    ) -> PyResult<Vec<String>> {
        let mut bytes = Vec::with_capacity(payloads.len());
        for item in payloads.iter() {
            let payload = item.cast::<PyBytes>().map_err(|_| {
                errors::new_err(
                    &errors::SERIALIZATION,
                    format!(
                        "the serializer must return bytes, got {}",
                        item.get_type()
                            .name()
                            .map(|n| n.to_string())
                            .unwrap_or_default()
                    ),
                )
            })?;
            let payload = payload.as_bytes();
            if payload.len() > self.max_payload_size {
                return Err(Error::invalid(format!(
                    "the arguments of job {} of this call serialize to {} bytes, over max_payload_size ({} bytes)",
                    bytes.len(),
                    payload.len(),
                    self.max_payload_size
                ))
                .into());
            }
            bytes.push(payload.to_vec());
        }
        let options = JobOptions {
            task_name,
            queue,
            priority,
            delay: optional_seconds(delay, "delay")?,
            max_retries,
            retry_backoff,
            timeout: optional_seconds(timeout, "timeout")?,
        };
        let engine = self.engine(py)?;
        let ids = py.detach(|| engine.enqueue(&options, &bytes))?;
        Ok(ids.into_iter().map(format_id).collect())
    }

    fn get_job<'py>(&self, py: Python<'py>, job_id: &str) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Ok(id) = parse_id(job_id) else {
            return Ok(None);
        };
        let engine = self.engine(py)?;
        let record = py.detach(|| engine.storage.get_job(id))?;
        record.map(|r| record_dict(py, &r)).transpose()
    }

    #[pyo3(signature = (status = None, queue = None, task_name = None, limit = 50, offset = 0))]
    fn list_jobs<'py>(
        &self,
        py: Python<'py>,
        status: Option<&str>,
        queue: Option<String>,
        task_name: Option<String>,
        limit: u32,
        offset: u32,
    ) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let filter = JobFilter {
            status: status.map(Status::parse).transpose()?,
            queue,
            task_name,
            limit,
            offset,
        };
        let engine = self.engine(py)?;
        let records = py.detach(|| engine.storage.list_jobs(&filter))?;
        records.iter().map(|r| record_dict(py, r)).collect()
    }

    fn job_errors<'py>(&self, py: Python<'py>, job_id: &str) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let id = parse_id(job_id)?;
        let engine = self.engine(py)?;
        let errors = py.detach(|| engine.storage.errors(id))?;
        errors.iter().map(|e| error_dict(py, e)).collect()
    }

    /// Job counts by status, keyed by the names `job.status` uses.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let engine = self.engine(py)?;
        let stats = py.detach(|| engine.storage.stats())?;
        let dict = PyDict::new(py);
        for status in Status::ALL {
            dict.set_item(status.name(), stats.get(status))?;
        }
        Ok(dict)
    }

    fn cancel(&self, py: Python<'_>, job_id: &str) -> PyResult<bool> {
        let Ok(id) = parse_id(job_id) else {
            return Ok(false);
        };
        let engine = self.engine(py)?;
        Ok(py.detach(|| engine.cancel(id))?)
    }

    /// Cancels a pending job or asks a running one to stop. Returns
    /// "cancelled", "requested", "final" or "not_found".
    fn request_cancel(&self, py: Python<'_>, job_id: &str) -> PyResult<&'static str> {
        let Ok(id) = parse_id(job_id) else {
            return Ok("not_found");
        };
        let engine = self.engine(py)?;
        Ok(match py.detach(|| engine.request_cancel(id))? {
            CancelRequest::Cancelled => "cancelled",
            CancelRequest::Requested => "requested",
            CancelRequest::AlreadyFinal => "final",
            CancelRequest::NotFound => "not_found",
        })
    }

    fn cancel_requested(&self, py: Python<'_>, job_id: &str) -> PyResult<bool> {
        let id = parse_id(job_id)?;
        let engine = self.engine(py)?;
        Ok(py.detach(|| engine.storage.cancel_requested(id))?)
    }

    fn retry_dead(&self, py: Python<'_>, job_id: &str) -> PyResult<bool> {
        let Ok(id) = parse_id(job_id) else {
            return Ok(false);
        };
        let engine = self.engine(py)?;
        Ok(py.detach(|| engine.retry_dead(id))?)
    }

    /// Deletes dead jobs that died more than `older_than` seconds ago.
    fn purge_dead(&self, py: Python<'_>, older_than: f64) -> PyResult<usize> {
        let age = seconds(older_than, "older_than")?;
        let engine = self.engine(py)?;
        Ok(py.detach(|| engine.storage.purge_dead(age))?)
    }

    /// Deletes completed and cancelled jobs that finished more than
    /// `older_than` seconds ago.
    fn purge_finished(&self, py: Python<'_>, older_than: f64) -> PyResult<usize> {
        let age = seconds(older_than, "older_than")?;
        let engine = self.engine(py)?;
        Ok(py.detach(|| engine.storage.purge_finished(age))?)
    }

    /// Blocks (without the GIL) until the job is final; returns
    /// `(status, result_bytes, error_dict)`.
    #[pyo3(signature = (job_id, timeout, poll_interval, max_poll_interval))]
    fn wait<'py>(
        &self,
        py: Python<'py>,
        job_id: &str,
        timeout: Option<f64>,
        poll_interval: f64,
        max_poll_interval: f64,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let id = parse_id(job_id)?;
        let timeout = optional_seconds(timeout, "timeout")?
            .unwrap_or(FOREVER)
            .min(FOREVER);
        let poll = seconds(poll_interval, "poll_interval")?;
        let max_poll = seconds(max_poll_interval, "max_poll_interval")?;
        let engine = self.engine(py)?;
        let finished = py.detach(|| engine.wait(id, timeout, poll, max_poll))?;
        finished_tuple(py, finished)
    }

    /// A registration for `await job.aresult()`: a pipe that turns readable
    /// when the job finishes, here or in another process.
    fn watch(&self, py: Python<'_>, job_id: &str) -> PyResult<AsyncWatch> {
        let id = parse_id(job_id)?;
        let engine = self.engine(py)?;
        AsyncWatch::new(engine, id)
    }

    /// Stops the worker (if any) and closes the database.
    #[pyo3(signature = (grace = 30.0))]
    fn close(&self, py: Python<'_>, grace: f64) -> PyResult<usize> {
        let left = self.stop_worker(py, grace)?;
        let closed = self.state.write().take();
        match closed {
            // In a child made by fork(), the inherited connections must not be
            // closed (closing drops locks the parent holds): leak them.
            Some(open) if open.pid != std::process::id() => std::mem::forget(open),
            closed => py.detach(move || {
                if let Some(open) = &closed {
                    open.engine.close();
                }
                drop(closed)
            }),
        }
        Ok(left)
    }

    /// Why this database's wake-ups do not cross processes (other
    /// processes' work and results are then found by polling), or None.
    #[getter]
    fn wakeup_fallback(&self, py: Python<'_>) -> PyResult<Option<String>> {
        let engine = self.engine(py)?;
        Ok(engine.storage.wakeups().fallback().map(str::to_string))
    }

    #[getter]
    fn closed(&self) -> bool {
        self.state.read().is_none()
    }
}
