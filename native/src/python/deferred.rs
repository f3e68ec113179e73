//! `AttemptHandle`: what a coroutine's attempt reports its outcome through.
//! The runner defers the attempt (the engine frees its executor and counts
//! it against `async_concurrency`) and hands this handle to the attempt's
//! `start`; the worker's event loop calls `finish` once the coroutine ends,
//! from its own thread, and the outcome goes to the writer like any other.

use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::prelude::*;

use super::outcome::parse_outcome;
use super::runner::RunningTasks;
use crate::engine::Deferred;
use crate::job::{format_id, AttemptRef};

/// One deferred attempt's way back to the engine. Only the first report
/// counts; later ones do nothing.
#[pyclass(module = "taskito._native", frozen)]
pub struct AttemptHandle {
    deferred: Mutex<Option<Deferred>>,
    job: AttemptRef,
    tasks: Arc<RunningTasks>,
}

impl AttemptHandle {
    pub(super) fn new(deferred: Deferred, tasks: Arc<RunningTasks>) -> Self {
        AttemptHandle {
            job: *deferred.job(),
            deferred: Mutex::new(Some(deferred)),
            tasks,
        }
    }

    /// The attempt, unless it was reported already; it no longer counts as
    /// running either way.
    pub(super) fn take(&self) -> Option<Deferred> {
        let deferred = self.deferred.lock().take();
        if deferred.is_some() {
            self.tasks.coroutine_finished(&self.job);
        }
        deferred
    }
}

#[pymethods]
impl AttemptHandle {
    #[getter]
    fn job_id(&self) -> String {
        format_id(self.job.id)
    }

    /// Reports the attempt's outcome, as `execute` returns one
    /// (`(OUTCOME_SUCCESS, result)`, ...): the writer commits it, fenced.
    fn finish(&self, outcome: &Bound<'_, PyAny>) {
        let kind = parse_outcome(outcome);
        if let Some(deferred) = self.take() {
            deferred.finish(kind);
        }
    }

    /// Gives the attempt's place back without an outcome: after `cancel`
    /// with reason `"interrupt"`, the engine has already failed or released
    /// the job.
    fn discard(&self) {
        if let Some(deferred) = self.take() {
            deferred.discard();
        }
    }

    /// The coroutine starts only now (it waited for a free place on the
    /// loop): its timeout counts from here.
    fn started(&self) {
        if let Some(deferred) = self.deferred.lock().as_mut() {
            deferred.started();
        }
    }
}
