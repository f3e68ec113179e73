//! The schedule half's storage operations (periodic ticks, rate limits),
//! specified once for every backend: each backend's tests call these with
//! its storages and a way to move stored times into the past (SQLite's
//! clock is the process's, PostgreSQL's the server's, so neither can simply
//! wait).

use std::collections::HashSet;
use std::time::Duration;

use super::*;
use crate::job::{ClaimedJob, JobOptions, Micros, State};

const SECOND: Micros = 1_000_000;

/// Moves what is stored back in time by this many seconds: a schedule's
/// next tick (`Rewind::Schedule`) or every bucket's last refill.
pub enum Rewind<'a> {
    Schedule(&'a str, i64),
    Buckets(i64),
}

pub fn schedule(name: &str, cron: &str, catch_up: CatchUp) -> PeriodicSchedule {
    PeriodicSchedule {
        name: name.into(),
        cron: cron.into(),
        timezone: "UTC".into(),
        catch_up,
        options: JobOptions::new("tick"),
        payload: b"args".to_vec(),
    }
}

/// Every job of task `tick`: (due time, enqueued at), oldest tick first.
fn tick_jobs(s: &dyn Storage) -> Vec<(Micros, Micros)> {
    let filter = JobFilter {
        task_name: Some("tick".into()),
        limit: 100_000,
        ..Default::default()
    };
    let mut jobs: Vec<(Micros, Micros)> = s
        .list_jobs(&filter)
        .unwrap()
        .iter()
        .map(|j| (j.scheduled_at, j.created_at))
        .collect();
    jobs.sort();
    jobs
}

pub fn a_tick_is_stored_once_and_ahead_of_its_time(s: &dyn Storage) {
    s.register_periodic(&[schedule("every", "* * * * * *", CatchUp::One)])
        .unwrap();
    let names = ["every".to_string()];
    let first = s.fire_periodic(&names).unwrap();
    let again = s.fire_periodic(&names).unwrap();
    let jobs = tick_jobs(s);
    assert!(!jobs.is_empty() && jobs.len() <= 2, "{jobs:?}");
    for (due, enqueued) in &jobs {
        assert_eq!(due % SECOND, 0, "ticks fall on whole seconds");
        assert!(due > enqueued, "stored before its time");
    }
    assert_eq!(again.ready + first.ready, 0);
    assert!(first.earliest_due.is_some());
    let next = again.next_tick.unwrap();
    // (PostgreSQL's times come back in this process's clock: allow for the read.)
    let expected = jobs.last().unwrap().0 + SECOND;
    assert!(
        (next - expected).abs() < SECOND / 10,
        "the next tick is stored next"
    );
    let record = &s.periodic().unwrap()[0];
    assert_eq!(
        (
            record.name.as_str(),
            record.task_name.as_str(),
            record.catch_up.as_str()
        ),
        ("every", "tick", "one")
    );
    assert_eq!(record.last_tick, Some(jobs.last().unwrap().0));
    let job = s.claim(&ClaimRequest::to_run("w", None, 10, Duration::from_secs(5)));
    assert!(job.unwrap().is_empty(), "not claimable before its tick");
}

/// Many firings at once (threads of several storages on one database) store
/// each tick once.
pub fn racing_firings_store_each_tick_once(storages: &[&dyn Storage], rewind: &dyn Fn(Rewind)) {
    storages[0]
        .register_periodic(&[schedule("race", "* * * * * *", CatchUp::All)])
        .unwrap();
    rewind(Rewind::Schedule("race", 30));
    let names = ["race".to_string()];
    std::thread::scope(|scope| {
        for s in storages {
            for _ in 0..3 {
                scope.spawn(|| s.fire_periodic(&names).unwrap());
            }
        }
    });
    let jobs = tick_jobs(storages[0]);
    let ticks: HashSet<Micros> = jobs.iter().map(|j| j.0).collect();
    assert_eq!(ticks.len(), jobs.len(), "a tick stored twice: {jobs:?}");
    assert!(
        jobs.len() >= 31,
        "every missed tick and the next: {}",
        jobs.len()
    );
    for pair in jobs.windows(2) {
        assert_eq!(pair[1].0 - pair[0].0, SECOND, "no tick left out");
    }
}

