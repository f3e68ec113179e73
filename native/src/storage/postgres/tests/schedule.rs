//! Periodic ticks and rate limits on PostgreSQL (the specification is
//! shared with SQLite: `storage::schedule_tests`).

use super::*;
use crate::storage::schedule_tests::{self as spec, Rewind};

/// Moves stored times back, behind the storage's back.
fn rewinder(scratch: &Scratch) -> impl Fn(Rewind) + '_ {
    move |rewind| {
        let mut client = scratch.client();
        let schema = &scratch.schema;
        match rewind {
            Rewind::Schedule(name, secs) => client.execute(
                &format!(
                    "UPDATE \"{schema}\".periodic SET next_tick = next_tick - $1::int8 * \
                     interval '1 second' WHERE name = $2::text"
                ),
                &[&secs, &name],
            ),
            Rewind::Buckets(secs) => client.execute(
                &format!(
                    "UPDATE \"{schema}\".rate_limits SET refilled_at = refilled_at - $1::int8 \
                     * interval '1 second'"
                ),
                &[&secs],
            ),
        }
        .unwrap();
    }
}

#[test]
fn a_tick_is_stored_once_and_ahead_of_its_time() {
    let (_scratch, s) = storage!();
    spec::a_tick_is_stored_once_and_ahead_of_its_time(&s);
}

#[test]
fn racing_firings_store_each_tick_once() {
    let (scratch, a) = storage!();
    let b = scratch.open();
    spec::racing_firings_store_each_tick_once(&[&a, &b], &rewinder(&scratch));
}

#[test]
fn missed_ticks_follow_catch_up() {
    let (scratch, s) = storage!();
    spec::missed_ticks_follow_catch_up(&s, &rewinder(&scratch));
}

#[test]
fn registering_again_keeps_the_next_tick_unless_the_pattern_changed() {
    let (scratch, s) = storage!();
    spec::registering_again_keeps_the_next_tick_unless_the_pattern_changed(&s, &rewinder(&scratch));
}

#[test]
fn a_shared_bucket_lets_through_its_rate() {
    let (scratch, a) = storage!();
    let b = scratch.open();
    spec::a_shared_bucket_lets_through_its_rate(&a, &b, &rewinder(&scratch));
}

#[test]
fn a_queue_limit_covers_its_tasks() {
    let (_scratch, s) = storage!();
    spec::a_queue_limit_covers_its_tasks(&s);
}
