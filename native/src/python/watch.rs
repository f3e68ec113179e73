//! `AsyncWatch`: what `await job.aresult()` waits on, a pipe that turns
//! readable when the job finishes, in this process or (through the engine's
//! results relay) in another.

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
        let watch = match engine.watch_relayed(id) {
            Ok(watch) => watch,
            Err(e) => {
                // SAFETY: ours, and nothing else has them yet.
                unsafe {
                    libc::close(fds[0]);
                    libc::close(fds[1]);
                }
                return Err(e.into());
            }
        };
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

    /// The job's final state if this process has been handed it, else
    /// None. Reads nothing: safe on an event loop's thread.
    fn peek<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let Some(watch) = &self.watch else {
            return Err(Error::Closed("this watch is closed".into()).into());
        };
        self.engine
            .peek(watch, self.id)?
            .map(|f| finished_tuple(py, f))
            .transpose()
    }

    /// The job's final state if it has one now, else None: what `peek`
    /// knows, else one storage read (without the GIL). Blocks for that
    /// read: call it from a thread, not from an event loop.
    fn check<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        if let Some(finished) = self.peek(py)? {
            return Ok(Some(finished));
        }
        let (engine, id) = (self.engine.clone(), self.id);
        let finished = py.detach(|| engine.storage.finished(id))?;
        finished.map(|f| finished_tuple(py, f)).transpose()
    }

    fn close(&mut self) {
        self.release();
    }
}
