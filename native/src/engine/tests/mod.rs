use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use parking_lot::Mutex;

use super::*;
use crate::job::{now_micros, Failure, OutcomeKind, Status};
use crate::storage::ClaimRequest;

mod backends;
use backends::{engine, file_engine, on_postgres};

/// Runs jobs with a Rust closure.
struct FnRunner<F>(F);

impl<F> Runner for FnRunner<F>
where
    F: Fn(&ClaimedJob) -> OutcomeKind + Send + Sync + 'static,
{
    fn run(
        &self,
        first: ClaimedJob,
        next: &mut dyn FnMut() -> Option<ClaimedJob>,
        done: &mut dyn FnMut(Outcome),
        _defer: &mut dyn FnMut(&ClaimedJob) -> Deferred,
    ) {
        let mut job = Some(first);
        while let Some(j) = job {
            let kind = (self.0)(&j);
            done(Outcome {
                job: j.attempt_ref(),
                started_at: None,
                finished_at: now_micros(),
                kind,
            });
            job = next();
        }
    }
}

#[derive(Default)]
struct Events(Mutex<Vec<Event>>);

impl EventSink for Events {
    fn event(&self, event: Event) {
        self.0.lock().push(event);
    }
}

impl Events {
    fn count(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.0.lock().iter().filter(|e| f(e)).count()
    }
}

fn config(concurrency: usize) -> WorkerConfig {
    WorkerConfig {
        concurrency,
        lease: Duration::from_secs(2),
        heartbeat: Duration::from_millis(100),
        ..Default::default()
    }
}

fn start<F>(engine: &Arc<Engine>, config: WorkerConfig, f: F) -> (Arc<Worker>, Arc<Events>)
where
    F: Fn(&ClaimedJob) -> OutcomeKind + Send + Sync + 'static,
{
    let events = Arc::new(Events::default());
    let worker = Worker::start(
        engine.clone(),
        Arc::new(FnRunner(f)),
        events.clone(),
        config,
    )
    .unwrap();
    (worker, events)
}

fn echo(job: &ClaimedJob) -> OutcomeKind {
    OutcomeKind::Success(job.payload.clone())
}

fn fail(message: &str) -> OutcomeKind {
    OutcomeKind::Failure(Failure {
        error_type: "RuntimeError".into(),
        message: message.into(),
        traceback: String::new(),
        retryable: true,
    })
}

const WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(5);

fn wait(engine: &Engine, id: i64) -> Finished {
    engine.wait(id, WAIT, POLL, POLL).unwrap()
}

fn options(task: &str) -> JobOptions {
    JobOptions::new(task)
}

#[test]
fn runs_every_job_once_and_wakes_waiters() {
    let engine = engine();
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let (worker, events) = start(&engine, config(4), move |job| {
        counter.fetch_add(1, Ordering::SeqCst);
        echo(job)
    });
    let payloads: Vec<Vec<u8>> = (0..2000).map(|i| i.to_string().into_bytes()).collect();
    let ids = engine.enqueue(&options("t"), &payloads).unwrap();
    for (id, payload) in ids.iter().zip(&payloads) {
        let f = wait(&engine, *id);
        assert_eq!(f.state, State::Complete);
        assert_eq!(f.result.as_ref(), Some(payload));
    }
    assert_eq!(worker.stop(WAIT), 0);
    assert_eq!(runs.load(Ordering::SeqCst), 2000);
    assert_eq!(engine.storage.stats().unwrap().get(Status::Complete), 2000);
    assert!(events.0.lock().is_empty(), "{:?}", events.0.lock());
}

#[test]
fn executors_run_jobs_in_parallel() {
    let engine = engine();
    let barrier = Arc::new(Barrier::new(3));
    let b = barrier.clone();
    // Each job waits until all three run at once: it can only finish if the
    // worker really has three executors busy together.
    let (worker, _) = start(&engine, config(3), move |job| {
        b.wait();
        echo(job)
    });
    let ids = engine
        .enqueue(&options("t"), &[vec![1], vec![2], vec![3]])
        .unwrap();
    for id in ids {
        assert_eq!(wait(&engine, id).state, State::Complete);
    }
    worker.stop(WAIT);
}

