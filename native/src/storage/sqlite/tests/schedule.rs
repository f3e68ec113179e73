//! Periodic ticks and rate limits on SQLite (the specification is shared
//! with PostgreSQL: `storage::schedule_tests`).

use super::*;
use crate::storage::schedule_tests::{self as spec, Rewind};

/// Moves stored times back, behind the storage's back.
fn rewinder(s: &SqliteStorage) -> impl Fn(Rewind) + '_ {
    move |rewind| {
        let conn = s.writer.lock();
        match rewind {
            Rewind::Schedule(name, secs) => conn.execute(
                "UPDATE periodic SET next_tick = next_tick - ?1 WHERE name = ?2",
                rusqlite::params![secs * 1_000_000, name],
            ),
            Rewind::Buckets(secs) => conn.execute(
                "UPDATE rate_limits SET refilled_at = refilled_at - ?1",
                [secs * 1_000_000],
            ),
        }
        .unwrap();
    }
}

#[test]
fn a_tick_is_stored_once_and_ahead_of_its_time() {
    spec::a_tick_is_stored_once_and_ahead_of_its_time(&memory());
}

#[test]
fn racing_firings_store_each_tick_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("race.db");
    let (a, b) = (open(&path), open(&path));
    spec::racing_firings_store_each_tick_once(&[&a, &b], &rewinder(&a));
}

#[test]
fn missed_ticks_follow_catch_up() {
    let s = memory();
    spec::missed_ticks_follow_catch_up(&s, &rewinder(&s));
}

#[test]
fn registering_again_keeps_the_next_tick_unless_the_pattern_changed() {
    let s = memory();
    spec::registering_again_keeps_the_next_tick_unless_the_pattern_changed(&s, &rewinder(&s));
}

#[test]
fn a_shared_bucket_lets_through_its_rate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("limits.db");
    let (a, b) = (open(&path), open(&path));
    spec::a_shared_bucket_lets_through_its_rate(&a, &b, &rewinder(&a));
}

#[test]
fn a_queue_limit_covers_its_tasks() {
    spec::a_queue_limit_covers_its_tasks(&memory());
}
