//! A worker: one dispatcher thread claims jobs in batches and hands them to
//! executor threads through a channel (`dispatch`); executors run them
//! through the [`Runner`] (`execute`); one writer thread commits many
//! outcomes per transaction (`commit`); a maintenance thread renews leases,
//! enforces timeouts, recovers jobs of dead workers and purges expired
//! results (`maintain`). Attempts the runner defers (coroutines) leave the
//! executors and report back through a handle (`deferred`). This module
//! holds what they share, and starts and stops them.

mod commit;
mod deferred;
mod dispatch;
mod execute;
mod held;
mod lease;
mod maintain;
mod registry;
mod schedule;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex, RwLock};

use super::{Engine, Event, EventSink, LocalWorker, Runner};
use crate::error::{Error, Result};
use crate::job::{AttemptRef, ClaimedJob, JobOptions};
use crate::storage::Storage;
use commit::WriterMsg;
pub use deferred::Deferred;
pub use schedule::Declared;

#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Executor threads: how many jobs run at once.
    pub concurrency: usize,
    /// Deferred attempts (coroutines on an event loop) in flight at most,
    /// beside the executors' jobs. See `deferred`.
    pub async_concurrency: usize,
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
    /// Completed, cancelled and expired jobs are deleted this long after finishing.
    pub result_ttl: Option<Duration>,
    /// Jobs held beyond the idle executors; `None`: about 5 ms of work at
    /// the measured rate (none for slow jobs). See `dispatch`.
    pub prefetch: Option<usize>,
    /// The task names this worker can run; `None`: any (claims do not
    /// filter by task).
    pub tasks: Option<Vec<String>>,
    /// A ready job whose task no worker has ever registered is dead-lettered
    /// this long after it was enqueued; `None`: it waits for ever.
    pub unknown_task_grace: Option<Duration>,
    /// Also report each success and claim (a per-job cost: only when the
    /// operator asked for debug logs).
    pub debug_events: bool,
    /// Its periodic schedules and rate limits (see `schedule`).
    pub declared: Declared,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: std::thread::available_parallelism().map_or(1, |n| n.get()),
            async_concurrency: 100,
            queues: None,
            lease: Duration::from_secs(10),
            heartbeat: Duration::from_secs(2),
            idle_poll_min: Duration::from_millis(1),
            idle_poll_max: Duration::from_millis(50),
            jobs_per_run: 32,
            result_ttl: None,
            prefetch: None,
            tasks: None,
            unknown_task_grace: None,
            debug_events: false,
            declared: Declared::default(),
        }
    }
}

/// The shortest lease a worker accepts.
pub const MIN_LEASE: Duration = Duration::from_secs(1);