#[test]
fn a_job_enqueued_while_idle_is_picked_up_at_once() {
    let engine = engine();
    let (worker, _) = start(&engine, config(1), echo);
    for i in 0..50u8 {
        let id = engine.enqueue(&options("t"), &[vec![i]]).unwrap()[0];
        assert_eq!(wait(&engine, id).result, Some(vec![i]));
    }
    worker.stop(WAIT);
}

#[test]
fn failures_are_retried_then_dead_lettered() {
    let engine = engine();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = attempts.clone();
    let (worker, _) = start(&engine, config(2), move |job| {
        seen.lock().push((job.payload[0], job.attempt));
        if job.payload[0] == 1 && job.attempt < 3 {
            fail("flaky")
        } else if job.payload[0] == 2 {
            fail("always")
        } else {
            echo(job)
        }
    });
    let mut o = options("t");
    o.max_retries = 2;
    o.retry_backoff = 0.01;
    let ids = engine.enqueue(&o, &[vec![1], vec![2]]).unwrap();
    assert_eq!(wait(&engine, ids[0]).state, State::Complete);
    let dead = wait(&engine, ids[1]);
    assert_eq!(dead.state, State::Dead);
    let error = dead.error.unwrap();
    assert_eq!((error.attempt, error.message.as_str()), (3, "always"));
    worker.stop(WAIT);
    let mut runs = attempts.lock().clone();
    runs.sort();
    assert_eq!(runs, vec![(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]);
}

#[test]
fn delayed_jobs_run_once_due() {
    let engine = engine();
    let (worker, _) = start(&engine, config(1), echo);
    let mut o = options("t");
    o.delay = Some(Duration::from_millis(150));
    let id = engine.enqueue(&o, &[vec![9]]).unwrap()[0];
    let enqueued = now_micros();
    assert_eq!(wait(&engine, id).state, State::Complete);
    let job = engine.storage.get_job(id).unwrap().unwrap();
    assert!(
        job.started_at.unwrap() - enqueued >= 140_000,
        "ran before it was due"
    );
    worker.stop(WAIT);
}

#[test]
fn an_overrunning_job_is_failed_and_its_late_result_discarded() {
    let engine = engine();
    let release = Arc::new(Barrier::new(2));
    let gate = release.clone();
    let (worker, events) = start(&engine, config(2), move |job| {
        if job.attempt == 1 {
            // Hang until the test has seen the timeout.
            gate.wait();
            OutcomeKind::Success(b"late".to_vec())
        } else {
            OutcomeKind::Success(b"retried".to_vec())
        }
    });
    let mut o = options("t");
    o.timeout = Some(Duration::from_millis(50));
    o.retry_backoff = 0.0;
    let id = engine.enqueue(&o, &[vec![0]]).unwrap()[0];
    let f = wait(&engine, id);
    assert_eq!(f.result.as_deref(), Some(&b"retried"[..]));
    release.wait();
    worker.stop(WAIT);
    assert_eq!(
        events.count(|e| matches!(e, Event::TimedOut { id: i, attempt: 1 } if *i == id)),
        1
    );
    assert_eq!(
        events.count(|e| matches!(e, Event::StaleOutcome { attempt: 1, .. })),
        1
    );
    // Told in the order it happened: the timeout, then what became of the attempt.
    let order: Vec<&'static str> = events
        .0
        .lock()
        .iter()
        .filter_map(|e| match e {
            Event::TimedOut { attempt: 1, .. } => Some("timed out"),
            Event::AttemptFailed { attempt: 1, .. } => Some("failed"),
            _ => None,
        })
        .collect();
    assert_eq!(order, ["timed out", "failed"]);
    let errors = engine.storage.errors(id).unwrap();
    assert_eq!(errors[0].error_type, "TaskTimeoutError");
    assert_eq!(
        engine
            .storage
            .finished(id)
            .unwrap()
            .unwrap()
            .result
            .as_deref(),
        Some(&b"retried"[..])
    );
}

#[test]
fn jobs_of_a_dead_worker_are_recovered_after_its_lease() {
    let engine = engine();
    let mut o = options("t");
    o.retry_backoff = 0.0;
    let ids = engine.enqueue(&o, &[vec![1], vec![2]]).unwrap();
    // A worker claims both, then vanishes without a word.
    let claimed = engine
        .storage
        .claim(&ClaimRequest::to_run(
            "gone",
            None,
            10,
            Duration::from_millis(100),
        ))
        .unwrap();
    assert_eq!(claimed.len(), 2);
    let (worker, events) = start(&engine, config(1), echo);
    for id in &ids {
        assert_eq!(wait(&engine, *id).state, State::Complete);
    }
    worker.stop(WAIT);
    assert_eq!(
        events.count(|e| matches!(e, Event::LeaseExpired { dead: false, .. })),
        2
    );
    let job = engine.storage.get_job(ids[0]).unwrap().unwrap();
    assert_eq!(job.attempt, 2);
    assert_eq!(
        engine.storage.errors(ids[0]).unwrap()[0].error_type,
        "WorkerLost"
    );
}

#[test]
fn leases_of_long_jobs_are_renewed() {
    let engine = engine();
    let mut cfg = config(1);
    cfg.lease = Duration::from_secs(1);
    cfg.heartbeat = Duration::from_millis(50);
    let gate = Arc::new(Barrier::new(2));
    let g = gate.clone();
    let (worker, events) = start(&engine, cfg, move |job| {
        g.wait();
        g.wait();
        echo(job)
    });
    let id = engine.enqueue(&options("t"), &[vec![1]]).unwrap()[0];
    gate.wait();
    // Outlive several leases while running, then let the job finish.
    let first_lease = engine
        .storage
        .get_job(id)
        .unwrap()
        .unwrap()
        .lease_expires_at
        .unwrap();
    let renewed = || {
        engine
            .storage
            .get_job(id)
            .unwrap()
            .unwrap()
            .lease_expires_at
            .unwrap()
            > first_lease + 150_000
    };
    let deadline = std::time::Instant::now() + WAIT;
    while !renewed() {
        assert!(std::time::Instant::now() < deadline, "lease never renewed");
        let _ = engine.wait(id, Duration::from_millis(20), POLL, POLL);
    }
    gate.wait();
    let f = wait(&engine, id);
    assert_eq!(f.state, State::Complete);
    worker.stop(WAIT);
    assert_eq!(events.count(|e| matches!(e, Event::LeaseExpired { .. })), 0);
    assert_eq!(engine.storage.get_job(id).unwrap().unwrap().attempt, 1);
}

#[test]
fn stop_finishes_running_jobs_and_releases_unstarted_ones() {
    let engine = engine();
    let gate = Arc::new(Barrier::new(2));
    let g = gate.clone();
    let (worker, _) = start(&engine, config(1), move |job| {
        if job.payload[0] == 0 {
            g.wait();
            g.wait();
        }
        echo(job)
    });
    let ids = engine
        .enqueue(
            &options("t"),
            &(0..5u8).map(|i| vec![i]).collect::<Vec<_>>(),
        )
        .unwrap();
    gate.wait();
    // Stop is asked for while job 0 runs; only then may it finish.
    worker.request_stop();
    gate.wait();
    assert_eq!(worker.stop(WAIT), 0);
    assert_eq!(
        engine.storage.finished(ids[0]).unwrap().unwrap().state,
        State::Complete
    );
    let stats = engine.storage.stats().unwrap();
    assert_eq!(stats.get(Status::Running), 0, "nothing stranded");
    assert_eq!(stats.get(Status::Complete) + stats.get(Status::Pending), 5);
    for id in &ids[1..] {
        let job = engine.storage.get_job(*id).unwrap().unwrap();
        if job.state.status() == Status::Pending {
            assert_eq!(job.attempt, 0, "an unstarted job keeps its attempts");
        }
    }
}

#[test]
fn stop_gives_up_on_a_stuck_job_after_the_grace_period() {
    let engine = engine();
    let gate = Arc::new(Barrier::new(2));
    let g = gate.clone();
    let (worker, _) = start(&engine, config(1), move |job| {
        g.wait();
        g.wait();
        echo(job)
    });
    let id = engine.enqueue(&options("t"), &[vec![1]]).unwrap()[0];
    gate.wait();
    assert_eq!(
        worker.stop(Duration::from_millis(50)),
        1,
        "one executor left behind"
    );
    let job = engine.storage.get_job(id).unwrap().unwrap();
    assert_eq!(job.state, State::Ready, "released for another worker");
    gate.wait();
}

#[test]
fn wait_times_out_and_reports_unknown_jobs() {
    let engine = engine();
    let id = engine.enqueue(&options("t"), &[vec![1]]).unwrap()[0];
    let err = engine
        .wait(id, Duration::from_millis(30), POLL, POLL)
        .unwrap_err();
    assert!(matches!(err, Error::Timeout(..)), "{err}");
    assert!(matches!(
        engine.wait(42, WAIT, POLL, POLL),
        Err(Error::JobNotFound(_))
    ));
}

#[test]
fn cancelling_wakes_the_waiter() {
    let engine = engine();
    let mut o = options("t");
    o.delay = Some(Duration::from_secs(60));
    let id = engine.enqueue(&o, &[vec![1]]).unwrap()[0];
    let e = engine.clone();
    let waiter = std::thread::spawn(move || {
        e.wait(id, WAIT, Duration::from_secs(5), Duration::from_secs(5))
    });
    // The waiter polls storage every 5 s: only the hub can wake it sooner.
    while !engine.hub.has_watchers() {
        std::thread::yield_now();
    }
    assert!(engine.cancel(id).unwrap());
    assert_eq!(waiter.join().unwrap().unwrap().state, State::Cancelled);
}

#[test]
fn a_worker_serves_only_its_queues() {
    let engine = engine();
    let mut cfg = config(1);
    cfg.queues = Some(vec!["mail".into()]);
    let (worker, _) = start(&engine, cfg, echo);
    let mut mail = options("t");
    mail.queue = "mail".into();
    let other = engine.enqueue(&options("t"), &[vec![0]]).unwrap()[0];
    let m = engine.enqueue(&mail, &[vec![1]]).unwrap()[0];
    assert_eq!(wait(&engine, m).state, State::Complete);
    worker.stop(WAIT);
    assert_eq!(
        engine.storage.get_job(other).unwrap().unwrap().state,
        State::Ready
    );
}

#[test]
fn bad_worker_settings_are_refused() {
    let engine = engine();
    let events: Arc<dyn EventSink> = Arc::new(Events::default());
    let runner: Arc<dyn Runner> = Arc::new(FnRunner(echo));
    for cfg in [
        WorkerConfig {
            concurrency: 0,
            ..config(1)
        },
        WorkerConfig {
            heartbeat: Duration::from_secs(2),
            lease: Duration::from_secs(5),
            ..config(1)
        },
        WorkerConfig {
            lease: Duration::from_millis(900),
            heartbeat: Duration::from_millis(100),
            ..config(1)
        },
        WorkerConfig {
            queues: Some(vec![]),
            ..config(1)
        },
    ] {
        let err = Worker::start(engine.clone(), runner.clone(), events.clone(), cfg)
            .err()
            .unwrap();
        assert!(matches!(err, Error::InvalidArgument(_)));
    }
}

#[test]
fn two_workers_on_one_file_share_the_work_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let open = || file_engine(&path);
    let (a, b, producer) = (open(), open(), open());
    let ran = Arc::new(Mutex::new(Vec::new()));
    let (r1, r2) = (ran.clone(), ran.clone());
    let (wa, _) = start(&a, config(2), move |job| {
        r1.lock().push(job.id);
        echo(job)
    });
    let (wb, _) = start(&b, config(2), move |job| {
        r2.lock().push(job.id);
        echo(job)
    });
    let payloads: Vec<Vec<u8>> = (0..3000).map(|i: u32| i.to_le_bytes().to_vec()).collect();
    let ids = producer.enqueue(&options("t"), &payloads).unwrap();
    // The producer has no worker: its waits poll storage.
    for id in &ids {
        assert_eq!(wait(&producer, *id).state, State::Complete);
    }
    wa.stop(WAIT);
    wb.stop(WAIT);
    let mut ran = ran.lock().clone();
    assert_eq!(ran.len(), 3000);
    ran.sort();
    ran.dedup();
    assert_eq!(ran.len(), 3000, "a job ran twice");
}

