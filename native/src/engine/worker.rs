//! A worker: one dispatcher thread claims jobs in batches and hands them to
//! executor threads through a channel; executors run them through the
//! [`Runner`]; one writer thread commits many outcomes per transaction; a
//! maintenance thread renews leases, enforces timeouts, recovers jobs of dead
//! workers and purges expired results.

use std::cell::RefCell;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use parking_lot::{Condvar, Mutex};

use super::{Engine, Event, EventSink, Hub, LocalWorker, Runner};
use crate::error::{Error, Result};
use crate::job::{
    micros, now_micros, Applied, AttemptRef, ClaimedJob, ErrorRecord, Failure, Finished, Micros,
    Outcome, OutcomeKind, State,
};
use crate::storage::{ClaimRequest, Storage};

#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Executor threads: how many jobs run at once.
    pub concurrency: usize,
    /// Serve only these queues; `None` serves all.
    pub queues: Option<Vec<String>>,
    /// How long a claim holds a job without renewal. A worker that dies is
    /// noticed when this runs out.
    pub lease: Duration,
    /// How often leases are renewed and expired ones recovered.
    pub heartbeat: Duration,
    /// Idle workers look for work written by other processes at this
    /// interval, doubling up to `idle_poll_max` while nothing changes.
    pub idle_poll_min: Duration,
    pub idle_poll_max: Duration,
    /// Most jobs one runner call may take in a row (one GIL acquisition).
    pub jobs_per_run: usize,
    /// Completed and cancelled jobs are deleted this long after finishing.
    pub result_ttl: Option<Duration>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: std::thread::available_parallelism().map_or(1, |n| n.get()),
            queues: None,
            lease: Duration::from_secs(10),
            heartbeat: Duration::from_secs(2),
            idle_poll_min: Duration::from_millis(1),
            idle_poll_max: Duration::from_millis(50),
            jobs_per_run: 32,
            result_ttl: None,
        }
    }
}

impl WorkerConfig {
    pub fn validate(&self) -> Result<()> {
        if self.concurrency == 0 {
            return Err(Error::invalid(
                "a worker needs at least one executor thread",
            ));
        }
        if self.heartbeat.is_zero() || self.heartbeat * 2 > self.lease {
            return Err(Error::invalid(format!(
                "heartbeat_interval ({:?}) must be above 0 and at most half the lease_duration ({:?})",
                self.heartbeat, self.lease
            )));
        }
        if self.jobs_per_run == 0 {
            return Err(Error::invalid("jobs_per_run must be at least 1"));
        }
        if matches!(&self.queues, Some(q) if q.is_empty() || q.iter().any(|n| n.is_empty())) {
            return Err(Error::invalid(
                "queues must be None or a list of non-empty names",
            ));
        }
        Ok(())
    }
}

/// Most jobs claimed in one transaction.
const MAX_CLAIM: usize = 512;
/// Claimed-but-not-started jobs a worker keeps, as seconds of work at the
/// recent completion rate: enough to hide the claim round trip, small enough
/// that other workers and new high-priority jobs are not kept waiting.
const BUFFER_SECONDS: f64 = 0.005;
/// How often the maintenance thread checkpoints the write-ahead log.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
/// How often the completion rate is sampled, at the longest...
const RATE_WINDOW: Duration = Duration::from_millis(20);
/// ...and how many completions make a sample early.
const RATE_MIN_JOBS: u64 = 128;
/// Most outcomes committed in one transaction.
const MAX_COMPLETE: usize = 1024;

enum WriterMsg {
    Outcome(Outcome),
    /// Commit what is queued, then exit.
    Stop,
}

/// A job this worker holds a lease on (claimed, outcome not yet committed).
struct Held {
    job: AttemptRef,
    started: Option<Instant>,
    timeout: Option<Duration>,
    timed_out: bool,
}

