//! Runs task code for the worker's executor threads: calls the Queue's
//! Python `execute` function, keeps track of which Python thread runs which
//! attempt (so an interrupt reaches the right task), and hands what
//! `execute` returns to `outcome` to read. A coroutine's attempt is deferred
//! and started on the worker's event loop with an `AttemptHandle` to report
//! through; interrupts and cancellations reach it through its `cancel`.

use std::collections::{HashMap, HashSet};
use std::ffi::c_ulong;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use super::deferred::AttemptHandle;
use super::errors;
use super::events::Notice;
use super::outcome::{parse_returned, Returned};
use crate::engine::{Deferred, Runner};
use crate::job::{
    format_id, now_micros, AttemptRef, ClaimedJob, Failure, Feed, Outcome, OutcomeKind,
};
use crate::storage::Storage;

/// Which Python thread runs which attempt, so that an interrupt reaches the
/// right task and only that one.
#[derive(Default)]
pub(super) struct RunningTasks {
    /// Job id -> (thread, lease token).
    running: parking_lot::Mutex<HashMap<i64, (c_ulong, i64)>>,
    /// Threads sent an interrupt that their task may not have seen yet.
    interrupted: parking_lot::Mutex<HashSet<c_ulong>>,
    any_interrupted: AtomicBool,
    /// Coroutines, by job id and lease token: a job's timed-out attempt may
    /// still be winding down when its retry starts.
    coroutines: parking_lot::Mutex<HashMap<(i64, i64), Coroutine>>,
}

/// A coroutine's attempt: the event loop's thread, and the Python attempt
/// whose `cancel(reason)` stops it.
type Coroutine = (c_ulong, Py<PyAny>);

impl RunningTasks {
    /// Job id -> Python thread identifier (what `threading.get_ident()`
    /// returns there) of each task now inside Python code. A job whose
    /// timed-out attempt is still running while its retry runs shows the
    /// retry's thread.
    /// Coroutines show the event loop's thread.
    pub(super) fn threads(&self) -> HashMap<i64, c_ulong> {
        let mut threads: HashMap<i64, c_ulong> = self
            .coroutines
            .lock()
            .iter()
            .map(|(&(id, _), &(thread, _))| (id, thread))
            .collect();
        threads.extend(
            self.running
                .lock()
                .iter()
                .map(|(&id, &(thread, _))| (id, thread)),
        );
        threads
    }

    fn coroutine_started(&self, job: &ClaimedJob, thread: c_ulong, attempt: Py<PyAny>) {
        let replaced = self
            .coroutines
            .lock()
            .insert((job.id, job.token), (thread, attempt));
        // Released after the lock: dropping a Python object may run Python code.
        drop(replaced);
    }

    /// The coroutine of this attempt reported: it no longer runs.
    pub(super) fn coroutine_finished(&self, job: &AttemptRef) {
        let removed = self.coroutines.lock().remove(&(job.id, job.token));
        drop(removed);
    }

    /// Stops the coroutine of this attempt, if one runs it: `reason` is
    /// "interrupt" or "cancel" (see `_async.py`). True if one did.
    fn cancel_coroutine(&self, py: Python<'_>, job: &AttemptRef, reason: &str) -> bool {
        let attempt = match self.coroutines.lock().get(&(job.id, job.token)) {
            Some((_, attempt)) => attempt.clone_ref(py),
            None => return false,
        };
        if let Err(err) = attempt.call_method1(py, "cancel", (reason,)) {
            err.write_unraisable(py, Some(attempt.bind(py)));
        }
        true
    }

    /// Asks the coroutine of this attempt, if one runs it, to stop because
    /// its cancellation was requested. Thread tasks see the request at their
    /// next `current_job.check_cancelled()`.
    pub(super) fn cancel(&self, py: Python<'_>, job: &AttemptRef) {
        self.cancel_coroutine(py, job, "cancel");
    }

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
    /// A coroutine is cancelled instead: `CancelledError` is raised inside it.
    pub(super) fn interrupt(&self, py: Python<'_>, job: &AttemptRef) {
        if self.cancel_coroutine(py, job, "interrupt") {
            return;
        }
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
pub(super) struct PyRunner {
    execute: Py<PyAny>,
    tasks: Arc<RunningTasks>,
    notices: crossbeam_channel::Sender<Notice>,
    /// Where a fed job's dependencies' results are read from.
    storage: Arc<dyn Storage>,
}

impl PyRunner {
    /// `notices` reaches the worker's Python thread, which delivers the
    /// interrupts this runner is asked for.
    pub(super) fn new(
        execute: Py<PyAny>,
        tasks: Arc<RunningTasks>,
        notices: crossbeam_channel::Sender<Notice>,
        storage: Arc<dyn Storage>,
    ) -> Self {
        PyRunner {
            execute,
            tasks,
            notices,
            storage,
        }
    }

    /// What `execute` is told of a fed job's inputs: `None` for a job that
    /// is not fed (no storage read: the hot path), else `("one" | "all",
    /// [result bytes or None, in dependency order])`, read with the GIL
    /// released.
    fn fed<'py>(&self, py: Python<'py>, job: &ClaimedJob) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let kind = match job.feed {
            Feed::None => return Ok(None),
            Feed::One => "one",
            Feed::All => "all",
        };
        let results = py.detach(|| self.storage.dependency_results(job.id))?;
        let results: Vec<Option<Bound<'py, PyBytes>>> = results
            .iter()
            .map(|r| r.as_deref().map(|b| PyBytes::new(py, b)))
            .collect();
        Ok(Some(PyTuple::new(
            py,
            [
                kind.into_pyobject(py)?.into_any(),
                PyList::new(py, results)?.into_any(),
            ],
        )?))
    }

