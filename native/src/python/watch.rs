//! `AsyncWatch`: what `await job.aresult()` waits on, a pipe that turns
//! readable when the job finishes in this process.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::convert::finished_tuple;
use crate::engine::{self, Watch};
use crate::error::Error;

/// See `NativeQueue.watch`.
#[pyclass(module = "taskito._native")]
pub struct AsyncWatch {
    engine: Arc<engine::Engine>,
    id: i64,
    watch: Option<Watch>,
    pipe: (i32, i32),
}

impl AsyncWatch {
    pub(super) fn new(engine: Arc<engine::Engine>, id: i64) -> PyResult<Self> {
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