struct Shared {
    engine: Arc<Engine>,
    runner: Arc<dyn Runner>,
    events: Arc<dyn EventSink>,
    config: WorkerConfig,
    id: String,
    stopping: AtomicBool,
    /// Claimed jobs not yet finished by an executor.
    inflight: AtomicUsize,
    finished_attempts: AtomicU64,
    /// The dispatcher wants a wake-up once `inflight` falls to `refill_at`.
    starved: AtomicBool,
    refill_at: AtomicUsize,
    held: Mutex<HashMap<i64, Held>>,
    /// Jobs drained from the channel after stop began: never started.
    unstarted: Mutex<Vec<AttemptRef>>,
    outcomes: Sender<WriterMsg>,
    /// Hands executors the jobs enqueued already claimed for this worker;
    /// dropped when the worker stops.
    direct: Mutex<Option<Sender<ClaimedJob>>>,
    live_executors: Mutex<usize>,
    executor_exited: Condvar,
    maintenance_stop: Mutex<bool>,
    maintenance_wake: Condvar,
    stopped: Mutex<bool>,
    stopped_changed: Condvar,
}

impl Shared {
    fn storage(&self) -> &dyn Storage {
        &*self.engine.storage
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    fn report(&self, during: &'static str, error: &Error) {
        self.events.event(Event::StorageError {
            during,
            message: error.to_string(),
        });
    }

    fn mark_started(&self, job: &ClaimedJob) {
        if let Some(held) = self.held.lock().get_mut(&job.id) {
            if held.job.token == job.token {
                held.started = Some(Instant::now());
            }
        }
    }

    /// An executor finished an attempt: free its capacity, and wake the
    /// dispatcher if it was waiting for room.
    fn attempt_finished(&self) {
        self.finished_attempts.fetch_add(1, Ordering::Relaxed);
        let left = self.inflight.fetch_sub(1, Ordering::SeqCst) - 1;
        if left <= self.refill_at.load(Ordering::Relaxed)
            && self.starved.swap(false, Ordering::SeqCst)
        {
            self.engine.hub.notify_work();
        }
    }

    fn send_to_writer(&self, outcome: Outcome) {
        // The writer outlives every executor that is not abandoned; an
        // abandoned one's late outcome is fenced out anyway.
        let _ = self.outcomes.send(WriterMsg::Outcome(outcome));
    }

    /// A runner panicked (a bug) holding these attempts: hand their jobs
    /// back to the queue and free their capacity, so they run again.
    fn abandon(&self, jobs: &[AttemptRef]) {
        {
            let mut held = self.held.lock();
            for job in jobs {
                if matches!(held.get(&job.id), Some(h) if h.job.token == job.token) {
                    held.remove(&job.id);
                }
            }
        }
        for _ in jobs {
            self.attempt_finished();
        }
        if let Err(e) = self.storage().release(jobs, false) {
            self.report("releasing the jobs of a failed runner", &e);
        }
        self.events
            .event(Event::RunnerPanicked { jobs: jobs.len() });
        self.engine.hub.notify_work();
    }

    /// Records freshly claimed jobs as held by this worker.
    fn hold(&self, jobs: &[ClaimedJob]) {
        self.inflight.fetch_add(jobs.len(), Ordering::SeqCst);
        let mut held = self.held.lock();
        for job in jobs {
            held.insert(
                job.id,
                Held {
                    job: job.attempt_ref(),
                    started: None,
                    timeout: job.timeout,
                    timed_out: false,
                },
            );
        }
    }
}

impl LocalWorker for Shared {
    fn idle_claim(&self, queue: &str) -> Option<(String, Duration)> {
        let serves = self
            .config
            .queues
            .as_ref()
            .is_none_or(|q| q.iter().any(|name| name == queue));
        let direct = self.direct.lock();
        let idle = direct.as_ref().is_some_and(|jobs| jobs.is_empty())
            && self.inflight.load(Ordering::SeqCst) < self.config.concurrency;
        (serves && idle && !self.stopping()).then(|| (self.id.clone(), self.config.lease))
    }

