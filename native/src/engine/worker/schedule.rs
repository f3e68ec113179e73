//! What a worker declares for the whole database, beyond its tasks: its
//! periodic schedules, whose due ticks its maintenance thread stores as jobs
//! (`fire_periodic_if_due`), and its rate limits, whose jobs its dispatcher
//! claims apart (`claim_limited`), so that a job waiting for a token never
//! holds up the rest.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{Shared, Worker};
use crate::error::Result;
use crate::job::{micros, now_micros, ClaimedJob, Micros};
use crate::storage::{
    ClaimRequest, LimitScope, PeriodicSchedule, RateLimit, RateLimits, PERIODIC_LOOKAHEAD,
};

/// How often a worker with schedules looks at them even when none is due
/// by its reckoning: another process may have registered a schedule anew.
const PERIODIC_SAFETY_NET: Duration = Duration::from_secs(1);

/// What a worker declares: its schedules and rate limits.
#[derive(Clone, Debug, Default)]
pub struct Declared {
    pub periodic: Vec<PeriodicSchedule>,
    pub rate_limits: Vec<RateLimit>,
}

/// The rate limits a worker applies, and the names its main claim skips.
#[derive(Debug, Default)]
pub(super) struct Limits {
    pub all: RateLimits,
    pub tasks: Vec<String>,
    pub queues: Vec<String>,
}

impl Limits {
    fn new(limits: Vec<RateLimit>) -> Limits {
        let all = RateLimits::new(limits);
        Limits {
            tasks: all.names(LimitScope::Task),
            queues: all.names(LimitScope::Queue),
            all,
        }
    }
}

impl Shared {
    pub(super) fn limits(&self) -> Arc<Limits> {
        self.limits.read().clone()
    }

    /// Records the worker's schedules and rate limits in the database.
    pub(super) fn declare(&self, declared: &Declared) -> Result<()> {
        self.storage().register_periodic(&declared.periodic)?;
        self.storage()
            .configure_rate_limits(&declared.rate_limits)?;
        *self.periodic.write() =
            Arc::new(declared.periodic.iter().map(|s| s.name.clone()).collect());
        *self.limits.write() = Arc::new(Limits::new(declared.rate_limits.clone()));
        self.next_periodic_look.store(i64::MIN, Ordering::Release);
        Ok(())
    }

    /// Stores the ticks of this worker's schedules that fall due within the
    /// lookahead, once by its reckoning one does (or the safety net comes
    /// round), and tells idle workers: at once for ticks due now (missed
    /// ones caught up), at their time for the others.
    pub(super) fn fire_periodic_if_due(&self) {
        let names = self.periodic.read().clone();
        let now = now_micros();
        if names.is_empty() || now < self.next_periodic_look.load(Ordering::Acquire) {
            return;
        }
        let safety_net = now.saturating_add(micros(PERIODIC_SAFETY_NET));
        let next_look = match self.storage().fire_periodic(&names) {
            Ok(fired) => {
                if fired.ready > 0 {
                    self.engine.announce_work();
                }
                if let Some(due) = fired.earliest_due {
                    self.engine.announce_due(due);
                }
                fired
                    .next_tick
                    .map_or(safety_net, |t| t.saturating_sub(micros(PERIODIC_LOOKAHEAD)))
                    .min(safety_net)
            }
            Err(e) => {
                self.report("storing periodic ticks", &e);
                safety_net
            }
        };
        self.next_periodic_look.store(next_look, Ordering::Release);
    }

    /// Claims rate-limited jobs to start now (up to `request.start`), each
    /// with a token. `wake_at` is set to when a token comes for those left
    /// waiting (`i64::MAX`: none wait), for the dispatcher to look again then.
    pub(super) fn claim_limited(
        &self,
        request: &ClaimRequest,
        limits: &Limits,
        wake_at: &mut Micros,
    ) -> Result<Vec<ClaimedJob>> {
        if limits.all.is_empty() || request.start == 0 {
            return Ok(Vec::new());
        }
        let claim = self.storage().claim_limited(request, &limits.all)?;
        *wake_at = claim.retry_at.unwrap_or(i64::MAX);
        Ok(claim.jobs)
    }
}

impl Worker {
    /// Replaces the worker's schedules and rate limits (declared after it
    /// started) and records them in the database.
    pub fn declare(&self, declared: Declared) -> Result<()> {
        self.shared.declare(&declared)?;
        self.shared.engine.hub.notify_work();
        Ok(())
    }
}
