//! Runs task code for the worker's executor threads: calls the Queue's
//! Python `execute` function, keeps track of which Python thread runs which
//! attempt (so an interrupt reaches the right task), and hands what
//! `execute` returns to `outcome` to read.

use std::collections::{HashMap, HashSet};
use std::ffi::c_ulong;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use super::errors;
use super::events::Notice;
use super::outcome::parse_outcome;
use crate::engine::Runner;
use crate::job::{format_id, now_micros, AttemptRef, ClaimedJob, Failure, Outcome, OutcomeKind};

/// Which Python thread runs which attempt, so that an interrupt reaches the
/// right task and only that one.
#[derive(Default)]
pub(super) struct RunningTasks {
    /// Job id -> (thread, lease token).
    running: parking_lot::Mutex<HashMap<i64, (c_ulong, i64)>>,
    /// Threads sent an interrupt that their task may not have seen yet.
    interrupted: parking_lot::Mutex<HashSet<c_ulong>>,
    any_interrupted: AtomicBool,
}

impl RunningTasks {
    /// Job id -> Python thread identifier (what `threading.get_ident()`
    /// returns there) of each task now inside Python code. A job whose
    /// timed-out attempt is still running while its retry runs shows the
    /// retry's thread.
    pub(super) fn threads(&self) -> HashMap<i64, c_ulong> {
        self.running
            .lock()
            .iter()
            .map(|(&id, &(thread, _))| (id, thread))
            .collect()
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
    pub(super) fn interrupt(&self, py: Python<'_>, job: &AttemptRef) {
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
}

impl PyRunner {
    /// `notices` reaches the worker's Python thread, which delivers the
    /// interrupts this runner is asked for.
    pub(super) fn new(
        execute: Py<PyAny>,
        tasks: Arc<RunningTasks>,
        notices: crossbeam_channel::Sender<Notice>,
    ) -> Self {
        PyRunner {
            execute,
            tasks,
            notices,
        }
    }

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
        let returned = args
            .into_pyobject(py)
            .and_then(|args| call_parking_at_exit(execute, &args));
        self.tasks.finished(job, thread);
        match returned {
            // Read once the task no longer counts as running: quoting a bad
            // return value calls its repr(), which an interrupt aimed at the
            // task must not hit.
            Ok(returned) => parse_outcome(&returned),
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
                let started_at = now_micros();
                let kind = self.run_one(py, execute, &job);
                done(Outcome {
                    job: job.attempt_ref(),
                    started_at: Some(started_at),
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