    fn accept(&self, job: ClaimedJob) {
        let direct = self.direct.lock();
        match direct.as_ref() {
            Some(jobs) if !self.stopping() => {
                self.hold(std::slice::from_ref(&job));
                let _ = jobs.send(job);
            }
            _ => {
                // The worker stopped in between: give the job to the queue.
                drop(direct);
                if let Err(e) = self.storage().release(&[job.attempt_ref()], true) {
                    self.report("releasing a job handed to a stopped worker", &e);
                }
                self.engine.hub.notify_work();
            }
        }
    }
}

struct Threads {
    dispatcher: JoinHandle<()>,
    writer: JoinHandle<()>,
    maintenance: JoinHandle<()>,
    executors: Vec<JoinHandle<()>>,
}

pub struct Worker {
    shared: Arc<Shared>,
    /// Taken by the first `stop`.
    threads: Mutex<Option<Threads>>,
}

impl Worker {
    pub fn start(
        engine: Arc<Engine>,
        runner: Arc<dyn Runner>,
        events: Arc<dyn EventSink>,
        config: WorkerConfig,
    ) -> Result<Arc<Worker>> {
        config.validate()?;
        let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded::<ClaimedJob>();
        let (outcomes_tx, outcomes_rx) = crossbeam_channel::unbounded::<WriterMsg>();
        let shared = Arc::new(Shared {
            engine,
            runner,
            events,
            id: worker_id(),
            stopping: AtomicBool::new(false),
            inflight: AtomicUsize::new(0),
            finished_attempts: AtomicU64::new(0),
            starved: AtomicBool::new(false),
            refill_at: AtomicUsize::new(config.concurrency),
            held: Mutex::new(HashMap::new()),
            unstarted: Mutex::new(Vec::new()),
            outcomes: outcomes_tx,
            direct: Mutex::new(Some(jobs_tx.clone())),
            live_executors: Mutex::new(config.concurrency),
            executor_exited: Condvar::new(),
            maintenance_stop: Mutex::new(false),
            maintenance_wake: Condvar::new(),
            stopped: Mutex::new(false),
            stopped_changed: Condvar::new(),
            config,
        });
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name)
                .spawn(f)
                .map_err(|e| Error::io("cannot start a worker thread", e))
        };
        let mut executors = Vec::new();
        for i in 0..shared.config.concurrency {
            let (s, rx) = (shared.clone(), jobs_rx.clone());
            executors.push(spawn(
                format!("taskito-exec-{i}"),
                Box::new(move || executor(s, rx)),
            )?);
        }
        drop(jobs_rx);
        let s = shared.clone();
        let writer = spawn(
            "taskito-writer".into(),
            Box::new(move || writer(s, outcomes_rx)),
        )?;
        let s = shared.clone();
        let maintenance = spawn("taskito-maint".into(), Box::new(move || maintenance(s)))?;
        // The dispatcher goes last: nothing is claimed before all the threads
        // that finish claimed jobs exist.
        let s = shared.clone();
        let dispatcher = spawn(
            "taskito-dispatch".into(),
            Box::new(move || dispatcher(s, jobs_tx)),
        )?;
        let local: Weak<Shared> = Arc::downgrade(&shared);
        *shared.engine.local_worker.lock() = Some(local as Weak<dyn LocalWorker>);
        Ok(Arc::new(Worker {
            shared,
            threads: Mutex::new(Some(Threads {
                dispatcher,
                writer,
                maintenance,
                executors,
            })),
        }))
    }

    pub fn id(&self) -> &str {
        &self.shared.id
    }

    pub fn is_stopping(&self) -> bool {
        self.shared.stopping()
    }

    /// Asks the worker to stop without waiting: nothing new is claimed.
    pub fn request_stop(&self) {
        self.shared.stopping.store(true, Ordering::Release);
        self.shared.engine.hub.notify_work();
    }

    /// Stops the worker: claims nothing new at once, lets running jobs finish
    /// within `grace`, hands every other held job back to the queue, commits
    /// the outcomes it has, and joins its threads. An executor still inside a
    /// task after `grace` is left behind (its job is released, and its late
    /// outcome will be fenced out). Returns how many executors were left.
    pub fn stop(&self, grace: Duration) -> usize {
        let deadline = Instant::now() + grace;
        self.request_stop();
        let Some(threads) = self.threads.lock().take() else {
            // Another caller is stopping (or has stopped) the worker.
            self.wait_stopped(None);
            return 0;
        };
        let shared = &self.shared;
        let _ = threads.dispatcher.join();
        // No more jobs handed over directly: executors exit once the channel
        // is drained (what they drain now, they set aside unstarted).
        shared.direct.lock().take();
        shared.engine.forget_local_worker(&**shared);
        let left_behind = {
            let mut live = shared.live_executors.lock();
            while *live > 0 {
                if shared
                    .executor_exited
                    .wait_until(&mut live, deadline)
                    .timed_out()
                {
                    break;
                }
            }
            *live
        };
        let unstarted = std::mem::take(&mut *shared.unstarted.lock());
        if let Err(e) = shared.storage().release(&unstarted, true) {
            shared.report("releasing unstarted jobs", &e);
        }
        // Commit every outcome that is queued, so that what is still held
        // afterwards is exactly what has not finished.
        let _ = shared.outcomes.send(WriterMsg::Stop);
        let _ = threads.writer.join();
        if left_behind > 0 {
            // Still held: jobs whose tasks are running (their attempt counts)
            // and jobs a stuck executor never reached (refunded).
            let (running, never_started): (Vec<AttemptRef>, Vec<AttemptRef>) = {
                let held = shared.held.lock();
                let (running, waiting): (Vec<&Held>, Vec<&Held>) =
                    held.values().partition(|h| h.started.is_some());
                (
                    running.iter().map(|h| h.job).collect(),
                    waiting.iter().map(|h| h.job).collect(),
                )
            };
            for (jobs, refund) in [(&running, false), (&never_started, true)] {
                if let Err(e) = shared.storage().release(jobs, refund) {
                    shared.report("releasing abandoned jobs", &e);
                }
            }
            shared.engine.hub.notify_work();
            // Their jobs belong to the queue again; free the threads if the
            // tasks let themselves be interrupted.
            for job in &running {
                shared.runner.interrupt(job);
            }
        } else {
            for handle in threads.executors {
                let _ = handle.join();
            }
        }
        *shared.maintenance_stop.lock() = true;
        shared.maintenance_wake.notify_all();
        let _ = threads.maintenance.join();
        *shared.stopped.lock() = true;
        shared.stopped_changed.notify_all();
        left_behind
    }

    /// Blocks until the worker has stopped, or `timeout` passes. True if stopped.
    pub fn wait_stopped(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut stopped = self.shared.stopped.lock();
        while !*stopped {
            match deadline {
                Some(d) => {
                    if self
                        .shared
                        .stopped_changed
                        .wait_until(&mut stopped, d)
                        .timed_out()
                    {
                        break;
                    }
                }
                None => self.shared.stopped_changed.wait(&mut stopped),
            }
        }
        *stopped
    }

    /// Jobs claimed by this worker and not yet finished.
    pub fn inflight(&self) -> usize {
        self.shared.inflight.load(Ordering::SeqCst)
    }
}

