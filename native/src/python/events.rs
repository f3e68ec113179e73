//! The worker's `taskito-python` thread: the one engine-side thread that
//! takes the GIL on its own, to log engine events through the Queue's
//! `on_event` and to deliver interrupts to running tasks.

use std::sync::Arc;

use pyo3::prelude::*;

use super::runner::{PyRunner, RunningTasks};
use crate::engine::{AfterFailure, Event, EventSink, Runner};
use crate::error::Error;
use crate::job::{format_id, AttemptRef};

/// What engine threads hand to the `taskito-python` thread because it needs
/// the GIL. The dispatcher, writer and maintenance threads never wait for the
/// GIL themselves: a task holding it (in C code, say) would otherwise hold up
/// lease renewals and commits, and other workers would reap live jobs.
pub(super) enum Notice {
    Event(Event),
    Interrupt(AttemptRef),
    /// Its cancellation was requested: stop it if it is a coroutine.
    Cancel(AttemptRef),
    /// Answers once everything sent before it has been handled.
    Flush(crossbeam_channel::Sender<()>),
}

/// What one worker calls into Python through.
pub(super) struct PythonSide {
    pub runner: Arc<dyn Runner>,
    pub events: Arc<dyn EventSink>,
    /// Which task runs on which Python thread, shared with the runner.
    pub tasks: Arc<RunningTasks>,
    pub notices: crossbeam_channel::Sender<Notice>,
}

/// How long stopping a worker waits for its last events to be logged.
const FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits (without the GIL) until the Python thread has handled every notice
/// sent so far, so that what a stopped worker did is in the log when
/// `stop_worker` returns. Gives up after a few seconds: a logging handler
/// that blocks must not hang the shutdown.
pub(super) fn flush(py: Python<'_>, notices: &crossbeam_channel::Sender<Notice>) {
    let (ack, acked) = crossbeam_channel::bounded(1);
    if notices.send(Notice::Flush(ack)).is_ok() {
        py.detach(|| {
            let _ = acked.recv_timeout(FLUSH_LIMIT);
        });
    }
}

