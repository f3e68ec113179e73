//! Whether a held job's lease still holds, as far as this worker can tell
//! without asking the database: the lease it was claimed with, extended
//! whenever a renewal succeeds. A worker that cannot reach its database
//! cannot renew; once a job's lease may have run out, other workers may
//! have taken it over, so an executor that reaches it skips it instead of
//! running it a second time.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::held::forget;
use super::Shared;
use crate::engine::Event;
use crate::job::{format_id, AttemptRef, ClaimedJob};

/// How long before the lease's end in storage this worker stops counting on
/// it: the claim's (or renewal's) answer arrives after the lease began.
fn margin(lease: Duration) -> Duration {
    lease / 10
}

/// Until when a lease granted (or renewed) by a request sent at `asked`
/// surely holds.
pub(super) fn holds_until(asked: Instant, lease: Duration) -> Instant {
    asked + lease.saturating_sub(margin(lease))
}

impl Shared {
    /// Records that the leases of `jobs` were renewed by a request sent at
    /// `asked`.
    pub(super) fn leases_renewed(&self, jobs: &[AttemptRef], asked: Instant) {
        let until = holds_until(asked, self.config.lease);
        let mut held = self.held.lock();
        for job in jobs {
            if let Some(h) = held.get_mut(&job.id) {
                if h.job.token == job.token {
                    h.lease_until = h.lease_until.max(until);
                }
            }
        }
    }

    /// True if `job` may run: its lease still holds. Otherwise the job is
    /// dropped here, unrun (its lease runs out in storage and another
    /// worker recovers it), and the operator told.
    pub(super) fn lease_holds(&self, job: &ClaimedJob) -> bool {
        let expired = {
            let mut held = self.held.lock();
            let expired = held
                .get(&job.id)
                .is_some_and(|h| h.job.token == job.token && h.lease_until <= Instant::now());
            if expired {
                forget(&mut held, &job.attempt_ref());
            }
            expired
        };
        if expired {
            self.inflight.fetch_sub(1, Ordering::SeqCst);
            self.events.event(Event::StorageError {
                during: "starting a job",
                message: format!(
                    "job {} was not started: its lease could not be renewed in time, so \
                     another worker may hold it now",
                    format_id(job.id)
                ),
            });
        }
        !expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_counted_on_until_a_tenth_before_its_end() {
        let asked = Instant::now();
        let lease = Duration::from_secs(10);
        assert_eq!(holds_until(asked, lease), asked + Duration::from_secs(9));
        assert_eq!(holds_until(asked, Duration::ZERO), asked);
    }
}