/// After a gap of 10 s without a worker: `all` runs every missed tick, `one`
/// one of them, `none` none; the ticks around now run in all three.
pub fn missed_ticks_follow_catch_up(s: &dyn Storage, rewind: &dyn Fn(Rewind)) {
    for catch_up in [CatchUp::All, CatchUp::One, CatchUp::Skip] {
        let name = catch_up.name();
        let mut schedule = schedule(name, "* * * * * *", catch_up);
        schedule.options.task_name = format!("tick-{name}");
        s.register_periodic(&[schedule]).unwrap();
        rewind(Rewind::Schedule(name, 10));
        let fired = s.fire_periodic(&[name.to_string()]).unwrap();
        let filter = JobFilter {
            task_name: Some(format!("tick-{name}")),
            limit: 1000,
            ..Default::default()
        };
        let jobs = s.list_jobs(&filter).unwrap();
        // Caught up: stored well after its tick.
        let late = jobs
            .iter()
            .filter(|j| j.created_at - j.scheduled_at > SECOND)
            .count();
        let expected = match catch_up {
            CatchUp::All => 8..=9,
            CatchUp::One => 1..=1,
            CatchUp::Skip => 0..=0,
        };
        assert!(expected.contains(&late), "{name}: {late} late jobs");
        assert_eq!(
            fired.ready,
            jobs.iter().filter(|j| j.state == State::Ready).count()
        );
        let ready_now = jobs
            .iter()
            .filter(|j| j.state == State::Ready && j.created_at - j.scheduled_at <= SECOND)
            .count();
        assert!(ready_now <= 2, "{name}: on-time ticks {ready_now}");
    }
}

pub fn registering_again_keeps_the_next_tick_unless_the_pattern_changed(
    s: &dyn Storage,
    rewind: &dyn Fn(Rewind),
) {
    s.register_periodic(&[schedule("keep", "* * * * * *", CatchUp::One)])
        .unwrap();
    rewind(Rewind::Schedule("keep", 60));
    let before = s.periodic().unwrap()[0].next_tick;
    let mut same = schedule("keep", "* * * * * *", CatchUp::All);
    same.options.queue = "other".into();
    s.register_periodic(&[same]).unwrap();
    let kept = &s.periodic().unwrap()[0];
    assert_eq!(kept.next_tick, before, "missed ticks stay missed");
    assert_eq!(
        (kept.queue.as_str(), kept.catch_up.as_str()),
        ("other", "all")
    );
    s.register_periodic(&[schedule("keep", "0 0 * * *", CatchUp::All)])
        .unwrap();
    let changed = &s.periodic().unwrap()[0];
    assert!(
        changed.next_tick > before + 50 * SECOND,
        "a new pattern starts afresh"
    );
    let bad = schedule("bad", "61 * * * *", CatchUp::One);
    assert!(s.register_periodic(&[bad]).is_err());
    assert_eq!(s.periodic().unwrap().len(), 1, "nothing stored");
}

fn limited(task: &str, per_second: f64) -> RateLimits {
    RateLimits::new(vec![RateLimit {
        scope: LimitScope::Task,
        name: task.into(),
        per_second,
    }])
}

fn request<'a>(worker: &'a str, skip: &'a [String], start: usize) -> ClaimRequest<'a> {
    ClaimRequest {
        skip_tasks: Some(skip),
        skip_queues: Some(&[]),
        ..ClaimRequest::to_run(worker, None, start, Duration::from_secs(30))
    }
}

fn ids(jobs: &[ClaimedJob]) -> Vec<i64> {
    jobs.iter().map(|j| j.id).collect()
}

