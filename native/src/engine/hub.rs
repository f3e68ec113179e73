//! In-process wake-ups, so that nothing inside one process polls:
//! - enqueue (and freed capacity) wakes the dispatcher;
//! - a job reaching a final state wakes whoever waits on its result, and
//!   hands them the outcome so they need not read it back from storage.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::job::{Finished, Micros};

#[derive(Default)]
pub struct Hub {
    work_generation: Mutex<u64>,
    work_changed: Condvar,
    /// Earliest due time of a delayed job or retry this process wrote.
    due_hint: AtomicI64,
    watchers: Mutex<HashMap<i64, Watched>>,
    watcher_count: AtomicUsize,
}

struct Watched {
    slot: Arc<Slot>,
    users: usize,
}

#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    changed: Condvar,
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
        Arc::new(Hub {
            due_hint: AtomicI64::new(i64::MAX),
            ..Default::default()
        })
    }

    /// New work may be claimable (or capacity was freed): wake the dispatcher.
    pub fn notify_work(&self) {
        *self.work_generation.lock() += 1;
        self.work_changed.notify_all();
    }

    /// A job will fall due at `at`: the dispatcher should look then.
    pub fn notify_due(&self, at: Micros) {
        self.due_hint.fetch_min(at, Ordering::SeqCst);
        self.notify_work();
    }

    pub fn take_due_hint(&self) -> Micros {
        self.due_hint.swap(i64::MAX, Ordering::SeqCst)
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
    /// cannot be missed.
    pub fn watch(self: &Arc<Self>, id: i64) -> Watch {
        let mut watchers = self.watchers.lock();
        let entry = watchers.entry(id).or_insert_with(|| Watched {
            slot: Arc::new(Slot::default()),
            users: 0,
        });
        entry.users += 1;
        let slot = entry.slot.clone();
        self.watcher_count.store(watchers.len(), Ordering::Release);
        Watch {
            hub: self.clone(),
            id,
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
        let slot = match self.watchers.lock().get(&id) {
            Some(watched) => watched.slot.clone(),
            None => return,
        };
        let mut state = slot.state.lock();
        state.finished = Some(make());
        state.signal_fds.iter().copied().for_each(signal);
        drop(state);
        slot.changed.notify_all();
    }

    /// Forgets a final state reported for `id` (the job was revived).
    pub fn forget_finished(&self, id: i64) {
        if let Some(watched) = self.watchers.lock().get(&id) {
            watched.slot.state.lock().finished = None;
        }
    }
}

/// A registration made by [`Hub::watch`]; unregisters on drop.
pub struct Watch {
    hub: Arc<Hub>,
    id: i64,
    slot: Arc<Slot>,
}

impl Watch {
    pub fn get(&self) -> Option<Finished> {
        self.slot.state.lock().finished.clone()
    }

    /// Waits up to `timeout` for the job to finish in this process.
    pub fn wait(&self, timeout: Duration) -> Option<Finished> {
        let deadline = Instant::now() + timeout;
        let mut state = self.slot.state.lock();
        while state.finished.is_none() {
            if self
                .slot
                .changed
                .wait_until(&mut state, deadline)
                .timed_out()
            {
                break;
            }
        }
        state.finished.clone()
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
        if let Some(watched) = watchers.get_mut(&self.id) {
            watched.users -= 1;
            if watched.users == 0 {
                watchers.remove(&self.id);
            }
        }
        self.hub
            .watcher_count
            .store(watchers.len(), Ordering::Release);
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
    fn a_watcher_is_woken_with_the_outcome() {
        let hub = Hub::new();
        let watch = hub.watch(7);
        let notifier = {
            let hub = hub.clone();
            thread::spawn(move || hub.finished(7, done))
        };
        assert_eq!(watch.wait(Duration::from_secs(5)), Some(done()));
        notifier.join().unwrap();
    }

    #[test]
    fn unwatched_jobs_cost_nothing_and_watches_unregister() {
        let hub = Hub::new();
        hub.finished(1, || panic!("must not build an outcome nobody waits for"));
        let a = hub.watch(1);
        let b = hub.watch(1);
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
        let watch = hub.watch(3);
        hub.finished(3, done);
        assert!(watch.get().is_some());
        hub.forget_finished(3);
        assert_eq!(watch.get(), None);
        assert_eq!(hub.watch(3).wait(Duration::from_millis(5)), None);
    }

    #[test]
    fn due_hints_keep_the_earliest() {
        let hub = Hub::new();
        hub.notify_due(50);
        hub.notify_due(20);
        hub.notify_due(90);
        assert_eq!(hub.take_due_hint(), 20);
        assert_eq!(hub.take_due_hint(), i64::MAX);
    }
}
