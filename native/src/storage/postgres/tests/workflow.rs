//! Unique keys, dependencies, feeds, expiry and progress on PostgreSQL (the
//! specification is shared with SQLite: `storage::workflow_tests`).

use super::*;
use crate::storage::workflow_tests as spec;

/// Puts a job's expiry in the past, behind the storage's back.
fn expirer(scratch: &Scratch) -> impl Fn(i64) + '_ {
    move |id| {
        let schema = &scratch.schema;
        scratch
            .client()
            .batch_execute(&format!(
                "UPDATE \"{schema}\".jobs SET expires_at = now() - interval '1 second' \
                 WHERE id = {id}; \
                 UPDATE \"{schema}\".job_expiry SET expires_at = now() - interval '1 second' \
                 WHERE job_id = {id}"
            ))
            .unwrap();
    }
}

#[test]
fn a_live_key_returns_the_live_job_and_a_final_one_frees_it() {
    let (_scratch, s) = storage!();
    spec::a_live_key_returns_the_live_job_and_a_final_one_frees_it(&s);
}

#[test]
fn dependents_wait_and_completions_release_and_feed_them() {
    let (_scratch, s) = storage!();
    spec::dependents_wait_and_completions_release_and_feed_them(&s);
}

#[test]
fn a_failure_cancels_dependents_to_any_depth() {
    let (_scratch, s) = storage!();
    spec::a_failure_cancels_dependents_to_any_depth(&s);
}

#[test]
fn finish_mode_runs_whatever_became_of_the_dependency() {
    let (_scratch, s) = storage!();
    spec::finish_mode_runs_whatever_became_of_the_dependency(&s);
}

#[test]
fn cancelling_a_dependency_or_a_waiting_job_cascades() {
    let (_scratch, s) = storage!();
    spec::cancelling_a_dependency_or_a_waiting_job_cascades(&s);
}

#[test]
fn dependencies_are_checked_and_settled_at_enqueue() {
    let (_scratch, s) = storage!();
    spec::dependencies_are_checked_and_settled_at_enqueue(&s);
}

#[test]
fn metadata_and_progress_are_stored() {
    let (_scratch, s) = storage!();
    spec::metadata_and_progress_are_stored(&s);
}

#[test]
fn an_expired_job_is_never_claimed_and_ends_expired() {
    let (scratch, s) = storage!();
    spec::an_expired_job_is_never_claimed_and_ends_expired(&s, &expirer(&scratch));
}

#[test]
fn a_revived_job_keeps_its_key_unless_another_took_it() {
    let (_scratch, s) = storage!();
    spec::a_revived_job_keeps_its_key_unless_another_took_it(&s);
}

#[test]
fn a_later_node_may_depend_on_a_node_that_is_a_live_keyed_job() {
    let (_scratch, s) = storage!();
    spec::a_later_node_may_depend_on_a_node_that_is_a_live_keyed_job(&s);
}
