//! taskito's engine. `storage`, `engine`, `job` and `backoff` are plain Rust,
//! tested by `cargo test`; `python` is the one module that knows PyO3 and
//! builds the `taskito._native` extension module.

pub mod backoff;
pub mod engine;
pub mod error;
pub mod job;
pub mod storage;

mod python;