#[test]
fn a_lone_job_goes_straight_to_an_idle_worker() {
    let engine = engine();
    let (worker, _) = start(&engine, config(1), echo);
    let id = engine.enqueue(&options("t"), &[vec![1]]).unwrap()[0];
    assert_eq!(wait(&engine, id).state, State::Complete);
    let job = engine.storage.get_job(id).unwrap().unwrap();
    assert_eq!(
        job.started_at,
        Some(job.created_at),
        "claimed as it was stored"
    );
    assert_eq!(job.worker_id.as_deref(), Some(worker.id()));
    worker.stop(WAIT);
    // Without a worker the same call stores it for whoever claims next.
    let id = engine.enqueue(&options("t"), &[vec![2]]).unwrap()[0];
    assert_eq!(
        engine.storage.get_job(id).unwrap().unwrap().state,
        State::Ready
    );
}

/// A runner that panics on payload [0] after taking a second job.
struct PanickyRunner;

impl Runner for PanickyRunner {
    fn run(
        &self,
        first: ClaimedJob,
        next: &mut dyn FnMut() -> Option<ClaimedJob>,
        done: &mut dyn FnMut(Outcome),
        _defer: &mut dyn FnMut(&ClaimedJob) -> Deferred,
    ) {
        if first.payload == [0] && first.attempt == 1 {
            panic!("a bug in the runner");
        }
        let mut job = Some(first);
        while let Some(j) = job {
            done(Outcome {
                job: j.attempt_ref(),
                started_at: None,
                finished_at: now_micros(),
                kind: echo(&j),
            });
            job = next();
        }
    }
}

