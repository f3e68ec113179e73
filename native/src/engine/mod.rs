//! The queue engine: storage, the wake-ups that tell producers, workers and
//! result waiters (in this process and others) that something changed, and
//! the worker that claims, runs and completes jobs. Knows nothing of Python:
//! task code runs behind the [`Runner`] trait.

mod hub;
mod relay;
mod worker;

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub use hub::{Hub, Watch};
pub use worker::{Declared, Deferred, Worker, WorkerConfig};

use crate::error::{Error, Result};
use crate::job::{
    format_id, micros, now_micros, AttemptRef, ClaimedJob, Finished, GraphNode, JobOptions, Micros,
    Outcome, State,
};
use crate::storage::{CancelRequest, DirectClaim, Storage};
use relay::Relay;

/// Runs task code. Implemented by the Python bindings, and by plain Rust
/// closures in the engine's tests.
pub trait Runner: Send + Sync + 'static {
    /// Runs `first`, reports it through `done`, then keeps going with jobs
    /// from `next` until it returns `None`. Lets an implementation pay a
    /// fixed cost (taking Python's GIL) once for several short jobs.
    ///
    /// A job whose work goes on elsewhere (a coroutine handed to an event
    /// loop) is not reported through `done`: `defer` takes it off the
    /// executors' count and returns the [`Deferred`] handle its outcome is
    /// reported through later, from any thread.
    fn run(
        &self,
        first: ClaimedJob,
        next: &mut dyn FnMut() -> Option<ClaimedJob>,
        done: &mut dyn FnMut(Outcome),
        defer: &mut dyn FnMut(&ClaimedJob) -> Deferred,
    );

    /// Asks the task running this attempt to stop: it ran past its timeout,
    /// or the worker is shutting down and its grace period is over. The
    /// engine has already disposed of the attempt (failed or released it):
    /// best effort, and its outcome is fenced out either way. Called from
    /// the worker's own threads: must not block.
    fn interrupt(&self, _job: &AttemptRef) {}

    /// The attempt's cancellation was requested (`request_cancel`): a task
    /// that can be stopped from outside (a deferred attempt: a coroutine) is
    /// stopped, and reports `OutcomeKind::Cancelled`. Only deferred attempts
    /// are told; other tasks see the request when they ask storage. Called
    /// from the worker's own threads or a producer's: must not block.
    fn cancel(&self, _job: &AttemptRef) {}
}

/// What became of a job after a failed attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum AfterFailure {
    /// It runs again after this long.
    Retry(Duration),
    /// Out of attempts, or not retryable: in the dead letters.
    Dead,
    /// Its cancellation had been requested: it ended cancelled.
    Cancelled,
}

/// Things worth telling an operator about. The bindings log them.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// An attempt failed (one event per failed attempt).
    AttemptFailed {
        id: i64,
        task: String,
        attempt: u32,
        max_retries: u32,
        error_type: String,
        message: String,
        traceback: String,
        next: AfterFailure,
    },
    /// An attempt succeeded; only with `WorkerConfig::debug_events`.
    Succeeded {
        id: i64,
        task: String,
        attempt: u32,
        seconds: f64,
    },
    /// The worker claimed jobs; only with `WorkerConfig::debug_events`.
    Claimed { running: usize, held: usize },
    /// A late outcome was discarded: the attempt had lost its lease, timed out
    /// or been cancelled, and the job belongs to someone else now.
    StaleOutcome { id: i64, attempt: u32 },
    /// A running job's lease expired; it was retried or dead-lettered.
    LeaseExpired { id: i64, dead: bool },
    /// A job ran past its timeout and was failed.
    TimedOut { id: i64, attempt: u32 },
    /// A job waited `waited` for a task no worker ever registered and was
    /// dead-lettered.
    UnknownTask {
        id: i64,
        task_name: String,
        waited: Duration,
    },
    /// A job's row could not be read (another program wrote it badly): it
    /// was dead-lettered so that it never stalls the jobs around it.
    Quarantined { id: i64, problem: String },
    /// The worker stopped on its own, for this reason.
    Stopped { reason: String },
    /// The runner panicked (a bug); the jobs it held were handed back.
    RunnerPanicked { jobs: usize },
    /// Storage failed; the operation will be retried.
    StorageError {
        during: &'static str,
        message: String,
    },
}

pub trait EventSink: Send + Sync + 'static {
    /// Called from the worker's own threads (renewing leases, committing):
    /// must not block.
    fn event(&self, event: Event);
}

/// A worker running in this process, as `Engine::enqueue` sees it.
trait LocalWorker: Send + Sync {
    /// Who a lone job should be claimed by as it is enqueued: this worker's
    /// id and lease, if it serves the job's queue, has its task, and an
    /// executor is idle.
    fn idle_claim(&self, options: &JobOptions) -> Option<(String, Duration)>;

    /// Takes a job that was enqueued already claimed for this worker.
    fn accept(&self, job: ClaimedJob);

