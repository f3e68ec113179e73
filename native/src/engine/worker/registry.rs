//! The worker's row in the database's registry: written when it starts (and
//! again whenever its task list grows), its heartbeat renewed with its
//! leases, deleted when it stops. Through it, jobs of a task no live worker
//! has are visible, and jobs of a task no worker ever had are dead-lettered
//! after a grace period instead of waiting for ever.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Shared, Worker};
use crate::engine::Event;
use crate::error::Result;
use crate::storage::WorkerRegistration;

impl Shared {
    pub(super) fn register(&self) -> Result<()> {
        let tasks = self.tasks();
        let host = hostname();
        self.storage().register_worker(&WorkerRegistration {
            id: &self.id,
            host: &host,
            pid: std::process::id(),
            threads: self.config.concurrency as u32,
            queues: self.config.queues.as_deref(),
            tasks: tasks.as_deref().map_or(&[], |t| t.as_slice()),
            lease: self.config.lease,
        })
    }

    /// Renews the heartbeat; registers again if others took this worker for
    /// dead and deleted its row (it was frozen past its lease, say).
    pub(super) fn renew_registration(&self) {
        let renewed = match self.storage().renew_worker(&self.id, self.config.lease) {
            Ok(true) => Ok(()),
            Ok(false) => self.register(),
            Err(e) => Err(e),
        };
        if let Err(e) = renewed {
            self.report("renewing the worker's registration", &e);
        }
        if let Err(e) = self.storage().forget_lapsed_workers() {
            self.report("forgetting workers that stopped", &e);
        }
    }

    pub(super) fn unregister(&self) {
        if let Err(e) = self.storage().unregister_worker(&self.id) {
            self.report("removing the worker's registration", &e);
        }
    }

    /// Dead-letters jobs whose task no worker ever registered, once they
    /// waited past the grace period (and quarantines those whose task name
    /// cannot be read). Only while this worker is idle: the look walks the
    /// ready jobs, which an idle worker has none of its own.
    pub(super) fn fail_unknown_tasks(&self) {
        if self.inflight.load(Ordering::SeqCst) + self.deferred.load(Ordering::SeqCst) > 0 {
            return;
        }
        let grace = self.config.unknown_task_grace;
        match self.storage().fail_unknown_tasks(grace) {
            Ok(failed) => {
                for job in &failed {
                    self.events.event(Event::UnknownTask {
                        id: job.id,
                        task_name: job.task_name.clone(),
                        waited: grace.unwrap_or_default(),
                    });
                }
                self.storage()
                    .wakeups()
                    .finished(failed.iter().map(|job| job.id));
            }
            Err(e) => self.report("dead-lettering jobs of unknown tasks", &e),
        }
    }
}

impl Worker {
    /// Sets the task names this worker can run (tasks registered after it
    /// started): its claims take their jobs from now on, and its registry
    /// row says so.
    pub fn set_tasks(&self, tasks: Vec<String>) -> Result<()> {
        *self.shared.tasks.write() = Some(Arc::new(tasks));
        self.shared.register()?;
        // Jobs that waited for these tasks may be claimable now.
        self.shared.engine.hub.notify_work();
        self.shared.storage().wakeups().work().bump();
        Ok(())
    }
}

/// This machine's name, as the registry and worker ids show it.
pub(super) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".to_string())
}
