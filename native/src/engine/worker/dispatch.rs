//! The dispatcher thread: claims jobs in batches sized by the recent
//! completion rate, promotes due jobs, and sleeps while there is nothing to
//! claim.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::Shared;
use crate::engine::Hub;
use crate::job::{now_micros, ClaimedJob, Micros};
use crate::storage::ClaimRequest;
use crate::wakeup::Listening;

/// Most jobs claimed in one transaction.
const MAX_CLAIM: usize = 512;
/// How often due jobs are promoted when other processes announce theirs.
const PROMOTE_SAFETY_NET: Duration = Duration::from_secs(1);
/// Claimed-but-not-started jobs a worker keeps, as seconds of work at the
/// recent completion rate: enough to hide the claim round trip, small enough
/// that other workers and new high-priority jobs are not kept waiting.
const BUFFER_SECONDS: f64 = 0.005;
/// How often the completion rate is sampled, at the longest...
const RATE_WINDOW: Duration = Duration::from_millis(20);
/// ...and how many completions make a sample early.
const RATE_MIN_JOBS: u64 = 128;

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

/// The dispatcher thread's loop, until the worker stops: keeps the executors
/// fed without claiming far more than they can start soon.
///
/// It sleeps in two ways. Busy (its executors have enough to do), it waits
/// in this process for capacity to free up, and producers do not wake it.
/// Idle (nothing more to claim), it registers on the database's work beacon,
/// looks once more, and sleeps until a producer in any process commits work,
/// a job falls due, or the safety-net poll for other processes' commits
/// comes round.
pub(super) fn dispatcher(shared: Arc<Shared>, jobs: Sender<ClaimedJob>) {
    let hub = shared.engine.hub.clone();
    let wakeups = shared.storage().wakeups();
    let work = wakeups.work();
    let config = &shared.config;
    // Where wake-ups cross processes, other processes announce their delayed
    // jobs and retries too, and promotion on a timer is only a safety net.
    let promote_every = if wakeups.crosses_processes() {
        PROMOTE_SAFETY_NET
    } else {
        config.idle_poll_max
    };
    let mut next_due: Micros = i64::MIN;
    let mut last_promote = Instant::now();
    let mut idle = config.idle_poll_min;
    let mut rate = RateMeter::new();
    let mut error_pause = Duration::from_millis(10);
    let mut listening: Option<Listening<'_>> = None;
    while !shared.stopping() {
        let generation = hub.work_generation();
        // Read before looking for work: a commit after the look moves it.
        let seen = work.seq();
        rate.sample(shared.finished_attempts.load(Ordering::Relaxed));
        let buffer = rate.buffer(config.concurrency);
        let target = config.concurrency + buffer;
        let refill_at = config.concurrency + buffer / 2;
        shared.refill_at.store(refill_at, Ordering::Relaxed);
        let inflight = shared.inflight.load(Ordering::SeqCst);
        if inflight > refill_at {
            // Busy: producers need not wake this worker.
            listening = None;
            shared.starved.store(true, Ordering::SeqCst);
            if shared.inflight.load(Ordering::SeqCst) > refill_at {
                hub.wait_work(generation, config.idle_poll_max);
                continue;
            }
        }
        let now = now_micros();
        let due_hint = wakeups.due_hint();
        if next_due.min(due_hint) <= now || last_promote.elapsed() >= promote_every {
            last_promote = Instant::now();
            match shared.storage().promote_due(now) {
                Ok(due) => {
                    next_due = due.unwrap_or(i64::MAX);
                    wakeups.settle_due(due_hint, next_due);
                }
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
            listening = None;
            continue;
        }
        if listening.is_none() {
            // About to sleep: register, then look once more, so that work
            // committed before the registration is not missed.
            listening = Some(work.listen());
            continue;
        }
        let due_in = next_due
            .min(wakeups.due_hint())
            .saturating_sub(now_micros());
        let until_due = Duration::from_micros(due_in.max(0) as u64);
        if !work.wait(seen, idle.min(until_due)) {
            // The safety net: commits of processes whose wake-ups do not
            // reach this one.
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
