//! The writer thread: commits many outcomes per transaction, then wakes the
//! waiters of the jobs that reached a final state.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;

use super::held::forget;
use super::Shared;
use crate::engine::{AfterFailure, Event};
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
    // The last progress a task reported is stored before its outcome.
    if shared.engine.has_progress() {
        let ids: Vec<i64> = batch.iter().map(|o| o.job.id).collect();
        if let Err(e) = shared.engine.write_progress(Some(&ids)) {
            shared.report("recording progress", &e);
        }
    }
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
    let tasks: Vec<Option<String>> = {
        let mut held = shared.held.lock();
        batch
            .iter()
            .map(|outcome| forget(&mut held, &outcome.job).map(|h| h.task))
            .collect()
    };
    let mut finished_ids = Vec::new();
    for ((outcome, applied), task) in batch.drain(..).zip(applied).zip(tasks) {
        let id = outcome.job.id;
        report(shared, &outcome, &applied, task);
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

/// Tells the operator what became of a failed attempt (and, with debug
/// events, of a successful one).
fn report(shared: &Shared, outcome: &Outcome, applied: &Applied, task: Option<String>) {
    let task = task.unwrap_or_else(|| "?".to_string());
    let job = &outcome.job;
    match (&outcome.kind, applied) {
        (OutcomeKind::Failure(failure), applied) => {
            let next = match applied {
                Applied::Retry(at) => {
                    let wait = at.saturating_sub(outcome.finished_at).max(0);
                    AfterFailure::Retry(Duration::from_micros(wait as u64))
                }
                Applied::Dead => AfterFailure::Dead,
                Applied::Cancelled => AfterFailure::Cancelled,
                // Discarded (reported as stale) or impossible.
                Applied::Complete | Applied::Stale => return,
            };
            shared.events.event(Event::AttemptFailed {
                id: job.id,
                task,
                attempt: job.attempt,
                max_retries: job.max_retries,
                error_type: failure.error_type.clone(),
                message: failure.message.clone(),
                traceback: failure.traceback.clone(),
                next,
            });
        }
        (OutcomeKind::Success(_), Applied::Complete) if shared.config.debug_events => {
            let started = outcome.started_at.unwrap_or(outcome.finished_at);
            shared.events.event(Event::Succeeded {
                id: job.id,
                task,
                attempt: job.attempt,
                seconds: (outcome.finished_at - started).max(0) as f64 / 1e6,
            });
        }
        _ => {}
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
