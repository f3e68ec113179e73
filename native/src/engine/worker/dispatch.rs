//! The dispatcher thread: claims what its executors can start now (and a
//! prefetch sized by the recent completion rate), promotes due jobs, and
//! sleeps while there is nothing to claim.
//!
//! How much a worker takes is what keeps several worker processes fair:
//! - jobs for idle executors, marked running;
//! - beyond those, jobs expected to start within [`START_HORIZON`] at the
//!   measured rate, also marked running (for short jobs this hides the claim
//!   round trip; for slow jobs it is none at all, so a second process gets
//!   its share of a small batch);
//! - with an explicit `prefetch`, up to that many more held as claimed: not
//!   started, cancellable, started only after a check that no better job
//!   waits, and handed back when a better one waits and no executor is free.
//!
//! Deferred attempts (coroutines, see `deferred`) leave the executors' count
//! as soon as they are handed to the event loop, so a worker of async tasks
//! keeps claiming; they have a room of their own, `async_concurrency`, on
//! top of the executors'. Claims stop while executors' and deferred jobs
//! together fill both rooms (the job the dispatcher claims next may be of
//! either kind), and start again once a quarter of the async room is free,
//! so that they come in batches.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::Shared;
use crate::engine::{Event, Hub};
use crate::job::{now_micros, ClaimedJob, Micros};
use crate::storage::{ClaimRequest, JobScope};
use crate::wakeup::Listening;

/// Most jobs claimed in one transaction.
const MAX_CLAIM: usize = 512;
/// Jobs expected to start within this long (at the measured completion
/// rate) are claimed as running: enough to hide the claim round trip, short
/// enough that no job shows running long before it runs.
const START_HORIZON: f64 = 0.005;
/// How often due jobs are promoted when other processes announce theirs.
const PROMOTE_SAFETY_NET: Duration = Duration::from_secs(1);
/// Jobs waiting for an executor are handed back when no job finished for
/// this long (every executor is stuck in a long task).
const STALLED: Duration = Duration::from_millis(100);
/// How often the completion rate is sampled, at the longest...
const RATE_WINDOW: Duration = Duration::from_millis(20);
/// ...and how many completions make a sample early.
const RATE_MIN_JOBS: u64 = 128;