#[test]
fn a_runner_panic_hands_its_jobs_back() {
    let engine = engine();
    let events = Arc::new(Events::default());
    let mut o = options("t");
    o.retry_backoff = 0.0;
    let id = engine.enqueue(&o, &[vec![0]]).unwrap()[0];
    let worker = Worker::start(
        engine.clone(),
        Arc::new(PanickyRunner),
        events.clone(),
        config(1),
    )
    .unwrap();
    // Released at once, not after a lease: the second attempt completes.
    assert_eq!(wait(&engine, id).state, State::Complete);
    assert_eq!(engine.storage.get_job(id).unwrap().unwrap().attempt, 2);
    assert_eq!(
        events.count(|e| matches!(e, Event::RunnerPanicked { jobs: 1 })),
        1
    );
    assert_eq!(worker.stop(WAIT), 0);
    assert_eq!(worker.inflight(), 0, "its capacity was given back");
}

#[test]
fn delayed_jobs_from_another_process_run_on_time_under_a_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.db");
    let open = || file_engine(&path);
    let (local, other) = (open(), open());
    // Each job stands for a millisecond of work: a backlog of seconds.
    let (worker, _) = start(&local, config(1), |job| {
        std::thread::sleep(Duration::from_millis(1));
        echo(job)
    });
    let backlog: Vec<Vec<u8>> = (0..5000u32).map(|i| i.to_le_bytes().to_vec()).collect();
    local.enqueue(&options("t"), &backlog).unwrap();
    let mut urgent = options("t");
    urgent.priority = 100;
    urgent.delay = Some(Duration::from_millis(50));
    let id = other.enqueue(&urgent, &[vec![9]]).unwrap()[0];
    assert_eq!(wait(&other, id).state, State::Complete);
    assert!(
        local.storage.stats().unwrap().get(Status::Pending) > 1000,
        "it waited for the backlog"
    );
    worker.stop(WAIT);
}

