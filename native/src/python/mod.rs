//! The `taskito._native` extension module: converts Python values to engine
//! values, releases the GIL around every storage call and wait, and runs task
//! code for the worker's executor threads. Everything else lives in the
//! Python-free engine.

mod errors;

use std::collections::{HashMap, HashSet};
use std::ffi::c_ulong;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use crate::engine::{self, Event, EventSink, Runner, Watch, Worker, WorkerConfig};
use crate::error::{Error, Result};
use crate::job::{
    format_id, micros, now_micros, parse_id, AttemptRef, ClaimedJob, ErrorRecord, Failure,
    Finished, JobFilter, JobOptions, JobRecord, Micros, Outcome, OutcomeKind, Status,
};
use crate::storage::{CancelRequest, Durability, SqliteConfig, SqliteStorage, Storage};

/// Longest wait accepted; `None` timeouts mean this.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

fn seconds(value: f64, what: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        Error::invalid(format!(
            "{what} must be a number of seconds >= 0, got {value}"
        ))
    })
}

fn optional_seconds(value: Option<f64>, what: &str) -> Result<Option<Duration>> {
    value.map(|v| seconds(v, what)).transpose()
}

fn to_seconds(us: Micros) -> f64 {
    us as f64 / 1_000_000.0
}

/// The engine of one Python `Queue`.
#[pyclass(module = "taskito._native", frozen)]
pub struct Engine {
    config: SqliteConfig,
    max_payload_size: usize,
    state: RwLock<Option<Open>>,
}

struct Open {
    engine: Arc<engine::Engine>,
    worker: Option<Arc<Worker>>,
    pid: u32,
}

fn open(config: &SqliteConfig) -> Result<Open> {
    let storage: Arc<dyn Storage> = Arc::new(SqliteStorage::open(config.clone())?);
    Ok(Open {
        engine: engine::Engine::new(storage),
        worker: None,
        pid: std::process::id(),
    })
}

