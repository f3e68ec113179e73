//! In-process hand-offs, beside the cross-process wake-ups of
//! [`Wakeups`](crate::wakeup::Wakeups):
//! - freed capacity (and a stop request) wakes this process's dispatcher
//!   while it waits for room;
//! - a job reaching a final state in this process hands its outcome to
//!   whoever here watches it, so they need not read it back from storage,
//!   and writes to the pipes of waiters in an event loop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::job::Finished;

#[derive(Default)]
pub struct Hub {
    work_generation: Mutex<u64>,
    work_changed: Condvar,
    watchers: Mutex<Watchers>,
    /// Counts relayed watches made, so the relay learns of new ones.
    relayed_changed: Condvar,
    watcher_count: AtomicUsize,
}

#[derive(Default)]
struct Watchers {
    by_job: HashMap<i64, Watched>,
    relayed_generation: u64,
}

struct Watched {
    slot: Arc<Slot>,
    users: usize,
    /// Watches whose waiter relies on the relay to learn of completions in
    /// other processes (it cannot sleep on the job's own beacon).
    relayed: usize,
}

#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    finished: Option<Finished>,
    /// Pipe ends written to on finish, for waiters in an event loop.
    signal_fds: Vec<i32>,
}

fn signal(fd: i32) {
    #[cfg(unix)]
    // SAFETY: the fd is registered by its owner, who unregisters it (under
    // the slot lock we hold here) before closing it. A full pipe already
    // signals readiness, so a failed write loses nothing.
    unsafe {
        libc::write(fd, [1u8].as_ptr().cast(), 1);
    }
}

impl Hub {
    pub fn new() -> Arc<Hub> {
        Arc::new(Hub::default())
    }

    /// Capacity was freed, or the worker should look at its state: wake the
    /// dispatcher if it waits for room.
    pub fn notify_work(&self) {
        *self.work_generation.lock() += 1;
        self.work_changed.notify_all();
    }

    pub fn work_generation(&self) -> u64 {
        *self.work_generation.lock()
    }

    /// Sleeps until the generation moves past `seen` or `timeout` passes.
    /// Returns true if woken by a notification.
    pub fn wait_work(&self, seen: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut generation = self.work_generation.lock();
        while *generation == seen {
            if self
                .work_changed
                .wait_until(&mut generation, deadline)
                .timed_out()
            {
                return *generation != seen;
            }
        }
        true
    }

    /// Registers interest in `id` reaching a final state. Register before
    /// checking storage, so a completion between the check and the wait
    /// cannot be missed. A `relayed` watch is one whose waiter counts on the
    /// relay for completions committed by other processes.
    pub fn watch(self: &Arc<Self>, id: i64, relayed: bool) -> Watch {
        let mut watchers = self.watchers.lock();
        let entry = watchers.by_job.entry(id).or_insert_with(|| Watched {
            slot: Arc::new(Slot::default()),
            users: 0,
            relayed: 0,
        });
        entry.users += 1;
        entry.relayed += relayed as usize;
        let slot = entry.slot.clone();
        if relayed {
            watchers.relayed_generation += 1;
            self.relayed_changed.notify_all();
        }
        self.watcher_count
            .store(watchers.by_job.len(), Ordering::Release);
        Watch {
            hub: self.clone(),
            id,
            relayed,
            slot,
        }
    }

    /// Cheap check that lets the writer skip building `Finished` values no
    /// one will read.
    pub fn has_watchers(&self) -> bool {
        self.watcher_count.load(Ordering::Acquire) > 0
    }

    /// Reports that `id` reached a final state. `make` runs only if someone
    /// is watching the job.
    pub fn finished(&self, id: i64, make: impl FnOnce() -> Finished) {
        if !self.has_watchers() {
            return;
        }
        let slot = match self.watchers.lock().by_job.get(&id) {
            Some(watched) => watched.slot.clone(),
            None => return,
        };
        let mut state = slot.state.lock();
        state.finished = Some(make());
        state.signal_fds.iter().copied().for_each(signal);
    }

    /// Forgets a final state reported for `id` (the job was revived).
    pub fn forget_finished(&self, id: i64) {
        if let Some(watched) = self.watchers.lock().by_job.get(&id) {
            watched.slot.state.lock().finished = None;
        }
    }

    /// The relayed jobs that have not been reported finished, and a count
    /// that moves whenever a relayed watch is made.
    pub fn relayed_unfinished(&self) -> (Vec<i64>, u64) {
        let watchers = self.watchers.lock();
        let ids = watchers
            .by_job
            .iter()
            .filter(|(_, w)| w.relayed > 0 && w.slot.state.lock().finished.is_none())
            .map(|(id, _)| *id)
            .collect();
        (ids, watchers.relayed_generation)
    }

