//! Tests of the PostgreSQL backend, one file per concern like the code
//! (mirroring the SQLite backend's where they apply). Each test runs in a
//! schema of its own, dropped afterwards, on the server named by
//! TASKITO_TEST_POSTGRES_URL; see [`server`] for what happens without one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::*;
use crate::job::{now_micros, Failure, OutcomeKind, State};

/// The variable that names the test server.
pub const URL_ENV: &str = "TASKITO_TEST_POSTGRES_URL";

/// The test server's URL. Without the variable, or when its server cannot
/// be reached, the PostgreSQL tests are skipped (they pass, saying so on
/// stderr), except in CI (TASKITO_CI=1), where that fails them.
pub fn server() -> Option<String> {
    static SAID: std::sync::Once = std::sync::Once::new();
    let ci = std::env::var("TASKITO_CI").is_ok_and(|v| v == "1");
    let problem = match std::env::var(URL_ENV) {
        Ok(url) if !url.trim().is_empty() => match reachable(&url) {
            Ok(()) => return Some(url),
            Err(e) => format!("{URL_ENV} is set but its server cannot be reached: {e}"),
        },
        _ => format!("{URL_ENV} is not set"),
    };
    if ci {
        panic!("{problem}: CI (TASKITO_CI=1) must run the PostgreSQL tests");
    }
    SAID.call_once(|| {
        // Straight to stderr: the test harness hides what passing tests print.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "skipping the PostgreSQL tests: {problem}; run them with \
             {URL_ENV}=postgresql://postgres@127.0.0.1:5432/test"
        );
    });
    None
}

fn reachable(url: &str) -> Result<()> {
    Target::new(url, "public", Duration::from_secs(5))?.connect()?;
    Ok(())
}

/// A schema of its own for one test, dropped when this is.
pub struct Scratch {
    pub url: String,
    pub schema: String,
}

impl Scratch {
    /// A fresh schema on the test server, or `None` to skip the test.
    pub fn new() -> Option<Scratch> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let url = server()?;
        let schema = format!(
            "taskito_t{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            fastrand::u32(..)
        );
        Some(Scratch { url, schema })
    }

    pub fn config(&self) -> PostgresConfig {
        PostgresConfig::new(self.url.clone(), self.schema.clone())
    }

    pub fn open(&self) -> PostgresStorage {
        PostgresStorage::open(self.config()).unwrap()
    }

    /// A direct connection (no search_path), for looking behind the
    /// storage's back.
    pub fn client(&self) -> postgres::Client {
        Target::new(&self.url, "public", Duration::from_secs(5))
            .unwrap()
            .connect()
            .unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Ok(mut client) =
            Target::new(&self.url, "public", Duration::from_secs(5)).and_then(|t| t.connect())
        {
            let _ = client.batch_execute(&format!(
                "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
                self.schema
            ));
        }
    }
}

/// Opens a fresh storage, or returns from the test (skipped).
macro_rules! storage {
    () => {{
        let Some(scratch) = Scratch::new() else {
            return;
        };
        let storage = scratch.open();
        (scratch, storage)
    }};
}

fn opts(task: &str) -> JobOptions {
    JobOptions::new(task)
}

fn claim(s: &PostgresStorage, limit: usize) -> Vec<ClaimedJob> {
    s.claim(&ClaimRequest::to_run(
        "w1",
        None,
        limit,
        Duration::from_secs(30),
    ))
    .unwrap()
}

fn payloads(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("p{i}").into_bytes()).collect()
}

fn success(job: &ClaimedJob, result: &[u8]) -> Outcome {
    Outcome {
        job: job.attempt_ref(),
        started_at: None,
        finished_at: now_micros(),
        kind: OutcomeKind::Success(result.to_vec()),
    }
}

fn failure(job: &ClaimedJob, retryable: bool) -> Outcome {
    Outcome {
        job: job.attempt_ref(),
        started_at: None,
        finished_at: now_micros(),
        kind: OutcomeKind::Failure(Failure {
            error_type: "ValueError".into(),
            message: format!("boom on attempt {}", job.attempt),
            traceback: "Traceback ...".into(),
            retryable,
        }),
    }
}

fn state(s: &PostgresStorage, id: i64) -> State {
    s.get_job(id).unwrap().unwrap().state
}

/// Retries `f` until it returns `Some`, for at most `within`: how tests
/// wait for the server's clock to pass a lease or a due time.
fn eventually<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {within:?}"
        );
        std::thread::yield_now();
    }
}

fn claim_ids(s: &PostgresStorage) -> Vec<i64> {
    claim(s, 100).iter().map(|j| j.id).collect()
}

mod claim;
mod enqueue;
mod faults;
mod maintenance;
mod notify;
mod open;
mod outcomes;
mod prefetch;
mod reads;
mod registry;
mod schedule;
mod workflow;
