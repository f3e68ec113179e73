//! Tests of the SQLite backend, one file per concern like the code they test.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::error::Error;
use crate::job::{
    format_id, now_micros, Applied, AttemptRef, ClaimedJob, Failure, JobFilter, JobOptions,
    Outcome, OutcomeKind, State, Stats, Status,
};
use crate::storage::{ClaimRequest, ReapedJob};

mod claim;
mod enqueue;
mod maintenance;
mod open;
mod outcomes;
mod plans;
mod poison;
mod prefetch;
mod reads;
mod registry;
mod reprepare;
mod schedule;
mod workflow;

fn memory() -> SqliteStorage {
    SqliteStorage::open(SqliteConfig::new(MEMORY)).unwrap()
}

fn opts(task: &str) -> JobOptions {
    JobOptions::new(task)
}

fn claim(s: &SqliteStorage, limit: usize) -> Vec<ClaimedJob> {
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

fn state(s: &SqliteStorage, id: i64) -> State {
    s.get_job(id).unwrap().unwrap().state
}

fn claim_ids(s: &SqliteStorage) -> Vec<i64> {
    claim(s, 100).iter().map(|j| j.id).collect()
}

fn open(path: &Path) -> SqliteStorage {
    SqliteStorage::open(SqliteConfig::new(path.to_str().unwrap())).unwrap()
}
