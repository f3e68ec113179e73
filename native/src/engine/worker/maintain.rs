//! The maintenance thread: renews leases, enforces timeouts, stores the due
//! ticks of periodic schedules, recovers the jobs of dead workers, purges
//! expired results and checkpoints the log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::commit::WriterMsg;
use super::deferred::CANCEL_LOOK_EVERY;
use super::Shared;
use crate::engine::Event;
use crate::job::{now_micros, Applied, AttemptRef, Failure, Outcome, OutcomeKind};

/// How often the maintenance thread checkpoints the write-ahead log.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
/// How often an idle worker looks for jobs whose task no worker ever had,
/// or whose task name cannot be read (more often when the grace period is
/// shorter).
const UNKNOWN_TASKS_EVERY: Duration = Duration::from_secs(1);

/// The maintenance thread's loop, until `maintenance_stop` is set.
pub(super) fn maintenance(shared: Arc<Shared>) {
    let config = &shared.config;
    let tick = config.heartbeat.min(Duration::from_millis(50));
    let mut last_heartbeat = Instant::now();
    let mut last_checkpoint = Instant::now();
    let mut last_unknown_check = Instant::now();
    let mut last_cancel_look = Instant::now();
    let unknown_every = config
        .unknown_task_grace
        .map_or(UNKNOWN_TASKS_EVERY, |grace| {
            (grace / 2).min(UNKNOWN_TASKS_EVERY)
        });
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
        shared.fire_periodic_if_due();
        if last_cancel_look.elapsed() >= CANCEL_LOOK_EVERY {
            last_cancel_look = Instant::now();
            shared.look_for_cancel_requests();
        }
        if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
            last_checkpoint = Instant::now();
            if let Err(e) = shared.storage().checkpoint() {
                shared.report("checkpointing the log", &e);
            }
        }
        if last_unknown_check.elapsed() >= unknown_every {
            last_unknown_check = Instant::now();
            shared.fail_unknown_tasks();
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
        // Reported before the writer can report the failed attempt it leads to.
        shared.events.event(Event::TimedOut {
            id: job.id,
            attempt: job.attempt,
        });
        let _ = shared.outcomes.send(WriterMsg::Outcome(Outcome {
            job,
            started_at: None,
            finished_at: now_micros(),
            kind: OutcomeKind::Failure(failure),
        }));
        shared.runner.interrupt(&job);
    }
}

fn heartbeat(shared: &Shared) {
    let config = &shared.config;
    let storage = shared.storage();
    if let Err(e) = storage.check_still_there() {
        // Serving a database no one else opens would lose every job: stop.
        let message = e.to_string();
        shared.events.event(Event::Stopped {
            reason: message.clone(),
        });
        *shared.fatal.lock() = Some(message);
        shared
            .stopping
            .store(true, std::sync::atomic::Ordering::Release);
        shared.engine.hub.notify_work();
        storage.wakeups().work().bump();
        return;
    }
    shared.renew_registration();
    quarantine_unreadable(shared);
    // Jobs past their expiry end expired even while the dispatcher is too
    // busy to look (it promotes and expires only when it has room). What
    // this promotes, the dispatcher finds when it falls due by its own clock.
    if let Err(e) = storage.promote_due() {
        shared.report("expiring jobs", &e);
    }
    // Progress reported since the last beat, in one write.
    if let Err(e) = shared.engine.write_progress(None) {
        shared.report("recording progress", &e);
    }
    let held: Vec<AttemptRef> = shared.held.lock().values().map(|h| h.job).collect();
    if !held.is_empty() {
        let asked = Instant::now();
        match storage.renew_leases(&held, config.lease) {
            Ok(_) => shared.leases_renewed(&held, asked),
            Err(e) => shared.report("renewing leases", &e),
        }
    }
    match storage.reap_expired() {
        Ok(reaped) => {
            for job in reaped {
                let dead = job.applied == Applied::Dead;
                shared
                    .events
                    .event(Event::LeaseExpired { id: job.id, dead });
                match job.applied {
                    Applied::Retry(at) => shared.engine.announce_due(at),
                    // Final (dead, or cancelled on request): wake its waiters.
                    _ => {
                        if let Ok(Some(finished)) = storage.finished(job.id) {
                            shared.engine.hub.finished(job.id, || finished);
                        }
                        storage.wakeups().finished([job.id]);
                    }
                }
            }
        }
        Err(e) => shared.report("recovering expired leases", &e),
    }
    if let Some(ttl) = config.result_ttl {
        if let Err(e) = storage.purge_finished(ttl) {
            shared.report("purging expired results", &e);
        }
    }
}

/// Reports jobs whose rows could not be read (quarantined by claims, or
/// found with a status that is no state), and wakes their waiters.
fn quarantine_unreadable(shared: &Shared) {
    let storage = shared.storage();
    match storage.quarantine_unreadable() {
        Ok(found) if !found.is_empty() => {
            for job in &found {
                if let Ok(Some(finished)) = storage.finished(job.id) {
                    shared.engine.hub.finished(job.id, || finished);
                }
                shared.events.event(Event::Quarantined {
                    id: job.id,
                    problem: job.problem.clone(),
                });
            }
            storage.wakeups().finished(found.iter().map(|job| job.id));
        }
        Ok(_) => {}
        Err(e) => shared.report("quarantining unreadable jobs", &e),
    }
}