    /// A running job's cancellation was requested in this process: if this
    /// worker runs it as a deferred attempt, stop it now, rather than at the
    /// next look the maintenance thread takes.
    fn cancel_requested(&self, id: i64);
}

/// The state one `Queue` shares between its producers and its worker.
pub struct Engine {
    pub storage: Arc<dyn Storage>,
    pub hub: Arc<Hub>,
    local_worker: Mutex<Option<Weak<dyn LocalWorker>>>,
    relay: Relay,
    closed: std::sync::atomic::AtomicBool,
    /// The latest progress each running task of this process reported, not
    /// yet written: the worker writes them with the job's outcome, or with
    /// its next lease renewal, never one commit per report.
    progress: Mutex<std::collections::HashMap<i64, u8>>,
    /// Whether `progress` holds anything: the commit path checks this alone.
    progress_pending: std::sync::atomic::AtomicBool,
}

impl Engine {
    pub fn new(storage: Arc<dyn Storage>) -> Arc<Engine> {
        let hub = Hub::new();
        Arc::new(Engine {
            relay: Relay::new(hub.clone(), storage.clone()),
            storage,
            hub,
            local_worker: Mutex::new(None),
            closed: std::sync::atomic::AtomicBool::new(false),
            progress: Mutex::new(std::collections::HashMap::new()),
            progress_pending: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Stores a graph of jobs (`Storage::enqueue_graph`) and wakes idle
    /// workers: those it made ready now, and those that fall due later.
    pub fn enqueue_graph(&self, nodes: &[GraphNode]) -> Result<Vec<i64>> {
        let ids = self.storage.enqueue_graph(nodes)?;
        self.announce_work();
        let soonest_delay = nodes
            .iter()
            .filter_map(|n| n.options.delay)
            .filter(|d| !d.is_zero())
            .min();
        if let Some(delay) = soonest_delay {
            self.announce_due(now_micros().saturating_add(micros(delay)));
        }
        Ok(ids)
    }

    /// A running task reports its progress (0 to 100). Kept in memory: the
    /// worker writes the latest value per job in batches.
    pub fn report_progress(&self, id: i64, value: u8) {
        self.progress.lock().insert(id, value);
        self.progress_pending
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether any reported progress is unwritten: one load, for the commit
    /// path.
    pub(crate) fn has_progress(&self) -> bool {
        self.progress_pending
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Takes the unwritten progress of these jobs (`None`: of every job).
    pub(crate) fn take_progress(&self, ids: Option<&[i64]>) -> Vec<(i64, u8)> {
        if !self
            .progress_pending
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Vec::new();
        }
        let mut progress = self.progress.lock();
        let taken: Vec<(i64, u8)> = match ids {
            None => progress.drain().collect(),
            Some(ids) => ids
                .iter()
                .filter_map(|id| progress.remove(id).map(|v| (*id, v)))
                .collect(),
        };
        if progress.is_empty() {
            self.progress_pending
                .store(false, std::sync::atomic::Ordering::Release);
        }
        taken
    }

    /// Writes the unwritten progress of these jobs (`None`: of every job).
    /// On failure the values go back, to be written with the next batch.
    pub(crate) fn write_progress(&self, ids: Option<&[i64]>) -> Result<()> {
        let taken = self.take_progress(ids);
        if taken.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.storage.record_progress(&taken) {
            let mut progress = self.progress.lock();
            for (id, value) in taken {
                progress.entry(id).or_insert(value);
            }
            self.progress_pending
                .store(true, std::sync::atomic::Ordering::Release);
            return Err(e);
        }
        Ok(())
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Acquire)
    }

    fn closed_error(id: i64) -> Error {
        Error::Closed(format!(
            "the queue was closed while waiting for job {}",
            format_id(id)
        ))
    }

    /// Stores jobs. A lone job enqueued next to an idle worker of this
    /// process goes straight to that worker, claimed in the same transaction
    /// that stores it: no dispatcher wake-up, no separate claim.
    pub fn enqueue(&self, options: &JobOptions, payloads: &[Vec<u8>]) -> Result<Vec<i64>> {
        if let [payload] = payloads {
            let local = self.local_worker.lock().as_ref().and_then(Weak::upgrade);
            if let Some(worker) = local {
                if let Some((worker_id, lease)) = worker.idle_claim(options) {
                    let claim = DirectClaim {
                        worker_id: &worker_id,
                        lease,
                    };
                    let (id, claimed) = self.storage.enqueue_claimed(options, payload, &claim)?;
                    match claimed {
                        Some(job) => worker.accept(job),
                        None => self.announce(options),
                    }
                    return Ok(vec![id]);
                }
            }
        }
        let ids = self.storage.enqueue(options, payloads)?;
        self.announce(options);
        Ok(ids)
    }

    /// Unregisters `worker` as this process's worker (if it still is).
    fn forget_local_worker(&self, worker: &dyn LocalWorker) {
        let mut local = self.local_worker.lock();
        let is_it = local
            .as_ref()
            .is_some_and(|w| std::ptr::addr_eq(w.as_ptr(), worker as *const dyn LocalWorker));
        if is_it {
            *local = None;
        }
    }

    /// Tells idle workers, here and in other processes, about newly stored
    /// jobs: at once if they are due, else when they fall due.
    fn announce(&self, options: &JobOptions) {
        match options.delay {
            Some(delay) if !delay.is_zero() => {
                self.announce_due(now_micros().saturating_add(micros(delay)))
            }
            _ => self.announce_work(),
        }
    }

    /// Claimable jobs were committed: wake idle workers.
    pub(crate) fn announce_work(&self) {
        self.storage.wakeups().work().notify();
    }

    /// A delayed job or a retry falls due at `at`: idle workers that would
    /// sleep past it look again.
    pub(crate) fn announce_due(&self, at: Micros) {
        let wakeups = self.storage.wakeups();
        if wakeups.announce_due(at) {
            wakeups.work().notify();
        }
    }

    /// Cancels a job that has not started; wakes anyone waiting on it.
    pub fn cancel(&self, id: i64) -> Result<bool> {
        let cancelled = self.storage.cancel(id)?;
        if cancelled {
            self.cancelled(id);
        }
        Ok(cancelled)
    }

    /// Cancels a job that has not started, or asks a running one to stop.
    pub fn request_cancel(&self, id: i64) -> Result<CancelRequest> {
        let request = self.storage.request_cancel(id)?;
        match request {
            CancelRequest::Cancelled => self.cancelled(id),
            CancelRequest::Requested => {
                let local = self.local_worker.lock().as_ref().and_then(Weak::upgrade);
                if let Some(worker) = local {
                    worker.cancel_requested(id);
                }
            }
            CancelRequest::AlreadyFinal | CancelRequest::NotFound => {}
        }
        Ok(request)
    }

    fn cancelled(&self, id: i64) {
        self.hub.finished(id, || Finished {
            state: State::Cancelled,
            result: None,
            error: None,
        });
        self.storage.wakeups().finished([id]);
    }

    /// Puts a dead job back in the queue; wakes idle workers.
    pub fn retry_dead(&self, id: i64) -> Result<bool> {
        let revived = self.storage.retry_dead(id)?;
        if revived {
            // Waiters registered before must not be handed the old death.
            self.hub.forget_finished(id);
            self.announce_work();
        }
        Ok(revived)
    }

    /// Waits for `id` to reach a final state. The waiter sleeps on its job's
    /// beacon: a completion committed by any process that shares the
    /// database's wake-ups wakes it at once (one in this process also hands
    /// it the outcome). Storage is read on each wake and, as a safety net
    /// for wake-ups that cannot arrive, every `poll`, doubling up to
    /// `max_poll`.
    pub fn wait(
        &self,
        id: i64,
        timeout: Duration,
        poll: Duration,
        max_poll: Duration,
    ) -> Result<Finished> {
        let deadline = Instant::now() + timeout;
        let watch = self.hub.watch(id, false);
        let beacon = self.storage.wakeups().done_for(id);
        let _listening = beacon.listen();
        let mut interval = poll.max(Duration::from_micros(100));
        loop {
            let seen = beacon.seq();
            if let Some(finished) = watch.get() {
                return Ok(finished);
            }
            if self.is_closed() {
                return Err(Engine::closed_error(id));
            }
            if let Some(finished) = self.storage.finished(id)? {
                return Ok(finished);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout(format_id(id), timeout.as_secs_f64()));
            }
            if !beacon.wait(seen, interval.min(deadline - now)) {
                interval = (interval * 2).min(max_poll.max(interval));
            }
        }
    }

    /// Registers a waiter that cannot sleep on its job's beacon (an event
    /// loop): the results relay hands it completions committed by other
    /// processes, through the watch's signal pipe.
    pub fn watch_relayed(&self, id: i64) -> Result<Watch> {
        self.relay.ensure_running()?;
        Ok(self.hub.watch(id, true))
    }

    /// Closes the engine: waiters in this process are woken and raise that
    /// the queue was closed, and its own threads (the results relay) stop.
    /// Workers are stopped by their owner before.
    pub fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        self.relay.stop();
        let wakeups = self.storage.wakeups();
        for id in self.hub.wake_all_watchers() {
            wakeups.done_for(id).bump();
        }
    }

    /// What a relayed watcher (an event loop) finds when it looks: the
    /// outcome if this process was handed it, an error once the queue is
    /// closed, else nothing yet.
    pub fn peek(&self, watch: &Watch, id: i64) -> Result<Option<Finished>> {
        match watch.get() {
            Some(finished) => Ok(Some(finished)),
            None if self.is_closed() => Err(Engine::closed_error(id)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests;