/// Two storages on one database share a bucket: what one takes, the other
/// cannot; the main claim leaves the limited jobs to `claim_limited`, and
/// a job that finds no token stays ready, its attempt unspent.
pub fn a_shared_bucket_lets_through_its_rate(
    a: &dyn Storage,
    b: &dyn Storage,
    rewind: &dyn Fn(Rewind),
) {
    let limits = limited("slow", 20.0); // a burst of 2
    a.configure_rate_limits(&limits.limits).unwrap();
    b.configure_rate_limits(&limits.limits).unwrap();
    let slow = a
        .enqueue(&JobOptions::new("slow"), &vec![b"x".to_vec(); 10])
        .unwrap();
    let fast = a
        .enqueue(&JobOptions::new("fast"), &vec![b"y".to_vec(); 5])
        .unwrap();
    let skip = vec!["slow".to_string()];
    assert_eq!(ids(&a.claim(&request("wa", &skip, 100)).unwrap()), fast);
    let first = a.claim_limited(&request("wa", &skip, 10), &limits).unwrap();
    assert_eq!(ids(&first.jobs), slow[..2]);
    assert!(first.jobs.iter().all(|j| j.running && j.attempt == 1));
    let second = b.claim_limited(&request("wb", &skip, 10), &limits).unwrap();
    assert!(
        second.jobs.len() <= 1,
        "the bucket is shared: {:?}",
        ids(&second.jobs)
    );
    let retry_at = second.retry_at.expect("jobs wait for a token");
    assert!(
        retry_at <= crate::job::now_micros() + SECOND / 10,
        "{retry_at}"
    );
    let waiting = a.get_job(slow[9]).unwrap().unwrap();
    assert_eq!((waiting.state, waiting.attempt), (State::Ready, 0));
    // Ten seconds later the bucket is full again, but holds only its burst.
    rewind(Rewind::Buckets(10));
    let refilled = b.claim_limited(&request("wb", &skip, 10), &limits).unwrap();
    assert_eq!(refilled.jobs.len(), 2);
    assert!(refilled.retry_at.is_some());
    // Nothing waits: nothing to come back for.
    let other = limited("idle", 1.0);
    a.configure_rate_limits(&other.limits).unwrap();
    let none = a.claim_limited(&request("wa", &[], 10), &other).unwrap();
    assert!(none.jobs.is_empty() && none.retry_at.is_none());
}

/// A queue's limit applies to every task in it, beside the tasks' own.
pub fn a_queue_limit_covers_its_tasks(s: &dyn Storage) {
    let limits = RateLimits::new(vec![
        RateLimit {
            scope: LimitScope::Queue,
            name: "emails".into(),
            per_second: 10.0,
        },
        RateLimit {
            scope: LimitScope::Task,
            name: "slow".into(),
            per_second: 1.0,
        },
    ]);
    s.configure_rate_limits(&limits.limits).unwrap();
    let mut mail = JobOptions::new("mail");
    mail.queue = "emails".into();
    let mails = s.enqueue(&mail, &vec![b"m".to_vec(); 3]).unwrap();
    let slow = s
        .enqueue(&JobOptions::new("slow"), &vec![b"s".to_vec(); 3])
        .unwrap();
    let other = s
        .enqueue(&JobOptions::new("other"), &vec![b"o".to_vec(); 2])
        .unwrap();
    let (skip_tasks, skip_queues) = (vec!["slow".to_string()], vec!["emails".to_string()]);
    let main = ClaimRequest {
        skip_tasks: Some(&skip_tasks),
        skip_queues: Some(&skip_queues),
        ..ClaimRequest::to_run("w", None, 100, Duration::from_secs(30))
    };
    assert_eq!(ids(&s.claim(&main).unwrap()), other);
    let took = s.claim_limited(&main, &limits).unwrap();
    let mut expected = vec![mails[0], slow[0]];
    expected.sort();
    let mut got = ids(&took.jobs);
    got.sort();
    assert_eq!(got, expected, "one burst of the queue, one of the task");
    assert!(took.retry_at.is_some());
}