fn worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".to_string());
    format!("{host}:{}:{:04x}", std::process::id(), fastrand::u16(..))
}

/// Tracks the completion rate to size the claim buffer.
struct RateMeter {
    last_count: u64,
    last_at: Instant,
    rate: f64,
}

impl RateMeter {
    fn new() -> Self {
        RateMeter {
            last_count: 0,
            last_at: Instant::now(),
            rate: 0.0,
        }
    }

    fn sample(&mut self, count: u64) {
        let elapsed = self.last_at.elapsed();
        let done = count - self.last_count;
        // Every 20 ms, or sooner once enough jobs finished to measure: a
        // backlog of short jobs must not run its first thousand through a
        // buffer sized for an unknown rate.
        if elapsed < RATE_WINDOW && (done < RATE_MIN_JOBS || elapsed.is_zero()) {
            return;
        }
        let instant = done as f64 / elapsed.as_secs_f64();
        self.rate = if self.rate == 0.0 {
            instant
        } else {
            0.6 * self.rate + 0.4 * instant
        };
        self.last_count = count;
        self.last_at = Instant::now();
    }

    /// Jobs to keep claimed beyond the ones executing.
    fn buffer(&self, concurrency: usize) -> usize {
        ((self.rate * BUFFER_SECONDS) as usize).clamp(concurrency, MAX_CLAIM.max(concurrency))
    }
}

