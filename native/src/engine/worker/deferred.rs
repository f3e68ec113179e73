//! Attempts a runner finishes later, from another thread: coroutines on the
//! worker's event loop. Deferring an attempt frees its executor at once, so
//! that the dispatcher claims more; the attempt counts against
//! `async_concurrency` instead until its outcome comes back through its
//! [`Deferred`] handle, which sends it to the writer (fenced, as every
//! outcome). The dispatcher stops claiming while the executors' jobs and the
//! deferred ones fill their room together (see `dispatch`).
//!
//! A deferred attempt is held like any other: its lease is renewed, its
//! timeout enforced, and at shutdown it gets the grace period, then is
//! released. Unlike a thread, it can be stopped from outside: the runner's
//! `interrupt` (timeout, end of the grace period) and `cancel` (a requested
//! cancellation) reach it. Cancellations requested in this process reach it
//! at once; those requested elsewhere are looked up every
//! [`CANCEL_LOOK_EVERY`] for attempts that have run at least that long.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use crate::job::{now_micros, AttemptRef, ClaimedJob, Failure, Micros, Outcome, OutcomeKind};

/// How often storage is asked whether the cancellation of a deferred attempt
/// was requested from another process, and how long an attempt runs before
/// it is asked about (shorter ones are likely done before it would matter).
pub(super) const CANCEL_LOOK_EVERY: Duration = Duration::from_millis(100);

/// A deferred attempt, whose outcome is reported once, from any thread.
/// Dropped without a report, it fails the attempt (to be retried): a runner
/// that lost its coroutine must not strand the job until its lease runs out.
pub struct Deferred {
    shared: Arc<Shared>,
    job: AttemptRef,
    started_at: Micros,
    reported: bool,
}

impl Deferred {
    pub fn job(&self) -> &AttemptRef {
        &self.job
    }

    /// The attempt really starts now (it waited for its turn on the event
    /// loop): its timeout, and its recorded start, count from here.
    pub fn started(&mut self) {
        self.started_at = now_micros();
        self.shared.restart_clock(&self.job);
    }

    /// Reports the attempt's outcome, for the writer to commit.
    pub fn finish(mut self, kind: OutcomeKind) {
        self.report(Some(kind));
    }

    /// Gives the attempt's place back without an outcome: the engine already
    /// disposed of the attempt (failed it for its timeout, or released it at
    /// shutdown) before interrupting it.
    pub fn discard(mut self) {
        self.report(None);
    }

    fn report(&mut self, kind: Option<OutcomeKind>) {
        self.reported = true;
        if let Some(kind) = kind {
            // Queued before the count goes down: a stop that sees no deferred
            // attempt left finds this outcome ahead of its own.
            self.shared.send_to_writer(Outcome {
                job: self.job,
                started_at: Some(self.started_at),
                finished_at: now_micros(),
                kind,
            });
        }
        self.shared.deferred_finished();
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        if !self.reported {
            self.report(Some(OutcomeKind::Failure(Failure {
                error_type: "RuntimeError".into(),
                message: "the attempt's coroutine ended without reporting an outcome \
                          (its event loop stopped?)"
                    .into(),
                traceback: String::new(),
                retryable: true,
            })));
        }
    }
}

impl Shared {
    /// Moves a job from the executors' count to the deferred attempts'.
    pub(super) fn defer(self: &Arc<Self>, job: &ClaimedJob) -> Deferred {
        // Counted as deferred before it leaves the executors: the dispatcher
        // never sees a moment where it is in neither count.
        self.deferred.fetch_add(1, Ordering::SeqCst);
        if let Some(held) = self.held.lock().get_mut(&job.id) {
            if held.job.token == job.token {
                held.deferred = true;
            }
        }
        self.executor_freed();
        Deferred {
            shared: self.clone(),
            job: job.attempt_ref(),
            started_at: now_micros(),
            reported: false,
        }
    }

    /// A deferred attempt reported (or was discarded): free its place, wake
    /// the dispatcher if it waited for room, and a stop waiting for it.
    fn deferred_finished(&self) {
        self.finished_attempts.fetch_add(1, Ordering::Relaxed);
        let left = self.deferred.fetch_sub(1, Ordering::SeqCst) - 1;
        let busy = left + self.inflight.load(Ordering::SeqCst);
        if busy <= self.async_refill_at.load(Ordering::Relaxed)
            && self.starved.swap(false, Ordering::SeqCst)
        {
            self.engine.hub.notify_work();
        }
        if self.stopping() {
            // Under the lock `stop` waits with, so the wake-up cannot fall
            // between its check and its wait.
            let _live = self.live_executors.lock();
            self.executor_exited.notify_all();
        }
    }

    fn restart_clock(&self, job: &AttemptRef) {
        if let Some(held) = self.held.lock().get_mut(&job.id) {
            if held.job.token == job.token {
                held.started = Some(std::time::Instant::now());
            }
        }
    }

    /// Tells the runner to stop job `id`, if this worker runs it as a
    /// deferred attempt and has not told it already.
    pub(super) fn cancel_deferred(&self, id: i64) {
        let job = {
            let mut held = self.held.lock();
            match held.get_mut(&id) {
                Some(h) if h.deferred && !h.cancel_sent && !h.timed_out => {
                    h.cancel_sent = true;
                    Some(h.job)
                }
                _ => None,
            }
        };
        if let Some(job) = job {
            self.runner.cancel(&job);
        }
    }

    /// Asks storage which deferred attempts that ran for a while had their
    /// cancellation requested (from another process), and stops them.
    pub(super) fn look_for_cancel_requests(&self) {
        if self.deferred.load(Ordering::SeqCst) == 0 {
            return;
        }
        let ids: Vec<i64> = self
            .held
            .lock()
            .values()
            .filter(|h| {
                h.deferred
                    && !h.cancel_sent
                    && !h.timed_out
                    && h.started
                        .is_some_and(|started| started.elapsed() >= CANCEL_LOOK_EVERY)
            })
            .map(|h| h.job.id)
            .collect();
        if ids.is_empty() {
            return;
        }
        match self.storage().cancel_requests(&ids) {
            Ok(requested) => {
                for id in requested {
                    self.cancel_deferred(id);
                }
            }
            Err(e) => self.report("looking for cancellation requests", &e),
        }
    }
}