/// Makes the runner and the event sink of one worker, and starts the thread
/// that calls into Python for both. That thread ends when the worker (and
/// with it every sender) is gone.
pub(super) fn python_side(
    py: Python<'_>,
    execute: Py<PyAny>,
    on_event: Py<PyAny>,
    storage: Arc<dyn crate::storage::Storage>,
) -> PyResult<PythonSide> {
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
                        Notice::Cancel(job) => tasks_here.cancel(py, &job),
                        Notice::Flush(ack) => {
                            let _ = ack.send(());
                        }
                    });
                }
            })
            .map_err(|e| Error::io("cannot start the worker's Python thread", e))
    })?;
    let runner = PyRunner::new(execute, tasks.clone(), notices.clone(), storage);
    Ok(PythonSide {
        runner: Arc::new(runner),
        events: Arc::new(PyEvents {
            notices: notices.clone(),
        }),
        tasks,
        notices,
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

/// What one event says: its kind (which sets its level), the job, the task
/// and attempt when known, and a sentence for the log.
struct Line {
    kind: &'static str,
    id: Option<i64>,
    task: Option<String>,
    attempt: Option<u32>,
    message: String,
    /// A failed attempt's error: type, message, traceback (for the hooks
    /// that follow what storage decided: `on_retry`, `on_dead`).
    error: Option<(String, String, String)>,
}

impl Line {
    fn new(kind: &'static str, id: Option<i64>, message: String) -> Line {
        Line {
            kind,
            id,
            task: None,
            attempt: None,
            message,
            error: None,
        }
    }
}

fn line(event: Event) -> Line {
    match event {
        Event::AttemptFailed {
            id,
            task,
            attempt,
            max_retries,
            error_type,
            message,
            traceback,
            next,
        } => {
            let raised = (error_type.clone(), message.clone(), traceback.clone());
            let error = if message.is_empty() {
                error_type
            } else {
                format!("{error_type}: {message}")
            };
            let runs = max_retries.saturating_add(1);
            let (kind, text) = match next {
                AfterFailure::Retry(wait) => (
                    "retry",
                    format!(
                        "{task}: attempt {attempt}/{runs} failed: {error}; retrying in {:.3}s",
                        wait.as_secs_f64()
                    ),
                ),
                AfterFailure::Dead => (
                    "dead",
                    format!(
                        "{task}: attempt {attempt}/{runs} failed: {error}; moved to the dead letters{}",
                        if traceback.is_empty() {
                            String::new()
                        } else {
                            format!("\n{}", traceback.trim_end())
                        }
                    ),
                ),
                AfterFailure::Cancelled => (
                    "cancelled",
                    format!("{task}: attempt {attempt}/{runs} failed: {error}; cancelled, as was asked"),
                ),
            };
            Line {
                kind,
                id: Some(id),
                task: Some(task),
                attempt: Some(attempt),
                message: text,
                error: Some(raised),
            }
        }
        Event::Succeeded {
            id,
            task,
            attempt,
            seconds,
        } => Line {
            kind: "succeeded",
            id: Some(id),
            message: format!("{task}: attempt {attempt} succeeded in {seconds:.6}s"),
            task: Some(task),
            attempt: Some(attempt),
            error: None,
        },
        Event::Claimed { running, held } => Line::new(
            "claimed",
            None,
            format!("claimed {running} job(s) to run now and {held} to hold"),
        ),
        Event::StaleOutcome { id, attempt } => Line {
            attempt: Some(attempt),
            ..Line::new(
                "stale_outcome",
                Some(id),
                format!("discarded the late outcome of attempt {attempt}: the attempt no longer holds the job"),
            )
        },
        Event::LeaseExpired { id, dead } => Line::new(
            "lease_expired",
            Some(id),
            if dead {
                "its worker stopped renewing the lease and no attempts are left: moved to the dead letters".to_string()
            } else {
                "its worker stopped renewing the lease: recovered, to run again".to_string()
            },
        ),
        Event::TimedOut { id, attempt } => Line {
            attempt: Some(attempt),
            ..Line::new(
                "timed_out",
                Some(id),
                format!(
                    "attempt {attempt} ran past its timeout and was failed; it was interrupted \
                     (TaskInterrupted raised in a thread, CancelledError in a coroutine)"
                ),
            )
        },
        Event::UnknownTask {
            id,
            task_name,
            waited,
        } => Line {
            message: format!(
                "no worker has registered task {task_name:?} in the {:.0}s since it was enqueued \
                 (unknown_task_grace): moved to the dead letters with UnknownTaskError",
                waited.as_secs_f64()
            ),
            task: Some(task_name),
            ..Line::new("unknown_task", Some(id), String::new())
        },
        Event::Quarantined { id, problem } => Line::new(
            "quarantined",
            Some(id),
            format!("its row cannot be read ({problem}): moved to the dead letters, never run"),
        ),
        Event::Stopped { reason } => Line::new("stopped", None, reason),
        Event::RunnerPanicked { jobs } => Line::new(
            "runner_panicked",
            None,
            format!("an executor failed (a bug in taskito); its {jobs} job(s) were handed back to the queue"),
        ),
        Event::StorageError { during, message } => Line::new(
            "storage_error",
            None,
            format!("{during}: {message} (will retry)"),
        ),
    }
}

/// Calls the Queue's `on_event(kind, job_id, task, attempt, message,
/// error)`, which logs it (and runs the hooks it is for); `error` is a
/// failed attempt's (type, message, traceback), else None.
pub(super) fn log_event(py: Python<'_>, on_event: &Py<PyAny>, event: Event) {
    let Line {
        kind,
        id,
        task,
        attempt,
        message,
        error,
    } = line(event);
    let args = (kind, id.map(format_id), task, attempt, message, error);
    if let Err(err) = on_event.call1(py, args) {
        err.write_unraisable(py, None);
    }
}