impl Engine {
    /// The open engine. In a child made by `fork()`, the parent's connections
    /// and threads are unusable: a file database is reopened (the inherited
    /// handles are leaked, never closed, so the parent's locks stay intact);
    /// a `:memory:` one cannot follow the fork and is refused.
    fn engine(&self, py: Python<'_>) -> Result<Arc<engine::Engine>> {
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
        if self.config.path == crate::storage::MEMORY {
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
    fn worker(&self) -> Option<Arc<Worker>> {
        self.state
            .read()
            .as_ref()
            .filter(|open| open.pid == std::process::id())
            .and_then(|open| open.worker.clone())
    }
}

#[pymethods]
impl Engine {
    #[new]
    #[pyo3(signature = (path, durability = "normal", busy_timeout = 5.0, max_payload_size = 16 << 20))]
    fn new(
        py: Python<'_>,
        path: String,
        durability: &str,
        busy_timeout: f64,
        max_payload_size: usize,
    ) -> PyResult<Self> {
        let config = SqliteConfig {
            path,
            durability: Durability::parse(durability)?,
            busy_timeout: seconds(busy_timeout, "busy_timeout")?,
        };
        let opened = py.detach(|| open(&config))?;
        Ok(Engine {
            config,
            max_payload_size,
            state: RwLock::new(Some(opened)),
        })
    }

    #[getter]
    fn path(&self) -> &str {
        &self.config.path
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

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let engine = self.engine(py)?;
        let stats = py.detach(|| engine.storage.stats())?;
        let dict = PyDict::new(py);
        for status in Status::ALL {
            // The count of complete jobs is "completed" in stats().
            let key = if status == Status::Complete {
                "completed"
            } else {
                status.name()
            };
            dict.set_item(key, stats.get(status))?;
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
        let age = micros(seconds(older_than, "older_than")?);
        let engine = self.engine(py)?;
        Ok(py.detach(|| engine.storage.purge_dead(now_micros().saturating_sub(age)))?)
    }

    /// Deletes completed and cancelled jobs that finished more than
    /// `older_than` seconds ago.
    fn purge_finished(&self, py: Python<'_>, older_than: f64) -> PyResult<usize> {
        let age = micros(seconds(older_than, "older_than")?);
        let engine = self.engine(py)?;
        Ok(py.detach(|| {
            engine
                .storage
                .purge_finished(now_micros().saturating_sub(age))
        })?)
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
    /// when the job finishes in this process.
    fn watch(&self, py: Python<'_>, job_id: &str) -> PyResult<AsyncWatch> {
        let id = parse_id(job_id)?;
        let engine = self.engine(py)?;
        AsyncWatch::new(engine, id)
    }

    /// Starts a worker in background threads. `execute(task_name, payload,
    /// job_id, attempt, max_retries, queue)` runs one job and returns
    /// `(True, result_bytes)` or `(False, (type, message, traceback, retryable))`;
    /// `on_event(kind, job_id, message)` receives what is worth logging.
    #[pyo3(signature = (execute, on_event, workers, queues, lease, heartbeat, jobs_per_run, result_ttl))]
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
    ) -> PyResult<String> {
        let config = WorkerConfig {
            concurrency: workers,
            queues,
            lease: seconds(lease, "lease_duration")?,
            heartbeat: seconds(heartbeat, "heartbeat_interval")?,
            jobs_per_run,
            result_ttl: optional_seconds(result_ttl, "result_ttl")?,
            ..WorkerConfig::default()
        };
        let engine = self.engine(py)?;
        if let Some(worker) = self.worker() {
            if !worker.wait_stopped(Some(Duration::ZERO)) {
                return Err(Error::invalid("a worker is already running for this Queue").into());
            }
        }
        let (runner, events) = python_side(py, execute, on_event)?;
        let worker = py.detach(|| Worker::start(engine, runner, events, config))?;
        let id = worker.id().to_string();
        match self.state.write().as_mut() {
            Some(open) => open.worker = Some(worker),
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

    /// Stops the worker gracefully; returns how many executor threads were
    /// still inside a task when `grace` ran out.
    fn stop_worker(&self, py: Python<'_>, grace: f64) -> PyResult<usize> {
        let grace = seconds(grace, "timeout")?;
        let Some(worker) = self.worker() else {
            return Ok(0);
        };
        let left = py.detach(|| worker.stop(grace));
        // The worker holds the Queue's `execute` method: keeping it would keep
        // the Queue alive through a cycle Python's collector cannot see.
        if let Some(open) = self.state.write().as_mut() {
            if open
                .worker
                .as_ref()
                .is_some_and(|w| Arc::ptr_eq(w, &worker))
            {
                open.worker = None;
            }
        }
        Ok(left)
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
            closed => py.detach(move || drop(closed)),
        }
        Ok(left)
    }

    #[getter]
    fn closed(&self) -> bool {
        self.state.read().is_none()
    }
}

/// See `Engine.watch`.
#[pyclass(module = "taskito._native")]
pub struct AsyncWatch {
    engine: Arc<engine::Engine>,
    id: i64,
    watch: Option<Watch>,
    pipe: (i32, i32),
}

impl AsyncWatch {
    fn new(engine: Arc<engine::Engine>, id: i64) -> PyResult<Self> {
        let mut fds = [0i32; 2];
        // SAFETY: pipe2 writes two descriptors into the array we own.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(Error::io("cannot create a pipe", std::io::Error::last_os_error()).into());
        }
        let watch = engine.hub.watch(id);
        watch.add_signal_fd(fds[1]);
        Ok(AsyncWatch {
            engine,
            id,
            watch: Some(watch),
            pipe: (fds[0], fds[1]),
        })
    }

    fn release(&mut self) {
        if let Some(watch) = self.watch.take() {
            watch.remove_signal_fd(self.pipe.1);
            // SAFETY: both descriptors are ours and, with the watch gone,
            // nothing else writes to them.
            unsafe {
                libc::close(self.pipe.0);
                libc::close(self.pipe.1);
            }
        }
    }
}

impl Drop for AsyncWatch {
    fn drop(&mut self) {
        self.release();
    }
}

#[pymethods]
impl AsyncWatch {
    fn fileno(&self) -> i32 {
        self.pipe.0
    }

    /// The job's final state if it has one now, else None. Never blocks on
    /// the job, only on one storage read (without the GIL).
    fn check<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let Some(watch) = &self.watch else {
            return Err(Error::Closed("this watch is closed".into()).into());
        };
        if let Some(finished) = watch.get() {
            return Ok(Some(finished_tuple(py, finished)?));
        }
        let (engine, id) = (self.engine.clone(), self.id);
        let finished = py.detach(|| engine.storage.finished(id))?;
        finished.map(|f| finished_tuple(py, f)).transpose()
    }

    fn close(&mut self) {
        self.release();
    }
}

fn finished_tuple(py: Python<'_>, finished: Finished) -> PyResult<Bound<'_, PyTuple>> {
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

fn record_dict<'py>(py: Python<'py>, r: &JobRecord) -> PyResult<Bound<'py, PyDict>> {
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
    Ok(d)
}

fn error_dict<'py>(py: Python<'py>, e: &ErrorRecord) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("attempt", e.attempt)?;
    d.set_item("type", &e.error_type)?;
    d.set_item("message", &e.message)?;
    d.set_item("traceback", &e.traceback)?;
    d.set_item("failed_at", to_seconds(e.failed_at))?;
    Ok(d)
}

