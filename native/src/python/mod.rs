//! The `taskito._native` extension module: converts Python values to engine
//! values, releases the GIL around every storage call and wait, and runs task
//! code for the worker's executor threads. Everything else lives in the
//! Python-free engine.
//!
//! `native_queue` is the pyclass one `Queue` drives (its worker methods in
//! `native_worker`, its schedules and rate limits in `schedule`); `watch` backs `aresult()`; `runner` and `events` are
//! what the worker's threads call into Python through; `deferred` is how
//! coroutines report back; `outcome` reads what a task's attempt returned;
//! `convert` turns engine values into Python ones; `errors` is the
//! exception hierarchy.

mod convert;
mod deferred;
mod errors;
mod events;
mod graph;
mod native_queue;
mod native_worker;
mod outcome;
mod runner;
mod schedule;
mod watch;

use pyo3::prelude::*;

#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(module)?;
    module.add_class::<native_queue::NativeQueue>()?;
    module.add_class::<watch::AsyncWatch>()?;
    module.add_class::<deferred::AttemptHandle>()?;
    outcome::register(module)?;
    module.add_function(wrap_pyfunction!(schedule::next_tick, module)?)?;
    module.add_function(wrap_pyfunction!(schedule::check_catch_up, module)?)?;
    module.add_function(wrap_pyfunction!(schedule::rate_per_second, module)?)?;
    module.add(
        "PERIODIC_LOOKAHEAD",
        crate::storage::PERIODIC_LOOKAHEAD.as_secs_f64(),
    )?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    module.add("SQLITE_VERSION", rusqlite::version())?;
    Ok(())
}