fn dispatcher(shared: Arc<Shared>, jobs: Sender<ClaimedJob>) {
    let hub = shared.engine.hub.clone();
    let config = &shared.config;
    let mut next_due: Micros = i64::MIN;
    let mut last_promote = Instant::now();
    let mut idle = config.idle_poll_min;
    let mut rate = RateMeter::new();
    let mut error_pause = Duration::from_millis(10);
    while !shared.stopping() {
        let generation = hub.work_generation();
        next_due = next_due.min(hub.take_due_hint());
        rate.sample(shared.finished_attempts.load(Ordering::Relaxed));
        let buffer = rate.buffer(config.concurrency);
        let target = config.concurrency + buffer;
        let refill_at = config.concurrency + buffer / 2;
        shared.refill_at.store(refill_at, Ordering::Relaxed);
        let inflight = shared.inflight.load(Ordering::SeqCst);
        if inflight > refill_at {
            shared.starved.store(true, Ordering::SeqCst);
            if shared.inflight.load(Ordering::SeqCst) > refill_at {
                hub.wait_work(generation, config.idle_poll_max);
                continue;
            }
        }
        let now = now_micros();
        // Also every idle_poll_max however busy the worker is: delayed jobs
        // and retries that other processes wrote give no local hint.
        if next_due <= now || last_promote.elapsed() >= config.idle_poll_max {
            last_promote = Instant::now();
            match shared.storage().promote_due(now) {
                Ok(due) => next_due = due.unwrap_or(i64::MAX),
                Err(e) => {
                    shared.report("promoting due jobs", &e);
                    pause_after_error(&hub, generation, &mut error_pause);
                    continue;
                }
            }
        }
        let want = target.saturating_sub(inflight).min(MAX_CLAIM);
        let request = ClaimRequest {
            worker_id: &shared.id,
            queues: config.queues.as_deref(),
            limit: want,
            lease: config.lease,
        };
        let claimed = match shared.storage().claim(&request) {
            Ok(claimed) => claimed,
            Err(e) => {
                shared.report("claiming jobs", &e);
                pause_after_error(&hub, generation, &mut error_pause);
                continue;
            }
        };
        error_pause = Duration::from_millis(10);
        let got = claimed.len();
        if got > 0 {
            shared.hold(&claimed);
            for job in claimed {
                // Executors only exit once this sender is gone.
                let _ = jobs.send(job);
            }
            idle = config.idle_poll_min;
        }
        if got == want {
            continue;
        }
        // Nothing more to claim now: sleep until woken, due, or time to look
        // for work from other processes.
        let until_due = Duration::from_micros(next_due.saturating_sub(now_micros()).max(0) as u64);
        if !hub.wait_work(generation, idle.min(until_due)) {
            match shared.storage().external_change() {
                Ok(true) => {
                    idle = config.idle_poll_min;
                    next_due = i64::MIN;
                }
                Ok(false) => idle = (idle * 2).min(config.idle_poll_max),
                Err(e) => shared.report("checking for new work", &e),
            }
        }
    }
}

/// Waits before retrying a failed storage call (or until new work arrives),
/// doubling the pause up to a second.
fn pause_after_error(hub: &Hub, generation: u64, pause: &mut Duration) {
    hub.wait_work(generation, *pause);
    *pause = (*pause * 2).min(Duration::from_secs(1));
}

/// Decrements the live-executor count however the executor exits.
struct ExecutorExit<'a>(&'a Shared);

impl Drop for ExecutorExit<'_> {
    fn drop(&mut self) {
        *self.0.live_executors.lock() -= 1;
        self.0.executor_exited.notify_all();
    }
}

