//! Periodic schedules and rate limits through real workers: ticks stored
//! once across workers and run at their time, limited jobs let through at
//! their rate while the rest drain.

use std::collections::HashSet;
use std::time::Instant;

use super::*;
use crate::engine::worker::Declared;
use crate::job::{JobFilter, Micros};
use crate::storage::{CatchUp, LimitScope, PeriodicSchedule, RateLimit};

fn every_second(task: &str) -> PeriodicSchedule {
    PeriodicSchedule {
        name: format!("{task}-schedule"),
        cron: "* * * * * *".into(),
        timezone: "UTC".into(),
        catch_up: CatchUp::One,
        options: options(task),
        payload: b"tick".to_vec(),
    }
}

fn declaring(declared: Declared) -> WorkerConfig {
    WorkerConfig {
        declared,
        ..config(2)
    }
}

fn jobs_of(engine: &Engine, task: &str) -> Vec<crate::job::JobRecord> {
    engine
        .storage
        .list_jobs(&JobFilter {
            task_name: Some(task.into()),
            limit: 10_000,
            ..Default::default()
        })
        .unwrap()
}

#[test]
fn two_workers_run_each_tick_once_at_its_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ticks.db");
    let (a, b) = (file_engine(&path), file_engine(&path));
    let declared = Declared {
        periodic: vec![every_second("tick")],
        ..Default::default()
    };
    let ran = Arc::new(Mutex::new(Vec::<(i64, Micros)>::new()));
    let workers: Vec<Arc<Worker>> = [&a, &b]
        .into_iter()
        .map(|engine| {
            let ran = ran.clone();
            start(engine, declaring(declared.clone()), move |job| {
                ran.lock().push((job.scheduled_at, now_micros()));
                echo(job)
            })
            .0
        })
        .collect();
    let deadline = Instant::now() + WAIT;
    while ran.lock().len() < 3 {
        assert!(Instant::now() < deadline, "three ticks never ran");
        std::thread::sleep(POLL);
    }
    for worker in &workers {
        worker.stop(WAIT);
    }
    let ran = ran.lock().clone();
    let ticks: HashSet<Micros> = ran.iter().map(|r| r.0).collect();
    assert_eq!(ticks.len(), ran.len(), "a tick ran twice: {ran:?}");
    for (tick, at) in &ran {
        assert!(at >= tick, "ran before its tick");
        assert!(at - tick < 500_000, "ran {}µs late", at - tick);
    }
    let stored = jobs_of(&a, "tick");
    let stored_ticks: HashSet<Micros> = stored.iter().map(|j| j.scheduled_at).collect();
    assert_eq!(stored_ticks.len(), stored.len(), "a tick stored twice");
}

#[test]
fn limited_jobs_wait_for_tokens_while_the_rest_drain() {
    let engine = engine();
    let declared = Declared {
        rate_limits: vec![RateLimit {
            scope: LimitScope::Task,
            name: "slow".into(),
            per_second: 20.0,
        }],
        ..Default::default()
    };
    let (worker, events) = start(&engine, declaring(declared), echo);
    let started = Instant::now();
    let slow = engine
        .enqueue(&options("slow"), &vec![b"s".to_vec(); 30])
        .unwrap();
    let fast = engine
        .enqueue(&options("fast"), &vec![b"f".to_vec(); 2000])
        .unwrap();
    for id in &fast {
        wait(&engine, *id);
    }
    let fast_done = started.elapsed();
    let slow_done_then = slow
        .iter()
        .filter(|id| engine.storage.finished(**id).unwrap().is_some())
        .count();
    // At most a burst of 2 at once, then 20 a second.
    let allowed = 2 + (fast_done.as_secs_f64() * 20.0).ceil() as usize + 1;
    assert!(
        slow_done_then <= allowed,
        "{slow_done_then} limited jobs done in {fast_done:?}"
    );
    // A lone job enqueued next to the idle worker waits for its token too.
    let lone = engine.enqueue(&options("slow"), &[b"l".to_vec()]).unwrap();
    for id in slow.iter().chain(&lone) {
        assert_eq!(wait(&engine, *id).state, State::Complete);
    }
    let took = started.elapsed().as_secs_f64();
    assert!(
        took >= (31.0 - 2.0) / 20.0 * 0.9,
        "31 limited jobs in {took}s"
    );
    worker.stop(WAIT);
    for job in jobs_of(&engine, "slow") {
        assert_eq!(job.attempt, 1, "a limited job spent no extra attempt");
    }
    assert!(events.0.lock().is_empty(), "{:?}", events.0.lock());
}

on_postgres!(
    two_workers_run_each_tick_once_at_its_time,
    limited_jobs_wait_for_tokens_while_the_rest_drain,
);