    /// Sleeps until a relayed watch is made after `seen` (see
    /// `relayed_unfinished`), or `timeout` passes.
    pub fn wait_relayed(&self, seen: u64, timeout: Duration) {
        let mut watchers = self.watchers.lock();
        if watchers.relayed_generation == seen {
            self.relayed_changed.wait_for(&mut watchers, timeout);
        }
    }

    /// Signals every watcher's pipe and returns the watched jobs (so their
    /// beacons can be bumped): the queue is closing, and they must look.
    pub fn wake_all_watchers(&self) -> Vec<i64> {
        let watchers = self.watchers.lock();
        for watched in watchers.by_job.values() {
            let state = watched.slot.state.lock();
            state.signal_fds.iter().copied().for_each(signal);
        }
        watchers.by_job.keys().copied().collect()
    }

    /// Wakes the relay whatever it waits for (to make it stop).
    pub fn poke_relay(&self) {
        let mut watchers = self.watchers.lock();
        watchers.relayed_generation += 1;
        self.relayed_changed.notify_all();
    }
}

/// A registration made by [`Hub::watch`]; unregisters on drop.
pub struct Watch {
    hub: Arc<Hub>,
    id: i64,
    relayed: bool,
    slot: Arc<Slot>,
}

impl Watch {
    pub fn get(&self) -> Option<Finished> {
        self.slot.state.lock().finished.clone()
    }

    /// Also writes a byte to `fd` when the job finishes (at once if it has).
    /// The caller must call [`Watch::remove_signal_fd`] before closing `fd`.
    pub fn add_signal_fd(&self, fd: i32) {
        let mut state = self.slot.state.lock();
        if state.finished.is_some() {
            signal(fd);
        }
        state.signal_fds.push(fd);
    }

    pub fn remove_signal_fd(&self, fd: i32) {
        self.slot.state.lock().signal_fds.retain(|f| *f != fd);
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut watchers = self.hub.watchers.lock();
        if let Some(watched) = watchers.by_job.get_mut(&self.id) {
            watched.users -= 1;
            watched.relayed -= self.relayed as usize;
            if watched.users == 0 {
                watchers.by_job.remove(&self.id);
            }
        }
        self.hub
            .watcher_count
            .store(watchers.by_job.len(), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::State;
    use std::thread;

    fn done() -> Finished {
        Finished {
            state: State::Complete,
            result: Some(b"ok".to_vec()),
            error: None,
        }
    }

    #[test]
    fn a_watch_is_handed_the_outcome() {
        let hub = Hub::new();
        let watch = hub.watch(7, false);
        assert_eq!(watch.get(), None);
        hub.finished(7, done);
        assert_eq!(watch.get(), Some(done()));
    }

    #[test]
    fn unwatched_jobs_cost_nothing_and_watches_unregister() {
        let hub = Hub::new();
        hub.finished(1, || panic!("must not build an outcome nobody waits for"));
        let a = hub.watch(1, false);
        let b = hub.watch(1, true);
        assert!(hub.has_watchers());
        drop(a);
        assert!(hub.has_watchers());
        drop(b);
        assert!(!hub.has_watchers());
    }

    #[test]
    fn wait_work_returns_on_notify_and_times_out_otherwise() {
        let hub = Hub::new();
        let seen = hub.work_generation();
        assert!(!hub.wait_work(seen, Duration::from_millis(5)));
        let h = hub.clone();
        let t = thread::spawn(move || h.notify_work());
        assert!(hub.wait_work(seen, Duration::from_secs(5)));
        t.join().unwrap();
    }

    #[test]
    fn a_revived_job_is_not_reported_finished() {
        let hub = Hub::new();
        let watch = hub.watch(3, false);
        hub.finished(3, done);
        assert!(watch.get().is_some());
        hub.forget_finished(3);
        assert_eq!(watch.get(), None);
    }

    #[test]
    fn only_unfinished_relayed_watches_are_relayed() {
        let hub = Hub::new();
        let (_, before) = hub.relayed_unfinished();
        let _direct = hub.watch(1, false);
        let _relayed = hub.watch(2, true);
        let _finished = hub.watch(3, true);
        hub.finished(3, done);
        let (ids, generation) = hub.relayed_unfinished();
        assert_eq!(ids, vec![2]);
        assert_ne!(generation, before);
        // A wait for a generation already passed returns at once.
        hub.wait_relayed(before, Duration::from_secs(10));
    }
}
