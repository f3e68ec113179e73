//! Unique keys, dependencies, feeds, expiry and progress on SQLite (the
//! specification is shared with PostgreSQL: `storage::workflow_tests`).

use super::*;
use crate::storage::workflow_tests as spec;

/// Puts a job's expiry in the past, behind the storage's back.
fn expirer(s: &SqliteStorage) -> impl Fn(i64) + '_ {
    move |id| {
        s.writer
            .lock()
            .execute(
                "UPDATE jobs SET expires_at = 1, expiry = 1 WHERE id = ?1",
                [id],
            )
            .unwrap();
    }
}

#[test]
fn a_live_key_returns_the_live_job_and_a_final_one_frees_it() {
    spec::a_live_key_returns_the_live_job_and_a_final_one_frees_it(&memory());
}

#[test]
fn dependents_wait_and_completions_release_and_feed_them() {
    spec::dependents_wait_and_completions_release_and_feed_them(&memory());
}

#[test]
fn a_failure_cancels_dependents_to_any_depth() {
    spec::a_failure_cancels_dependents_to_any_depth(&memory());
}

#[test]
fn finish_mode_runs_whatever_became_of_the_dependency() {
    spec::finish_mode_runs_whatever_became_of_the_dependency(&memory());
}

#[test]
fn cancelling_a_dependency_or_a_waiting_job_cascades() {
    spec::cancelling_a_dependency_or_a_waiting_job_cascades(&memory());
}

#[test]
fn dependencies_are_checked_and_settled_at_enqueue() {
    spec::dependencies_are_checked_and_settled_at_enqueue(&memory());
}

#[test]
fn metadata_and_progress_are_stored() {
    spec::metadata_and_progress_are_stored(&memory());
}

#[test]
fn an_expired_job_is_never_claimed_and_ends_expired() {
    let s = memory();
    spec::an_expired_job_is_never_claimed_and_ends_expired(&s, &expirer(&s));
}

#[test]
fn a_revived_job_keeps_its_key_unless_another_took_it() {
    spec::a_revived_job_keeps_its_key_unless_another_took_it(&memory());
}