fn executor(shared: Arc<Shared>, jobs: Receiver<ClaimedJob>) {
    let _exit = ExecutorExit(&shared);
    let limit = shared.config.jobs_per_run;
    while let Ok(first) = jobs.recv() {
        if shared.stopping() {
            shared.unstarted.lock().push(first.attempt_ref());
            shared.inflight.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        shared.mark_started(&first);
        // When nothing else is waiting (no job for this executor, nothing
        // queued for the writer), the executor commits the last outcome
        // itself once the runner returns: one thread hand-off less on the
        // path of a lone job. Under load everything goes to the writer, which
        // commits many outcomes per transaction.
        let held_back: RefCell<Option<Outcome>> = RefCell::new(None);
        // Handed to the runner and not yet reported: what a runner panic strands.
        let in_hand = RefCell::new(vec![first.attempt_ref()]);
        let mut taken = 1;
        let mut next = || {
            if taken >= limit || shared.stopping() {
                return None;
            }
            match jobs.try_recv() {
                Ok(job) => {
                    if let Some(outcome) = held_back.borrow_mut().take() {
                        shared.send_to_writer(outcome);
                    }
                    taken += 1;
                    shared.mark_started(&job);
                    in_hand.borrow_mut().push(job.attempt_ref());
                    Some(job)
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => None,
            }
        };
        let mut done = |outcome: Outcome| {
            in_hand.borrow_mut().retain(|job| *job != outcome.job);
            shared.attempt_finished();
            if jobs.is_empty() && shared.outcomes.is_empty() {
                if let Some(earlier) = held_back.borrow_mut().replace(outcome) {
                    shared.send_to_writer(earlier);
                }
            } else {
                shared.send_to_writer(outcome);
            }
        };
        let run = catch_unwind(AssertUnwindSafe(|| {
            shared.runner.run(first, &mut next, &mut done)
        }));
        if let Some(outcome) = held_back.into_inner() {
            commit(&shared, &mut vec![outcome], false);
        }
        if run.is_err() {
            shared.abandon(&in_hand.into_inner());
        }
    }
}

fn writer(shared: Arc<Shared>, outcomes: Receiver<WriterMsg>) {
    let mut batch: Vec<Outcome> = Vec::with_capacity(MAX_COMPLETE);
    let mut stop = false;
    while !stop {
        match outcomes.recv() {
            Ok(WriterMsg::Outcome(outcome)) => batch.push(outcome),
            Ok(WriterMsg::Stop) | Err(_) => stop = true,
        }
        // Whatever queued up while the last commit ran goes into this one.
        while batch.len() < MAX_COMPLETE {
            match outcomes.try_recv() {
                Ok(WriterMsg::Outcome(outcome)) => batch.push(outcome),
                Ok(WriterMsg::Stop) => stop = true,
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            commit(&shared, &mut batch, stop);
        }
    }
}

fn commit(shared: &Shared, batch: &mut Vec<Outcome>, stopping: bool) {
    let mut pause = Duration::from_millis(10);
    let mut failures = 0;
    let applied = loop {
        match shared.storage().complete(batch) {
            Ok(applied) => break applied,
            Err(e) => {
                shared.report("recording job outcomes", &e);
                failures += 1;
                if stopping && failures >= 5 {
                    // The jobs stay leased until their leases run out, then
                    // run again elsewhere: at-least-once, nothing lost.
                    batch.clear();
                    return;
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    };
    let hub = &shared.engine.hub;
    {
        let mut held = shared.held.lock();
        for outcome in batch.iter() {
            if matches!(held.get(&outcome.job.id), Some(h) if h.job.token == outcome.job.token) {
                held.remove(&outcome.job.id);
            }
        }
    }
    for (outcome, applied) in batch.drain(..).zip(applied) {
        let id = outcome.job.id;
        let finished = |state: State| {
            let (result, error) = match outcome.kind {
                OutcomeKind::Success(result) => (Some(result), None),
                OutcomeKind::Failure(failure) => (
                    None,
                    Some(error_record(
                        outcome.job.attempt,
                        failure,
                        outcome.finished_at,
                    )),
                ),
                OutcomeKind::Cancelled => (None, None),
            };
            Finished {
                state,
                result,
                error,
            }
        };
        match applied {
            Applied::Complete => hub.finished(id, || finished(State::Complete)),
            Applied::Dead => hub.finished(id, || finished(State::Dead)),
            Applied::Cancelled => hub.finished(id, || Finished {
                state: State::Cancelled,
                result: None,
                error: None,
            }),
            Applied::Retry(at) => hub.notify_due(at),
            Applied::Stale => shared.events.event(Event::StaleOutcome {
                id,
                attempt: outcome.job.attempt,
            }),
        }
    }
}

fn error_record(attempt: u32, failure: Failure, failed_at: Micros) -> ErrorRecord {
    ErrorRecord {
        attempt,
        error_type: failure.error_type,
        message: failure.message,
        traceback: failure.traceback,
        failed_at,
    }
}

fn maintenance(shared: Arc<Shared>) {
    let config = &shared.config;
    let tick = config.heartbeat.min(Duration::from_millis(50));
    let mut last_heartbeat = Instant::now();
    let mut last_checkpoint = Instant::now();
    loop {
        {
            let mut stop = shared.maintenance_stop.lock();
            if !*stop {
                shared.maintenance_wake.wait_for(&mut stop, tick);
            }
            if *stop {
                return;
            }
        }
        // Leases first: nothing else here may delay their renewal.
        if last_heartbeat.elapsed() >= config.heartbeat {
            last_heartbeat = Instant::now();
            heartbeat(&shared);
        }
        enforce_timeouts(&shared);
        if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
            last_checkpoint = Instant::now();
            if let Err(e) = shared.storage().checkpoint() {
                shared.report("checkpointing the log", &e);
            }
        }
    }
}

/// Fails attempts that ran past their timeout. The task's thread cannot be
/// killed; its eventual outcome is fenced out because the attempt no longer
/// holds the job.
fn enforce_timeouts(shared: &Shared) {
    let mut overdue = Vec::new();
    {
        let mut held = shared.held.lock();
        for h in held.values_mut() {
            if let (Some(started), Some(timeout), false) = (h.started, h.timeout, h.timed_out) {
                if started.elapsed() > timeout {
                    h.timed_out = true;
                    overdue.push((h.job, timeout));
                }
            }
        }
    }
    for (job, timeout) in overdue {
        let failure = Failure {
            error_type: "TaskTimeoutError".into(),
            message: format!(
                "attempt {} ran longer than its timeout of {:?}",
                job.attempt, timeout
            ),
            traceback: String::new(),
            retryable: true,
        };
        let _ = shared.outcomes.send(WriterMsg::Outcome(Outcome {
            job,
            finished_at: now_micros(),
            kind: OutcomeKind::Failure(failure),
        }));
        shared.events.event(Event::TimedOut {
            id: job.id,
            attempt: job.attempt,
        });
        shared.runner.interrupt(&job);
    }
}

fn heartbeat(shared: &Shared) {
    let config = &shared.config;
    let storage = shared.storage();
    let held: Vec<AttemptRef> = shared.held.lock().values().map(|h| h.job).collect();
    if !held.is_empty() {
        if let Err(e) =
            storage.renew_leases(&held, now_micros().saturating_add(micros(config.lease)))
        {
            shared.report("renewing leases", &e);
        }
    }
    match storage.reap_expired(now_micros()) {
        Ok(reaped) => {
            for job in reaped {
                let dead = job.applied == Applied::Dead;
                shared
                    .events
                    .event(Event::LeaseExpired { id: job.id, dead });
                match job.applied {
                    Applied::Retry(at) => shared.engine.hub.notify_due(at),
                    // Final (dead, or cancelled on request): wake its waiters.
                    _ => {
                        if let Ok(Some(finished)) = storage.finished(job.id) {
                            shared.engine.hub.finished(job.id, || finished);
                        }
                    }
                }
            }
        }
        Err(e) => shared.report("recovering expired leases", &e),
    }
    if let Some(ttl) = config.result_ttl {
        if let Err(e) = storage.purge_finished(now_micros().saturating_sub(micros(ttl))) {
            shared.report("purging expired results", &e);
        }
    }
}
