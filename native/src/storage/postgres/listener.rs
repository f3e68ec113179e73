//! Wake-ups across machines: every statement that makes jobs claimable or
//! final also calls `pg_notify` on the schema's channel, in its own
//! transaction, so the notification is delivered exactly when the change
//! commits. Each process runs one listener thread on a connection of its
//! own that LISTENs on the channel and bumps this process's beacons (the
//! same `Wakeups` the SQLite backend shares through a file), so idle
//! workers and result waiters sleep on futexes here too.
//!
//! Payloads (one notification per statement and kind, never per job):
//! - `w`: claimable work was committed;
//! - `d<µs>`: a job falls due this many microseconds after the commit
//!   (relative, so that machines whose clocks disagree agree on it);
//! - `f<id>,<id>...`: these jobs reached a final state; `b<bucket>,...`
//!   instead when the ids would not fit the 8000-byte payload limit.
//!
//! A notification is never lost while the listener is connected. When its
//! connection drops, the listener reconnects with a growing pause, and on
//! reconnecting wakes every waiter (something may have committed in
//! between); meanwhile the engine's polls find the work, faster, because
//! `Wakeups::crosses_processes` says false until the feed is back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fallible_iterator::FallibleIterator;
use postgres::Client;

use super::connect::Target;
use crate::job::{now_micros, Micros};
use crate::wakeup::{Wakeups, DONE_BUCKETS};

/// Most ids listed in one `f` payload (19 digits and a comma each, well
/// under the 8000-byte limit).
const MAX_IDS: usize = 300;
/// How long the listener waits for a notification before it checks whether
/// it should stop.
const TICK: Duration = Duration::from_millis(100);
const MAX_RECONNECT_PAUSE: Duration = Duration::from_secs(2);

/// The channel the schema's writers notify on.
pub fn channel(schema: &str) -> String {
    format!("taskito:{schema}")
}

/// What one statement tells the listeners, built before it runs and sent
/// in it (see [`notify_sql`]).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Notes {
    pub payloads: Vec<String>,
    /// Whether jobs become claimable (now or later): the statement bumps
    /// the `changes` sequence too.
    pub work: bool,
}

impl Notes {
    /// Claimable jobs were committed.
    pub fn work(mut self) -> Self {
        self.payloads.push("w".to_string());
        self.work = true;
        self
    }

    /// A job falls due `delay` microseconds from the commit.
    pub fn due_in(mut self, delay: Micros) -> Self {
        self.payloads.push(format!("d{}", delay.max(0)));
        self.work = true;
        self
    }

    /// These jobs reached a final state.
    pub fn finished(mut self, ids: &[i64]) -> Self {
        if ids.is_empty() {
            return self;
        }
        if ids.len() <= MAX_IDS {
            let list: Vec<String> = ids.iter().map(i64::to_string).collect();
            self.payloads.push(format!("f{}", list.join(",")));
        } else {
            let mut buckets: Vec<i64> = ids
                .iter()
                .map(|id| id.rem_euclid(DONE_BUCKETS as i64))
                .collect();
            buckets.sort_unstable();
            buckets.dedup();
            let list: Vec<String> = buckets.iter().map(i64::to_string).collect();
            self.payloads.push(format!("b{}", list.join(",")));
        }
        self
    }
}

/// The select-list columns that send `notes` when the statement returns
/// its first row: `$channel` is the channel, `$payloads` a text array,
/// `$bump` whether to bump `changes`. Uncorrelated scalar subqueries run
/// once, when first needed, in the statement's transaction.
pub(crate) fn notify_sql(channel: usize, payloads: usize, bump: usize) -> String {
    format!(
        "(SELECT count(pg_notify(${channel}::text, p)) FROM unnest(${payloads}::text[]) AS p) \
         AS notified, (SELECT nextval('changes') WHERE ${bump}::bool) AS changes"
    )
}

/// Applies one payload to this process's beacons.
pub(crate) fn deliver(wakeups: &Wakeups, payload: &str) {
    let (kind, rest) = payload.split_at(payload.len().min(1));
    let numbers = || rest.split(',').filter_map(|n| n.parse::<i64>().ok());
    match kind {
        "w" => wakeups.work().notify(),
        "d" => {
            if let Ok(delay) = rest.parse::<Micros>() {
                if wakeups.announce_due(now_micros().saturating_add(delay)) {
                    wakeups.work().notify();
                }
            }
        }
        // A bucket's number is a job id of that bucket.
        "f" | "b" => wakeups.finished(numbers()),
        _ => wake_everyone(wakeups),
    }
}

/// Wakes every waiter of this process: something may have committed that
/// no notification told of.
pub(crate) fn wake_everyone(wakeups: &Wakeups) {
    wakeups.work().notify();
    wakeups.finished(0..DONE_BUCKETS as i64);
}

/// The listener thread of one storage; stops when dropped.
pub(crate) struct Listener {
    shared: Arc<ListenerState>,
}