/// What engine threads hand to the `taskito-python` thread because it needs
/// the GIL. The dispatcher, writer and maintenance threads never wait for the
/// GIL themselves: a task holding it (in C code, say) would otherwise hold up
/// lease renewals and commits, and other workers would reap live jobs.
enum Notice {
    Event(Event),
    Interrupt(AttemptRef),
}

/// Makes the runner and the event sink of one worker, and starts the thread
/// that calls into Python for both. That thread ends when the worker (and
/// with it every sender) is gone.
#[allow(clippy::type_complexity)]
fn python_side(
    py: Python<'_>,
    execute: Py<PyAny>,
    on_event: Py<PyAny>,
) -> PyResult<(Arc<dyn Runner>, Arc<dyn EventSink>)> {
    let (notices, inbox) = crossbeam_channel::unbounded::<Notice>();
    let tasks = Arc::new(RunningTasks::default());
    let tasks_here = tasks.clone();
    py.detach(|| {
        std::thread::Builder::new()
            .name("taskito-python".into())
            .spawn(move || {
                for notice in inbox {
                    Python::attach(|py| match notice {
                        Notice::Event(event) => log_event(py, &on_event, event),
                        Notice::Interrupt(job) => tasks_here.interrupt(py, &job),
                    });
                }
            })
            .map_err(|e| Error::io("cannot start the worker's Python thread", e))
    })?;
    let runner = PyRunner {
        execute,
        tasks,
        notices: notices.clone(),
    };
    Ok((Arc::new(runner), Arc::new(PyEvents { notices })))
}

/// Which Python thread runs which attempt, so that an interrupt reaches the
/// right task and only that one.
#[derive(Default)]
struct RunningTasks {
    /// Job id -> (thread, lease token).
    running: parking_lot::Mutex<HashMap<i64, (c_ulong, i64)>>,
    /// Threads sent an interrupt that their task may not have seen yet.
    interrupted: parking_lot::Mutex<HashSet<c_ulong>>,
    any_interrupted: AtomicBool,
}

impl RunningTasks {
    fn started(&self, job: &ClaimedJob, thread: c_ulong) {
        self.running.lock().insert(job.id, (thread, job.token));
    }

