//! What a worker holds: jobs it has claimed and not yet finished, with the
//! lease each holds, whether it has started, and its timeout. The counts the
//! dispatcher sizes its claims by (`inflight`) change here and nowhere else.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::commit::WriterMsg;
use super::{Held, Shared};
use crate::engine::Event;
use crate::error::Result;
use crate::job::{AttemptRef, ClaimedJob, Outcome};

impl Shared {
    /// Records freshly claimed jobs as held by this worker; those marked
    /// running count against its executors.
    pub(super) fn hold(&self, jobs: &[ClaimedJob]) {
        let running = jobs.iter().filter(|job| job.running).count();
        self.inflight.fetch_add(running, Ordering::SeqCst);
        // Counted from now, though the claim began earlier: the margin in
        // `lease::holds_until` covers the difference.
        let lease_until = super::lease::holds_until(Instant::now(), self.config.lease);
        let mut held = self.held.lock();
        for job in jobs {
            held.insert(
                job.id,
                Held {
                    job: job.attempt_ref(),
                    task: job.task_name.clone(),
                    lease_until,
                    started: None,
                    timeout: job.timeout,
                    timed_out: false,
                    deferred: false,
                    cancel_sent: false,
                },
            );
        }
    }

    /// Starts held (claimed, not started) jobs in storage and returns those
    /// still theirs to run, marked running. The others were cancelled or
    /// taken back since they were claimed: they are forgotten, unrun.
    pub(super) fn start_held(&self, jobs: Vec<ClaimedJob>) -> Result<Vec<ClaimedJob>> {
        let refs: Vec<AttemptRef> = jobs.iter().map(ClaimedJob::attempt_ref).collect();
        let started = self.storage().start_claimed(&refs)?;
        let mut run = Vec::with_capacity(jobs.len());
        let mut held = self.held.lock();
        for (mut job, ok) in jobs.into_iter().zip(started) {
            if ok {
                job.running = true;
                run.push(job);
            } else {
                forget(&mut held, &job.attempt_ref());
            }
        }
        self.inflight.fetch_add(run.len(), Ordering::SeqCst);
        Ok(run)
    }

    /// Hands jobs this worker never started back to the queue, their attempt
    /// not counted, and tells idle workers. The caller has already taken
    /// them off the executors' count if they were on it.
    pub(super) fn release_unstarted(&self, jobs: Vec<ClaimedJob>) {
        if jobs.is_empty() {
            return;
        }
        let refs: Vec<AttemptRef> = jobs.iter().map(ClaimedJob::attempt_ref).collect();
        {
            let mut held = self.held.lock();
            for job in &refs {
                forget(&mut held, job);
            }
        }
        if let Err(e) = self.storage().release(&refs, true) {
            self.report("handing back jobs that did not start", &e);
        }
        self.engine.announce_work();
    }

    pub(super) fn mark_started(&self, job: &ClaimedJob) {
        if let Some(held) = self.held.lock().get_mut(&job.id) {
            if held.job.token == job.token {
                held.started = Some(Instant::now());
            }
        }
    }

    /// An executor finished an attempt: free its capacity, and wake the
    /// dispatcher if it was waiting for room.
    pub(super) fn attempt_finished(&self) {
        self.finished_attempts.fetch_add(1, Ordering::Relaxed);
        self.executor_freed();
    }

    /// An executor is done with a job (finished, or deferred it): free its
    /// capacity, and wake the dispatcher if it was waiting for room.
    pub(super) fn executor_freed(&self) {
        let left = self.inflight.fetch_sub(1, Ordering::SeqCst) - 1;
        if left <= self.refill_at.load(Ordering::Relaxed)
            && self.starved.swap(false, Ordering::SeqCst)
        {
            self.engine.hub.notify_work();
        }
    }

    pub(super) fn send_to_writer(&self, outcome: Outcome) {
        // The writer outlives every executor that is not abandoned; an
        // abandoned one's late outcome is fenced out anyway.
        let _ = self.outcomes.send(WriterMsg::Outcome(outcome));
    }

    /// A runner panicked (a bug) holding these attempts: hand their jobs
    /// back to the queue and free their capacity, so they run again.
    pub(super) fn abandon(&self, jobs: &[AttemptRef]) {
        {
            let mut held = self.held.lock();
            for job in jobs {
                forget(&mut held, job);
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
        self.engine.announce_work();
    }
}

/// Stops holding `job`, if this attempt of it is the one held, and returns
/// what was held.
pub(super) fn forget(
    held: &mut std::collections::HashMap<i64, Held>,
    job: &AttemptRef,
) -> Option<Held> {
    if matches!(held.get(&job.id), Some(h) if h.job.token == job.token) {
        held.remove(&job.id)
    } else {
        None
    }
}