#[derive(Default)]
struct ListenerState {
    stop: AtomicBool,
    /// Set on each reconnection, taken by `external_change`.
    reconnected: AtomicBool,
}

impl Listener {
    /// Connects and LISTENs now (so that nothing committed after `open`
    /// returns is missed), then keeps listening in a thread. If the first
    /// connection fails, the thread keeps trying.
    pub fn start(target: &Target, schema: &str, wakeups: Arc<Wakeups>) -> Listener {
        let shared = Arc::new(ListenerState::default());
        let channel = channel(schema);
        let first = listen(target, &channel).ok();
        if first.is_some() {
            wakeups.set_fed(true);
        }
        let (state, target) = (shared.clone(), target.clone());
        let spawned = std::thread::Builder::new()
            .name("taskito-listen".into())
            .spawn(move || run(first, &target, &channel, &wakeups, &state));
        if spawned.is_err() {
            // No thread, no feed: the engine polls, as without wake-ups.
            shared.stop.store(true, Ordering::SeqCst);
        }
        Listener { shared }
    }

    /// True once after each reconnection: notifications may have been
    /// lost while the connection was down.
    pub fn take_reconnected(&self) -> bool {
        self.shared.reconnected.swap(false, Ordering::SeqCst)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // The thread notices within a tick and closes its connection.
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

fn listen(target: &Target, channel: &str) -> crate::error::Result<Client> {
    let mut client = target.connect()?;
    client.batch_execute(&format!("LISTEN \"{channel}\""))?;
    Ok(client)
}

fn run(
    mut client: Option<Client>,
    target: &Target,
    channel: &str,
    wakeups: &Wakeups,
    state: &ListenerState,
) {
    let mut pause = Duration::from_millis(50);
    while !state.stop.load(Ordering::SeqCst) {
        let Some(mut listening) = client.take() else {
            nap(state, pause);
            pause = (pause * 2).min(MAX_RECONNECT_PAUSE);
            if let Ok(fresh) = listen(target, channel) {
                client = Some(fresh);
                wakeups.set_fed(true);
                state.reconnected.store(true, Ordering::SeqCst);
                wake_everyone(wakeups);
            }
            continue;
        };
        pause = Duration::from_millis(50);
        if receive(&mut listening, wakeups, state) {
            client = Some(listening);
        } else {
            // Lost: until it is back, idle workers poll as without a feed.
            wakeups.set_fed(false);
            wake_everyone(wakeups);
        }
    }
    wakeups.set_fed(false);
}

/// Delivers notifications for one tick. False if the connection is gone.
fn receive(client: &mut Client, wakeups: &Wakeups, state: &ListenerState) -> bool {
    {
        let mut notifications = client.notifications();
        let mut iter = notifications.timeout_iter(TICK);
        loop {
            match iter.next() {
                Ok(Some(note)) => {
                    deliver(wakeups, note.payload());
                    if state.stop.load(Ordering::SeqCst) {
                        return true;
                    }
                }
                // A timeout, or a closed connection: is_closed tells which.
                Ok(None) => break,
                Err(_) => return false,
            }
        }
    }
    !client.is_closed()
}

/// Sleeps `pause`, in ticks, unless the listener is stopped.
fn nap(state: &ListenerState, pause: Duration) {
    let mut left = pause;
    while !left.is_zero() && !state.stop.load(Ordering::SeqCst) {
        let step = left.min(TICK);
        std::thread::sleep(step);
        left -= step;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_list_ids_or_buckets_within_the_payload_limit() {
        let few = Notes::default().finished(&[7, 70]);
        assert_eq!(few.payloads, ["f7,70"]);
        assert!(!few.work);
        let many: Vec<i64> = (0..1024).map(|i| i64::MAX - i).collect();
        let notes = Notes::default().finished(&many).work().due_in(-3);
        assert!(notes.payloads[0].starts_with('b') && notes.payloads[0].len() < 8000);
        assert_eq!(notes.payloads[1..], ["w", "d0"]);
        assert!(notes.work);
        let longest: Vec<i64> = vec![i64::MAX; MAX_IDS];
        assert!(Notes::default().finished(&longest).payloads[0].len() < 8000);
    }

    #[test]
    fn deliveries_bump_the_beacons_they_name() {
        let w = Wakeups::private();
        let _work = w.work().listen();
        let _job = w.done_for(70).listen();
        let (work, job, other) = (w.work().seq(), w.done_for(70).seq(), w.done_for(71).seq());
        deliver(&w, "f70");
        assert_ne!(w.done_for(70).seq(), job);
        assert_eq!(w.done_for(71).seq(), other);
        assert_eq!(w.work().seq(), work);
        deliver(&w, "w");
        assert_ne!(w.work().seq(), work);
        let job = w.done_for(70).seq();
        deliver(&w, &format!("b{}", 70 % DONE_BUCKETS));
        assert_ne!(w.done_for(70).seq(), job);
        deliver(&w, "d5000000");
        assert!(w.due_hint() > now_micros());
    }
}