    /// Called with the GIL held, once the task returned.
    fn finished(&self, job: &ClaimedJob, thread: c_ulong) {
        {
            let mut running = self.running.lock();
            // A retry of the same job may run on another executor meanwhile.
            if running
                .get(&job.id)
                .is_some_and(|&(_, token)| token == job.token)
            {
                running.remove(&job.id);
            }
        }
        if self.any_interrupted.load(Ordering::Acquire) {
            // An interrupt aimed at the task that just returned must not hit
            // the next task of this thread: drop it if it is still pending.
            let mut interrupted = self.interrupted.lock();
            if interrupted.remove(&thread) {
                // SAFETY: GIL held; a NULL exception clears any pending
                // asynchronous exception of that thread.
                unsafe {
                    pyo3::ffi::PyThreadState_SetAsyncExc(thread as _, std::ptr::null_mut());
                }
            }
            self.any_interrupted
                .store(!interrupted.is_empty(), Ordering::Release);
        }
    }

    /// Raises `TaskInterrupted` inside the task of this attempt at its next
    /// Python bytecode (a task blocked in C code, such as a long
    /// `time.sleep`, sees it when that call returns).
    fn interrupt(&self, py: Python<'_>, job: &AttemptRef) {
        // The GIL is held: the target thread is not running Python, so it
        // cannot finish this attempt between the check and the raise.
        let Some(&(thread, token)) = self.running.lock().get(&job.id) else {
            return;
        };
        if token != job.token {
            return;
        }
        let class = errors::TASK_INTERRUPTED.get(py).expect("created at import");
        self.interrupted.lock().insert(thread);
        self.any_interrupted.store(true, Ordering::Release);
        // SAFETY: GIL held; the class is a live exception type.
        unsafe {
            pyo3::ffi::PyThreadState_SetAsyncExc(thread as _, class.as_ptr());
        }
    }
}

/// Runs jobs by calling the Queue's Python `execute` function.
struct PyRunner {
    execute: Py<PyAny>,
    tasks: Arc<RunningTasks>,
    notices: crossbeam_channel::Sender<Notice>,
}

impl PyRunner {
    fn run_one(&self, py: Python<'_>, execute: &Bound<'_, PyAny>, job: &ClaimedJob) -> OutcomeKind {
        // SAFETY: a plain FFI getter.
        let thread = unsafe { pyo3::ffi::PyThread_get_thread_ident() };
        self.tasks.started(job, thread);
        let args = (
            job.task_name.as_str(),
            PyBytes::new(py, &job.payload),
            format_id(job.id),
            job.attempt,
            job.max_retries,
            job.queue.as_str(),
        );
        let outcome = args
            .into_pyobject(py)
            .and_then(|args| call_parking_at_exit(execute, &args))
            .and_then(|r| parse_outcome(&r));
        self.tasks.finished(job, thread);
        match outcome {
            Ok(kind) => kind,
            // `execute` itself failed: a BaseException it let through, or an
            // interrupt that landed after the task returned. Fail the attempt.
            Err(err) => OutcomeKind::Failure(Failure {
                error_type: err
                    .get_type(py)
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default(),
                message: err.value(py).to_string(),
                traceback: err
                    .traceback(py)
                    .and_then(|tb| tb.format().ok())
                    .unwrap_or_default(),
                retryable: true,
            }),
        }
    }
}

impl Runner for PyRunner {
    fn run(
        &self,
        first: ClaimedJob,
        next: &mut dyn FnMut() -> Option<ClaimedJob>,
        done: &mut dyn FnMut(Outcome),
    ) {
        // One GIL acquisition for as many ready jobs as the executor hands
        // over: under load this saves a GIL hand-off per job.
        Python::attach(|py| {
            let execute = self.execute.bind(py);
            let mut job = first;
            loop {
                let kind = self.run_one(py, execute, &job);
                done(Outcome {
                    job: job.attempt_ref(),
                    finished_at: now_micros(),
                    kind,
                });
                match next() {
                    Some(j) => job = j,
                    None => break,
                }
            }
        })
    }

    fn interrupt(&self, job: &AttemptRef) {
        let _ = self.notices.send(Notice::Interrupt(*job));
    }
}