    fn run_one<'py>(
        &self,
        py: Python<'py>,
        execute: &Bound<'py, PyAny>,
        job: &ClaimedJob,
    ) -> Returned<'py> {
        // SAFETY: a plain FFI getter.
        let thread = unsafe { pyo3::ffi::PyThread_get_thread_ident() };
        let fed = match self.fed(py, job) {
            Ok(fed) => fed,
            // The inputs could not be read: the attempt fails, to be retried.
            Err(err) => return Returned::Now(raised(py, &err)),
        };
        self.tasks.started(job, thread);
        let args = (
            job.task_name.as_str(),
            PyBytes::new(py, &job.payload),
            format_id(job.id),
            job.attempt,
            job.max_retries,
            job.queue.as_str(),
            fed,
        );
        let returned = args
            .into_pyobject(py)
            .and_then(|args| call_parking_at_exit(execute, &args));
        self.tasks.finished(job, thread);
        match returned {
            // Read once the task no longer counts as running: quoting a bad
            // return value calls its repr(), which an interrupt aimed at the
            // task must not hit.
            Ok(returned) => parse_returned(&returned),
            // `execute` itself failed: a BaseException it let through, or an
            // interrupt that landed after the task returned. Fail the attempt.
            Err(err) => Returned::Now(raised(py, &err)),
        }
    }

    /// Hands a coroutine's attempt to the event loop, with the handle its
    /// outcome comes back through.
    fn start_later(
        &self,
        py: Python<'_>,
        job: &ClaimedJob,
        attempt: &Bound<'_, PyAny>,
        deferred: Deferred,
    ) {
        let handle = AttemptHandle::new(deferred, self.tasks.clone());
        let handle = match Py::new(py, handle) {
            Ok(handle) => handle,
            // Dropping the engine's handle fails the attempt, to be retried.
            Err(err) => return err.write_unraisable(py, None),
        };
        let thread = attempt
            .getattr("thread")
            .and_then(|t| t.extract::<c_ulong>())
            .unwrap_or(0);
        // Known as running before it can run: a cancellation that comes
        // while it starts must find it.
        self.tasks
            .coroutine_started(job, thread, attempt.clone().unbind());
        if let Err(err) = attempt.call_method1("start", (handle.clone_ref(py),)) {
            let kind = raised(py, &err);
            if let Some(deferred) = handle.get().take() {
                deferred.finish(kind);
            }
        }
    }
}

/// A failed attempt, from what `execute` (or starting a coroutine) raised.
fn raised(py: Python<'_>, err: &PyErr) -> OutcomeKind {
    OutcomeKind::Failure(Failure {
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
    })
}

impl Runner for PyRunner {
    fn run(
        &self,
        first: ClaimedJob,
        next: &mut dyn FnMut() -> Option<ClaimedJob>,
        done: &mut dyn FnMut(Outcome),
        defer: &mut dyn FnMut(&ClaimedJob) -> Deferred,
    ) {
        // One GIL acquisition for as many ready jobs as the executor hands
        // over: under load this saves a GIL hand-off per job.
        Python::attach(|py| {
            let execute = self.execute.bind(py);
            let mut job = first;
            loop {
                let started_at = now_micros();
                match self.run_one(py, execute, &job) {
                    Returned::Now(kind) => done(Outcome {
                        job: job.attempt_ref(),
                        started_at: Some(started_at),
                        finished_at: now_micros(),
                        kind,
                    }),
                    Returned::Later(attempt) => {
                        self.start_later(py, &job, &attempt, defer(&job));
                    }
                }
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

    fn cancel(&self, job: &AttemptRef) {
        let _ = self.notices.send(Notice::Cancel(*job));
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
