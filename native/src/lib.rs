//! taskito's engine. `storage`, `engine`, `job` and `backoff` are plain Rust,
//! tested by `cargo test`; `python` is the one module that knows PyO3 and
//! builds the `taskito._native` extension module. It comes with the default
//! `python` feature; `--no-default-features` builds the engine alone.

pub mod backoff;
pub mod clock;
pub mod engine;
pub mod error;
pub mod job;
pub mod storage;
pub mod wakeup;

#[cfg(feature = "python")]
mod python;