/// `PyObject_Call`, declared as able to unwind: see `call_parking_at_exit`.
mod unwinding {
    use pyo3::ffi::PyObject;

    unsafe extern "C-unwind" {
        pub fn PyObject_Call(
            callable: *mut PyObject,
            args: *mut PyObject,
            kwargs: *mut PyObject,
        ) -> *mut PyObject;
    }
}

/// Parks its thread for good if it is dropped during an unwind.
struct ParkForever;

impl Drop for ParkForever {
    fn drop(&mut self) {
        loop {
            std::thread::park();
        }
    }
}

/// Calls `callable(*args)`. If the interpreter starts shutting down while the
/// call runs (an executor left behind in a task that never returns), Python
/// before 3.14 ends the thread with `pthread_exit` the next time it takes the
/// GIL. That unwind would abort the whole process on reaching Rust frames;
/// here it stops in this frame instead, and the thread sleeps until the
/// process exits. (PyO3 does the same for its own re-attach.)
fn call_parking_at_exit<'py>(
    callable: &Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    let guard = ParkForever;
    // SAFETY: both objects are alive for the call and the GIL is held; a
    // NULL result comes with a Python exception set.
    let result = unsafe {
        let raw = unwinding::PyObject_Call(callable.as_ptr(), args.as_ptr(), std::ptr::null_mut());
        Bound::from_owned_ptr_or_err(callable.py(), raw)
    };
    std::mem::forget(guard);
    result
}

/// `execute` returns `(0, result_bytes)`, `(1, (type, message, traceback,
/// retryable))` or `(2, message)` for a task that stopped on cancellation.
fn parse_outcome(result: &Bound<'_, PyAny>) -> PyResult<OutcomeKind> {
    let (kind, data): (u8, Bound<'_, PyAny>) = result.extract()?;
    Ok(match kind {
        0 => OutcomeKind::Success(data.cast::<PyBytes>()?.as_bytes().to_vec()),
        1 => {
            let (error_type, message, traceback, retryable) = data.extract()?;
            OutcomeKind::Failure(Failure {
                error_type,
                message,
                traceback,
                retryable,
            })
        }
        _ => OutcomeKind::Cancelled,
    })
}

/// Hands engine events to the Python thread, which logs them.
struct PyEvents {
    notices: crossbeam_channel::Sender<Notice>,
}

impl EventSink for PyEvents {
    fn event(&self, event: Event) {
        let _ = self.notices.send(Notice::Event(event));
    }
}

/// Calls the Queue's `on_event(kind, job_id, message)` (Python logging).
fn log_event(py: Python<'_>, on_event: &Py<PyAny>, event: Event) {
    let (kind, id, message) = match event {
        Event::StaleOutcome { id, attempt } => (
            "stale_outcome",
            Some(id),
            format!("discarded the late outcome of attempt {attempt}: the attempt no longer holds the job"),
        ),
        Event::LeaseExpired { id, dead } => (
            "lease_expired",
            Some(id),
            if dead {
                "its worker stopped renewing the lease and no attempts are left: moved to the dead letters".to_string()
            } else {
                "its worker stopped renewing the lease: scheduled to run again".to_string()
            },
        ),
        Event::TimedOut { id, attempt } => (
            "timed_out",
            Some(id),
            format!("attempt {attempt} ran past its timeout and was failed"),
        ),
        Event::RunnerPanicked { jobs } => (
            "runner_panicked",
            None,
            format!("an executor failed (a bug in taskito); its {jobs} job(s) were handed back to the queue"),
        ),
        Event::StorageError { during, message } => {
            ("storage_error", None, format!("{during}: {message} (will retry)"))
        }
    };
    if let Err(err) = on_event.call1(py, (kind, id.map(format_id), message)) {
        err.write_unraisable(py, None);
    }
}

#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(module)?;
    module.add_class::<Engine>()?;
    module.add_class::<AsyncWatch>()?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    module.add("SQLITE_VERSION", rusqlite::version())?;
    Ok(())
}
