//! The writer thread: commits many outcomes per transaction, then wakes the
//! waiters of the jobs that reached a final state.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;

use super::Shared;
use crate::engine::Event;
use crate::job::{Applied, ErrorRecord, Failure, Finished, Micros, Outcome, OutcomeKind, State};

/// Most outcomes committed in one transaction.
const MAX_COMPLETE: usize = 1024;

/// What executors and the maintenance thread send the writer.
pub(super) enum WriterMsg {
    Outcome(Outcome),
    /// Commit what is queued, then exit.
    Stop,
}

/// The writer thread's loop: batches what is queued and commits it, until
/// told to stop (after committing the rest).
pub(super) fn writer(shared: Arc<Shared>, outcomes: Receiver<WriterMsg>) {
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

/// Records `batch` in one transaction, retrying while storage fails (at
/// most five times once `stopping`), then wakes waiters and the dispatcher.
pub(super) fn commit(shared: &Shared, batch: &mut Vec<Outcome>, stopping: bool) {
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
    let mut finished_ids = Vec::new();
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
            Applied::Retry(at) => shared.engine.announce_due(at),
            Applied::Stale => shared.events.event(Event::StaleOutcome {
                id,
                attempt: outcome.job.attempt,
            }),
        }
        if matches!(
            applied,
            Applied::Complete | Applied::Dead | Applied::Cancelled
        ) {
            finished_ids.push(id);
        }
    }
    // After the hand-offs above: a waiter in this process woken by its
    // beacon finds its outcome already in the hub.
    if !finished_ids.is_empty() {
        shared.storage().wakeups().finished(finished_ids);
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
