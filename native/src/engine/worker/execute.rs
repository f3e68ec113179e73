//! The executor threads: each runs the jobs it receives through the
//! [`Runner`](crate::engine::Runner) and hands their outcomes on to be
//! committed.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::{Receiver, TryRecvError};

use super::commit::commit;
use super::Shared;
use crate::job::{ClaimedJob, Outcome};

/// Decrements the live-executor count however the executor exits.
struct ExecutorExit<'a>(&'a Shared);

impl Drop for ExecutorExit<'_> {
    fn drop(&mut self) {
        *self.0.live_executors.lock() -= 1;
        self.0.executor_exited.notify_all();
    }
}

/// An executor thread's loop: runs jobs until the channel closes; jobs
/// received once the worker is stopping are set aside, never started.
pub(super) fn executor(shared: Arc<Shared>, jobs: Receiver<ClaimedJob>) {
    let _exit = ExecutorExit(&shared);
    let limit = shared.config.jobs_per_run;
    while let Ok(first) = jobs.recv() {
        if shared.stopping() {
            shared.unstarted.lock().push(first.attempt_ref());
            shared.inflight.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        if !shared.lease_holds(&first) {
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
        let mut next = || loop {
            if taken >= limit || shared.stopping() {
                return None;
            }
            match jobs.try_recv() {
                Ok(job) if !shared.lease_holds(&job) => continue,
                Ok(job) => {
                    if let Some(outcome) = held_back.borrow_mut().take() {
                        shared.send_to_writer(outcome);
                    }
                    taken += 1;
                    shared.mark_started(&job);
                    in_hand.borrow_mut().push(job.attempt_ref());
                    return Some(job);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return None,
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
        // A deferred job's outcome comes back through its handle, from
        // whichever thread finishes it; the executor is free at once.
        let mut defer = |job: &ClaimedJob| {
            in_hand
                .borrow_mut()
                .retain(|held| *held != job.attempt_ref());
            shared.defer(job)
        };
        let run = catch_unwind(AssertUnwindSafe(|| {
            shared.runner.run(first, &mut next, &mut done, &mut defer)
        }));
        if let Some(outcome) = held_back.into_inner() {
            commit(&shared, &mut vec![outcome], false);
        }
        if run.is_err() {
            shared.abandon(&in_hand.into_inner());
        }
    }
}
