//! A beacon: a sequence number that waiters compare against, and a count of
//! the waiters, in memory that may be shared between processes.
//!
//! The protocol never loses a wake-up and costs a notifier nothing when no
//! one listens:
//!
//! - a waiter registers (`listen`), reads the sequence number, checks its
//!   condition (looks in the database), and sleeps only while the number is
//!   still the one it read;
//! - a notifier makes the condition true (commits), then, only if someone is
//!   registered, bumps the number and wakes the sleepers.
//!
//! Both sides order their two steps with sequentially consistent operations,
//! so either the notifier sees the registration (and bumps), or the waiter's
//! check comes after the commit (and sees it). Sleeping compares the number
//! atomically with going to sleep (a futex on Linux), so a bump between the
//! read and the sleep is never missed.

use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The two words of one beacon, on a cache line of their own so that
/// beacons bumped by different writers do not slow each other down.
#[repr(C, align(64))]
#[derive(Default)]
pub struct BeaconCell {
    seq: AtomicU32,
    waiters: AtomicU32,
}

impl BeaconCell {
    /// Forgets waiters left registered by processes that died; see
    /// `SharedFile`, which calls it when no other process has the file.
    pub(crate) fn reset_waiters(&self) {
        self.waiters.store(0, Ordering::SeqCst);
    }
}

/// A handle on a [`BeaconCell`], in private memory or in a mapped file.
#[derive(Clone, Copy)]
pub struct Beacon<'a> {
    cell: &'a BeaconCell,
    /// Whether other processes map the cell (futexes must then not be
    /// process-private).
    shared: bool,
}

impl<'a> Beacon<'a> {
    pub(crate) fn new(cell: &'a BeaconCell, shared: bool) -> Self {
        Beacon { cell, shared }
    }

    /// The current sequence number. Read it before checking the condition.
    pub fn seq(&self) -> u32 {
        self.cell.seq.load(Ordering::SeqCst)
    }

    /// Registers a waiter until the returned guard drops. Register before
    /// reading `seq` and checking the condition.
    pub fn listen(&self) -> Listening<'a> {
        self.cell.waiters.fetch_add(1, Ordering::SeqCst);
        Listening { cell: self.cell }
    }

    /// Sleeps until the sequence number moves past `seen` or `timeout`
    /// passes. True if it moved.
    pub fn wait(&self, seen: u32, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.seq() != seen {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            futex::wait(&self.cell.seq, seen, deadline - now, self.shared);
        }
    }

    /// Tells the waiters that their condition may have changed. Call after
    /// making the change visible (after the commit). Costs one load when no
    /// one is registered.
    pub fn notify(&self) {
        fence(Ordering::SeqCst);
        if self.cell.waiters.load(Ordering::SeqCst) > 0 {
            self.bump();
        }
    }

    /// Wakes every waiter whether or not it is registered (to stop them).
    pub fn bump(&self) {
        self.cell.seq.fetch_add(1, Ordering::SeqCst);
        futex::wake_all(&self.cell.seq, self.shared);
    }

    /// How many waiters are registered (counting any a crashed process left).
    pub fn waiters(&self) -> u32 {
        self.cell.waiters.load(Ordering::SeqCst)
    }
}

/// A registration made by [`Beacon::listen`].
pub struct Listening<'a> {
    cell: &'a BeaconCell,
}

impl Drop for Listening<'_> {
    fn drop(&mut self) {
        self.cell.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(target_os = "linux")]
mod futex {
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    pub fn wait(word: &AtomicU32, expected: u32, timeout: Duration, shared: bool) {
        let op = if shared {
            libc::FUTEX_WAIT
        } else {
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG
        };
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: the word lives as long as the borrow; the kernel only reads
        // it. EINTR, EAGAIN (the value moved) and ETIMEDOUT all just return:
        // the caller re-checks the value and its deadline.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                op,
                expected,
                &ts as *const libc::timespec,
                std::ptr::null::<u32>(),
                0u32,
            );
        }
    }

    pub fn wake_all(word: &AtomicU32, shared: bool) {
        let op = if shared {
            libc::FUTEX_WAKE
        } else {
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG
        };
        // SAFETY: as above; waking has no memory effects.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                op,
                i32::MAX,
                0usize,
                0usize,
                0u32,
            );
        }
    }
}

/// Without futexes, waiters nap in short steps: correct, if less prompt.
#[cfg(not(target_os = "linux"))]
mod futex {
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    pub fn wait(_word: &AtomicU32, _expected: u32, timeout: Duration, _shared: bool) {
        std::thread::sleep(timeout.min(Duration::from_millis(1)));
    }

    pub fn wake_all(_word: &AtomicU32, _shared: bool) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::thread;

    #[test]
    fn a_notify_wakes_a_sleeping_waiter() {
        let cell = Arc::new(BeaconCell::default());
        let flag = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (cell, flag) = (cell.clone(), flag.clone());
            thread::spawn(move || {
                let beacon = Beacon::new(&cell, false);
                let _l = beacon.listen();
                loop {
                    let seen = beacon.seq();
                    if flag.load(Ordering::SeqCst) {
                        return;
                    }
                    assert!(beacon.wait(seen, Duration::from_secs(10)), "not woken");
                }
            })
        };
        let beacon = Beacon::new(&cell, false);
        while beacon.waiters() == 0 {
            thread::yield_now();
        }
        flag.store(true, Ordering::SeqCst);
        beacon.notify();
        waiter.join().unwrap();
    }

    #[test]
    fn nobody_listening_costs_no_bump() {
        let cell = BeaconCell::default();
        let beacon = Beacon::new(&cell, false);
        beacon.notify();
        assert_eq!(beacon.seq(), 0);
        let l = beacon.listen();
        beacon.notify();
        assert_eq!(beacon.seq(), 1);
        drop(l);
        assert_eq!(beacon.waiters(), 0);
    }

    #[test]
    fn a_wait_for_a_seen_number_that_moved_returns_at_once() {
        let cell = BeaconCell::default();
        let beacon = Beacon::new(&cell, false);
        let seen = beacon.seq();
        beacon.bump();
        let start = Instant::now();
        assert!(beacon.wait(seen, Duration::from_secs(10)));
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(!beacon.wait(beacon.seq(), Duration::from_millis(5)));
    }
}
