//! The results relay: one thread per engine that turns completions committed
//! by other processes into in-process hand-offs, for waiters that cannot
//! sleep on their job's own beacon (an event loop waiting for many jobs at
//! once through `aresult()`).
//!
//! It sleeps on the board's "any job finished" beacon only while a relayed
//! job is unfinished, so that otherwise completions cost no one a wake-up;
//! each time it wakes it reads those jobs' states and hands the final ones
//! to the hub, which signals their waiters' pipes. Polling, backing off to
//! half a second, covers the wake-ups that cannot arrive (wake-ups that do
//! not cross processes, or one lost to a process that died mid-commit).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use super::Hub;
use crate::error::{Error, Result};
use crate::storage::Storage;

const POLL_MIN: Duration = Duration::from_millis(50);
const POLL_MAX: Duration = Duration::from_millis(500);
/// How long the relay sleeps when nothing is relayed (it is woken earlier
/// by a new relayed watch).
const IDLE: Duration = Duration::from_secs(10);

pub(super) struct Relay {
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
    hub: Arc<Hub>,
    storage: Arc<dyn Storage>,
}

impl Relay {
    pub(super) fn new(hub: Arc<Hub>, storage: Arc<dyn Storage>) -> Relay {
        Relay {
            stop: Arc::new(AtomicBool::new(false)),
            thread: Mutex::new(None),
            hub,
            storage,
        }
    }

    /// Starts the relay thread if it is not running.
    pub(super) fn ensure_running(&self) -> Result<()> {
        let mut thread = self.thread.lock();
        if thread.is_some() || self.stop.load(Ordering::Acquire) {
            return Ok(());
        }
        let (hub, storage, stop) = (self.hub.clone(), self.storage.clone(), self.stop.clone());
        *thread = Some(
            std::thread::Builder::new()
                .name("taskito-results".into())
                .spawn(move || relay(&hub, &*storage, &stop))
                .map_err(|e| Error::io("cannot start the results relay thread", e))?,
        );
        Ok(())
    }

    /// Stops the relay thread and waits for it.
    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let Some(thread) = self.thread.lock().take() else {
            return;
        };
        self.hub.poke_relay();
        // Wakes it if it sleeps on the board (waking other processes'
        // relays too, which look and go back to sleep).
        self.storage.wakeups().done_any().bump();
        let _ = thread.join();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

fn relay(hub: &Hub, storage: &dyn Storage, stop: &AtomicBool) {
    let done = storage.wakeups().done_any();
    while !stop.load(Ordering::Acquire) {
        let (ids, generation) = hub.relayed_unfinished();
        if ids.is_empty() {
            hub.wait_relayed(generation, IDLE);
            continue;
        }
        // Registered before looking: a completion committed after the look
        // bumps the beacon, and the wait below returns at once.
        let _listening = done.listen();
        let mut poll = POLL_MIN;
        while !stop.load(Ordering::Acquire) {
            let seen = done.seq();
            let (ids, _) = hub.relayed_unfinished();
            if ids.is_empty() {
                break;
            }
            for id in ids {
                match storage.finished(id) {
                    Ok(Some(finished)) => hub.finished(id, || finished),
                    Ok(None) => {}
                    // Purged or unknown: its waiter finds out when it looks
                    // itself; nothing to hand over.
                    Err(Error::JobNotFound(_)) => {}
                    // Storage trouble: the next look retries.
                    Err(_) => {}
                }
            }
            if done.wait(seen, poll) {
                poll = POLL_MIN;
            } else {
                poll = (poll * 2).min(POLL_MAX);
            }
        }
    }
}