#[test]
fn more_executors_than_a_claim_holds_still_claim() {
    let engine = engine();
    let (worker, _) = start(&engine, config(600), echo);
    let ids = engine
        .enqueue(&options("t"), &[vec![1], vec![2], vec![3]])
        .unwrap();
    for id in ids {
        assert_eq!(wait(&engine, id).state, State::Complete);
    }
    worker.stop(WAIT);
}

mod deferred;
mod fairness;
mod schedule;
mod workflow;

on_postgres!(
    runs_every_job_once_and_wakes_waiters,
    executors_run_jobs_in_parallel,
    a_job_enqueued_while_idle_is_picked_up_at_once,
    failures_are_retried_then_dead_lettered,
    delayed_jobs_run_once_due,
    an_overrunning_job_is_failed_and_its_late_result_discarded,
    jobs_of_a_dead_worker_are_recovered_after_its_lease,
    leases_of_long_jobs_are_renewed,
    stop_finishes_running_jobs_and_releases_unstarted_ones,
    stop_gives_up_on_a_stuck_job_after_the_grace_period,
    wait_times_out_and_reports_unknown_jobs,
    cancelling_wakes_the_waiter,
    a_worker_serves_only_its_queues,
    bad_worker_settings_are_refused,
    two_workers_on_one_file_share_the_work_without_duplicates,
    a_lone_job_goes_straight_to_an_idle_worker,
    a_runner_panic_hands_its_jobs_back,
    delayed_jobs_from_another_process_run_on_time_under_a_backlog,
    more_executors_than_a_claim_holds_still_claim,
);