/// Tracks the completion rate to size the claims.
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

    fn sample(&mut self, count: u64, concurrency: usize) {
        let elapsed = self.last_at.elapsed();
        let done = count - self.last_count;
        // Every 20 ms, or sooner once enough jobs finished to measure: a
        // backlog of short jobs must not run its first thousand through
        // claims sized for an unknown rate. The very first sample comes
        // after a couple of jobs per executor.
        let enough = if self.rate == 0.0 {
            2 * concurrency as u64
        } else {
            RATE_MIN_JOBS
        };
        if elapsed < RATE_WINDOW && (done < enough || elapsed.is_zero()) {
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

    /// Jobs expected to start within the horizon, beyond the executing ones.
    fn horizon(&self) -> usize {
        ((self.rate * START_HORIZON) as usize).min(MAX_CLAIM)
    }
}

/// How many jobs the dispatcher wants, this round.
struct Targets {
    /// Jobs marked running (executing or about to): executors plus the horizon.
    running: usize,
    /// Claimed-only jobs held beyond those (an explicit prefetch).
    held: usize,
    /// Refill once running jobs fall to this many, to claim in batches.
    refill_at: usize,
}

fn targets(concurrency: usize, horizon: usize, prefetch: Option<usize>) -> Targets {
    let extra = prefetch.unwrap_or(horizon);
    let soon = extra.min(horizon);
    Targets {
        running: concurrency + soon,
        held: extra - soon,
        refill_at: concurrency + soon / 2,
    }
}

/// Room for jobs to run now, shared by the executors and deferred attempts.
struct Rooms {
    /// Jobs the executors should have (running or about to).
    executors: usize,
    /// Executors' and deferred jobs together, at most.
    total: usize,
    /// Refill, when waiting for deferred attempts, once both together fall
    /// to this many.
    async_refill_at: usize,
}

impl Rooms {
    fn new(executors: usize, async_concurrency: usize) -> Self {
        let total = executors + async_concurrency;
        let batch = (async_concurrency / 4).clamp(1, MAX_CLAIM);
        Rooms {
            executors,
            total,
            async_refill_at: total - batch,
        }
    }

    /// How many jobs the executors hold now, and how many more may be claimed.
    fn now(&self, shared: &Shared) -> (usize, usize) {
        let inflight = shared.inflight.load(Ordering::SeqCst);
        let deferred = shared.deferred.load(Ordering::SeqCst);
        (inflight, self.room(inflight, deferred))
    }

    fn room(&self, inflight: usize, deferred: usize) -> usize {
        let executors = self.executors.saturating_sub(inflight);
        executors.min(self.total.saturating_sub(inflight + deferred))
    }
}

/// The dispatcher thread's loop, until the worker stops.
///
/// It sleeps in two ways. Busy (its executors have enough to do), it waits
/// in this process for capacity to free up, and producers do not wake it.
/// Idle (nothing more to claim), it registers on the database's work beacon,
/// looks once more, and sleeps until a producer in any process commits work,
/// a job falls due, or the safety-net poll for other processes' commits
/// comes round.
pub(super) fn dispatcher(
    shared: Arc<Shared>,
    jobs: Sender<ClaimedJob>,
    waiting: Receiver<ClaimedJob>,
) {
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
    let mut prefetched: VecDeque<ClaimedJob> = VecDeque::new();
    let mut progress = Progress::new(&shared);
    // When a token comes for rate-limited jobs left waiting (i64::MAX: none wait).
    let mut limited_wake: Micros = i64::MAX;
    while !shared.stopping() {
        let generation = hub.work_generation();
        // Read before looking for work: a commit after the look moves it.
        let seen = work.seq();
        rate.sample(
            shared.finished_attempts.load(Ordering::Relaxed),
            config.concurrency,
        );
        let want = targets(config.concurrency, rate.horizon(), config.prefetch);
        let rooms = Rooms::new(want.running, config.async_concurrency);
        shared.refill_at.store(want.refill_at, Ordering::Relaxed);
        shared
            .async_refill_at
            .store(rooms.async_refill_at, Ordering::Relaxed);
        let (mut inflight, mut room) = rooms.now(&shared);
        let hold_room = want.held.saturating_sub(prefetched.len());
        if inflight > want.refill_at || room + hold_room == 0 {
            // Busy: producers need not wake this worker.
            listening = None;
            shared.starved.store(true, Ordering::SeqCst);
            (inflight, room) = rooms.now(&shared);
            if inflight > want.refill_at || room + hold_room == 0 {
                if !hub.wait_work(generation, config.idle_poll_max) {
                    hand_back_if_better_waits(&shared, &mut prefetched);
                    progress.release_if_stalled(&shared, &waiting);
                }
                continue;
            }
        }
        let now = now_micros();
        let due_hint = wakeups.due_hint();
        if next_due.min(due_hint) <= now || last_promote.elapsed() >= promote_every {
            last_promote = Instant::now();
            match shared.storage().promote_due() {
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
        let got = match take_jobs(
            &shared,
            &mut prefetched,
            room,
            hold_room,
            &jobs,
            &mut limited_wake,
        ) {
            Ok(got) => got,
            Err(e) => {
                shared.report("claiming jobs", &e);
                pause_after_error(&hub, generation, &mut error_pause);
                continue;
            }
        };
        error_pause = Duration::from_millis(10);
        if got > 0 {
            idle = config.idle_poll_min;
        }
        if got == room + hold_room {
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
            .min(limited_wake)
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
                Ok(false) => idle = (idle * 2).min(wakeups.idle_poll_max(config.idle_poll_max)),
                Err(e) => shared.report("checking for new work", &e),
            }
            hand_back_if_better_waits(&shared, &mut prefetched);
        }
    }
    // Never started: back to the queue, their attempt not counted.
    shared.release_unstarted(prefetched.drain(..).collect());
}

/// Claims up to `room` jobs to run now and `hold_room` to hold, and hands
/// the running ones to the executors. Rate-limited jobs come first, each
/// with a token (bounded by their rate, they cannot crowd out the rest),
/// and are never held; the other claims leave them out. Held jobs start
/// first, unless a better job waits in storage. Returns how many jobs it
/// took or started; `limited_wake` is when a token comes for limited jobs
/// left waiting.
fn take_jobs(
    shared: &Shared,
    prefetched: &mut VecDeque<ClaimedJob>,
    room: usize,
    hold_room: usize,
    executors: &Sender<ClaimedJob>,
    limited_wake: &mut Micros,
) -> crate::error::Result<usize> {
    let tasks = shared.tasks();
    let limits = shared.limits();
    let limited = !limits.all.is_empty();
    let mut request = ClaimRequest {
        worker_id: &shared.id,
        queues: shared.config.queues.as_deref(),
        tasks: tasks.as_deref().map(|t| t.as_slice()),
        above_priority: None,
        skip_tasks: limited.then_some(limits.tasks.as_slice()),
        skip_queues: limited.then_some(limits.queues.as_slice()),
        start: room,
        hold: hold_room,
        lease: shared.config.lease,
    };
    let mut to_run = shared.claim_limited(&request, &limits, limited_wake)?;
    shared.hold(&to_run);
    let room = room - to_run.len();
    request.start = room;
    let mut taken = to_run.len();
    if let (true, Some(best_held)) = (room > 0, prefetched.front()) {
        // Only jobs better than what this worker holds may jump the queue.
        request.above_priority = Some(best_held.priority);
        request.hold = 0;
        let better = shared.storage().claim(&request)?;
        shared.hold(&better);
        let starting: Vec<ClaimedJob> = prefetched
            .drain(..(room - better.len()).min(prefetched.len()))
            .collect();
        taken += better.len() + starting.len();
        to_run.extend(better);
        to_run.extend(shared.start_held(starting)?);
    } else {
        let claimed = shared.storage().claim(&request)?;
        taken += claimed.len();
        shared.hold(&claimed);
        for job in claimed {
            if job.running {
                to_run.push(job);
            } else {
                prefetched.push_back(job);
            }
        }
    }
    if shared.config.debug_events && taken > 0 {
        shared.events.event(Event::Claimed {
            running: to_run.len(),
            held: taken - to_run.len(),
        });
    }
    for job in to_run {
        // Executors only exit once this sender is gone.
        let _ = executors.send(job);
    }
    Ok(taken)
}

/// Hands held (claimed, not started) jobs back when a ready job of higher
/// priority waits and no executor here is free to take it: they would
/// otherwise start before it. Another worker, or this one once free, takes
/// the better job first.
fn hand_back_if_better_waits(shared: &Shared, prefetched: &mut VecDeque<ClaimedJob>) {
    let Some(lowest) = prefetched.iter().map(|j| j.priority).min() else {
        return;
    };
    let tasks = shared.tasks();
    let scope = JobScope {
        queues: shared.config.queues.as_deref(),
        tasks: tasks.as_deref().map(|t| t.as_slice()),
    };
    match shared.storage().best_ready_priority(scope) {
        Ok(Some(best)) if best > lowest => {
            let (keep, give): (Vec<ClaimedJob>, Vec<ClaimedJob>) =
                prefetched.drain(..).partition(|j| j.priority >= best);
            prefetched.extend(keep);
            shared.release_unstarted(give);
        }
        Ok(_) => {}
        Err(e) => shared.report("looking for better jobs", &e),
    }
}

/// Whether the executors are getting anywhere: jobs marked running that
/// wait in the channel while every executor is stuck in a long task are
/// handed back for other workers.
struct Progress {
    finished: u64,
    since: Instant,
}

impl Progress {
    fn new(shared: &Shared) -> Self {
        Progress {
            finished: shared.finished_attempts.load(Ordering::Relaxed),
            since: Instant::now(),
        }
    }

    fn release_if_stalled(&mut self, shared: &Shared, waiting: &Receiver<ClaimedJob>) {
        let finished = shared.finished_attempts.load(Ordering::Relaxed);
        if finished != self.finished || waiting.is_empty() {
            self.finished = finished;
            self.since = Instant::now();
            return;
        }
        if self.since.elapsed() < STALLED {
            return;
        }
        let stuck: Vec<ClaimedJob> = waiting.try_iter().collect();
        for _ in &stuck {
            shared.inflight.fetch_sub(1, Ordering::SeqCst);
        }
        shared.release_unstarted(stuck);
        self.since = Instant::now();
    }
}

/// Waits before retrying a failed storage call (or until new work arrives),
/// doubling the pause up to a second.
fn pause_after_error(hub: &Hub, generation: u64, pause: &mut Duration) {
    hub.wait_work(generation, *pause);
    *pause = (*pause * 2).min(Duration::from_secs(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_jobs_get_no_prefetch_and_short_ones_a_horizon() {
        let slow = targets(2, 0, None);
        assert_eq!((slow.running, slow.held, slow.refill_at), (2, 0, 2));
        let fast = targets(2, 100, None);
        assert_eq!((fast.running, fast.held, fast.refill_at), (102, 0, 52));
    }

    #[test]
    fn deferred_attempts_stop_claims_only_once_their_own_room_is_full() {
        let rooms = Rooms::new(10, 100);
        assert_eq!(rooms.room(0, 0), 10, "the executors' room as before");
        assert_eq!(rooms.room(4, 50), 6, "deferred jobs free the executors");
        assert_eq!(rooms.room(0, 105), 5);
        assert_eq!(rooms.room(0, 110), 0, "both rooms full");
        assert_eq!(rooms.room(3, 110), 0);
        assert_eq!(rooms.async_refill_at, 110 - 25, "refill in batches");
        assert_eq!(Rooms::new(2, 1).async_refill_at, 2);
    }

    #[test]
    fn an_explicit_prefetch_holds_what_the_horizon_does_not_cover() {
        let t = targets(2, 0, Some(3));
        assert_eq!((t.running, t.held), (2, 3));
        let t = targets(2, 10, Some(3));
        assert_eq!((t.running, t.held), (5, 0));
        let t = targets(2, 10, Some(0));
        assert_eq!((t.running, t.held), (2, 0));
    }
}