impl WorkerConfig {
    pub fn validate(&self) -> Result<()> {
        if self.concurrency == 0 {
            return Err(Error::invalid(
                "a worker needs at least one executor thread",
            ));
        }
        if self.async_concurrency == 0 {
            return Err(Error::invalid("async_concurrency must be at least 1"));
        }
        // A lease must outlast pauses of a live worker (a collection, a slow
        // commit), and be renewed several times over, or another worker
        // takes over jobs that are still running and runs them twice.
        if self.lease < MIN_LEASE {
            return Err(Error::invalid(format!(
                "lease_duration must be at least {MIN_LEASE:?}, got {:?}",
                self.lease
            )));
        }
        if self.heartbeat.is_zero() || self.heartbeat * 3 > self.lease {
            return Err(Error::invalid(format!(
                "heartbeat_interval ({:?}) must be above 0 and at most a third of the lease_duration ({:?})",
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

/// A job this worker holds a lease on (claimed, outcome not yet committed).
struct Held {
    job: AttemptRef,
    task: String,
    /// Until when its lease surely holds (see `lease`).
    lease_until: Instant,
    started: Option<Instant>,
    timeout: Option<Duration>,
    timed_out: bool,
    /// Running as a deferred attempt (a coroutine), off the executors.
    deferred: bool,
    /// The runner was told that its cancellation was requested.
    cancel_sent: bool,
}

struct Shared {
    engine: Arc<Engine>,
    runner: Arc<dyn Runner>,
    events: Arc<dyn EventSink>,
    config: WorkerConfig,
    id: String,
    stopping: AtomicBool,
    /// A stop under way should not wait for running tasks (see `hurry`).
    hurried: AtomicBool,
    /// Why the worker stopped on its own, if it did.
    fatal: Mutex<Option<String>>,
    /// Claimed jobs not yet finished by an executor.
    inflight: AtomicUsize,
    /// Deferred attempts whose outcome has not come back.
    deferred: AtomicUsize,
    finished_attempts: AtomicU64,
    /// The dispatcher wants a wake-up once `inflight` falls to `refill_at`.
    starved: AtomicBool,
    refill_at: AtomicUsize,
    /// ... or once executors' and deferred jobs together fall to this many.
    async_refill_at: AtomicUsize,
    held: Mutex<HashMap<i64, Held>>,
    /// The task names it can run (they grow as tasks are registered).
    tasks: RwLock<Option<Arc<Vec<String>>>>,
    /// Jobs drained from the channel after stop began: never started.
    unstarted: Mutex<Vec<AttemptRef>>,
    /// Its rate limits, which its claims apply (see `schedule`).
    limits: RwLock<Arc<schedule::Limits>>,
    /// The names of its periodic schedules, and when its maintenance looks
    /// at them next (microseconds, this process's clock).
    periodic: RwLock<Arc<Vec<String>>>,
    next_periodic_look: AtomicI64,
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

    /// The task names this worker can claim jobs of (`None`: any).
    fn tasks(&self) -> Option<Arc<Vec<String>>> {
        self.tasks.read().clone()
    }
}

impl LocalWorker for Shared {
    fn idle_claim(&self, options: &JobOptions) -> Option<(String, Duration)> {
        let serves = self
            .config
            .queues
            .as_ref()
            .is_none_or(|q| q.contains(&options.queue))
            && self.tasks().is_none_or(|t| t.contains(&options.task_name))
            // A rate-limited job needs a token: only a claim can give it one.
            && !self.limits().all.limits(&options.task_name, &options.queue);
        let direct = self.direct.lock();
        let inflight = self.inflight.load(Ordering::SeqCst);
        let idle = direct.as_ref().is_some_and(|jobs| jobs.is_empty())
            && inflight < self.config.concurrency
            && inflight + self.deferred.load(Ordering::SeqCst)
                < self.config.concurrency + self.config.async_concurrency;
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
                self.engine.announce_work();
            }
        }
    }

    fn cancel_requested(&self, id: i64) {
        self.cancel_deferred(id);
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
            hurried: AtomicBool::new(false),
            fatal: Mutex::new(None),
            inflight: AtomicUsize::new(0),
            deferred: AtomicUsize::new(0),
            finished_attempts: AtomicU64::new(0),
            starved: AtomicBool::new(false),
            refill_at: AtomicUsize::new(config.concurrency),
            async_refill_at: AtomicUsize::new(0),
            held: Mutex::new(HashMap::new()),
            tasks: RwLock::new(config.tasks.clone().map(Arc::new)),
            unstarted: Mutex::new(Vec::new()),
            limits: RwLock::new(Arc::default()),
            periodic: RwLock::new(Arc::default()),
            next_periodic_look: AtomicI64::new(i64::MIN),
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
        // In the registry before it claims anything, so that its jobs'
        // tasks are never counted as served by no one.
        shared.register()?;
        shared.declare(&shared.config.declared)?;
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
                Box::new(move || execute::executor(s, rx)),
            )?);
        }
        let s = shared.clone();
        let writer = spawn(
            "taskito-writer".into(),
            Box::new(move || commit::writer(s, outcomes_rx)),
        )?;
        let s = shared.clone();
        let maintenance = spawn(
            "taskito-maint".into(),
            Box::new(move || maintain::maintenance(s)),
        )?;
        // The dispatcher goes last: nothing is claimed before all the threads
        // that finish claimed jobs exist.
        let s = shared.clone();
        let dispatcher = spawn(
            "taskito-dispatch".into(),
            Box::new(move || dispatch::dispatcher(s, jobs_tx, jobs_rx)),
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

    /// Cuts short a stop under way (or the next one): it stops waiting for
    /// running tasks, hands their jobs back to the queue with their attempt
    /// not counted, and interrupts them. A second Ctrl-C.
    pub fn hurry(&self) {
        self.shared.hurried.store(true, Ordering::Release);
        self.request_stop();
        let _live = self.shared.live_executors.lock();
        self.shared.executor_exited.notify_all();
    }

    /// Why the worker stopped on its own, if it did (its database file was
    /// deleted or replaced, say).
    pub fn fatal(&self) -> Option<String> {
        self.shared.fatal.lock().clone()
    }

    /// Asks the worker to stop without waiting: nothing new is claimed.
    pub fn request_stop(&self) {
        self.shared.stopping.store(true, Ordering::Release);
        self.shared.engine.hub.notify_work();
        // An idle dispatcher sleeps on the work beacon. Waking it wakes the
        // idle workers of other processes too; they look and sleep again.
        self.shared.storage().wakeups().work().bump();
    }

    /// Stops the worker: claims nothing new at once, lets running jobs (and
    /// deferred attempts) finish within `grace`, hands every other held job
    /// back to the queue, commits the outcomes it has, and joins its threads.
    /// An executor still inside a task after `grace` is left behind, and a
    /// deferred attempt still running is interrupted (their jobs are
    /// released, and late outcomes fenced out). Returns how many tasks were
    /// left running.
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
        let (live_executors, deferred) = {
            let mut live = shared.live_executors.lock();
            // Deferred attempts notify `executor_exited` too as they finish
            // while the worker stops.
            while (*live > 0 || shared.deferred.load(Ordering::SeqCst) > 0)
                && !shared.hurried.load(Ordering::Acquire)
            {
                if shared
                    .executor_exited
                    .wait_until(&mut live, deadline)
                    .timed_out()
                {
                    break;
                }
            }
            (*live, shared.deferred.load(Ordering::SeqCst))
        };
        let left_behind = live_executors + deferred;
        let unstarted = std::mem::take(&mut *shared.unstarted.lock());
        if let Err(e) = shared.storage().release(&unstarted, true) {
            shared.report("releasing unstarted jobs", &e);
        }
        if !unstarted.is_empty() {
            shared.engine.announce_work();
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
            // Hurried, the running ones go back as if they had not started:
            // the operator stopped them, their task did not fail.
            let hurried = shared.hurried.load(Ordering::Acquire);
            for (jobs, refund) in [(&running, hurried), (&never_started, true)] {
                if let Err(e) = shared.storage().release(jobs, refund) {
                    shared.report("releasing abandoned jobs", &e);
                }
            }
            shared.engine.announce_work();
            // Their jobs belong to the queue again; free the threads if the
            // tasks let themselves be interrupted.
            for job in &running {
                shared.runner.interrupt(job);
            }
        }
        if live_executors == 0 {
            for handle in threads.executors {
                let _ = handle.join();
            }
        }
        *shared.maintenance_stop.lock() = true;
        shared.maintenance_wake.notify_all();
        let _ = threads.maintenance.join();
        shared.unregister();
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

    /// Jobs claimed by this worker and not yet finished by an executor.
    pub fn inflight(&self) -> usize {
        self.shared.inflight.load(Ordering::SeqCst)
    }

    /// Deferred attempts whose outcome has not come back.
    pub fn deferred(&self) -> usize {
        self.shared.deferred.load(Ordering::SeqCst)
    }
}

fn worker_id() -> String {
    format!(
        "{}:{}:{:04x}",
        registry::hostname(),
        std::process::id(),
        fastrand::u16(..)
    )
}
