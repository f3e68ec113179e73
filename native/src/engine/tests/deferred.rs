//! Deferred attempts (what coroutines run as): they leave the executors, have
//! a room of their own, and report back through their handle; timeouts,
//! cancellations and shutdown reach them.

use crossbeam_channel::{unbounded, Receiver, Sender};

use super::*;
use crate::job::AttemptRef;

/// Defers every job and hands its handle to the test, which plays the event
/// loop; says which attempts it was asked to interrupt or cancel.
struct DeferringRunner {
    handles: Sender<Deferred>,
    interrupts: Sender<AttemptRef>,
    cancels: Sender<AttemptRef>,
}

impl Runner for DeferringRunner {
    fn run(
        &self,
        first: ClaimedJob,
        next: &mut dyn FnMut() -> Option<ClaimedJob>,
        _done: &mut dyn FnMut(Outcome),
        defer: &mut dyn FnMut(&ClaimedJob) -> Deferred,
    ) {
        let mut job = Some(first);
        while let Some(j) = job {
            self.handles.send(defer(&j)).unwrap();
            job = next();
        }
    }

    fn interrupt(&self, job: &AttemptRef) {
        let _ = self.interrupts.send(*job);
    }

    fn cancel(&self, job: &AttemptRef) {
        let _ = self.cancels.send(*job);
    }
}

struct Loop {
    worker: Arc<Worker>,
    handles: Receiver<Deferred>,
    interrupts: Receiver<AttemptRef>,
    cancels: Receiver<AttemptRef>,
}

fn start_deferring(engine: &Arc<Engine>, config: WorkerConfig) -> Loop {
    let (handles_tx, handles) = unbounded();
    let (interrupts_tx, interrupts) = unbounded();
    let (cancels_tx, cancels) = unbounded();
    let runner = DeferringRunner {
        handles: handles_tx,
        interrupts: interrupts_tx,
        cancels: cancels_tx,
    };
    let worker = Worker::start(
        engine.clone(),
        Arc::new(runner),
        Arc::new(Events::default()),
        config,
    )
    .unwrap();
    Loop {
        worker,
        handles,
        interrupts,
        cancels,
    }
}

fn async_config(concurrency: usize, async_concurrency: usize) -> WorkerConfig {
    WorkerConfig {
        async_concurrency,
        ..config(concurrency)
    }
}

fn take(handles: &Receiver<Deferred>, n: usize) -> Vec<Deferred> {
    (0..n)
        .map(|i| {
            handles
                .recv_timeout(WAIT)
                .unwrap_or_else(|_| panic!("only {i} of {n} attempts were deferred"))
        })
        .collect()
}

#[test]
fn deferred_attempts_free_their_executor_and_report_later() {
    let engine = engine();
    let l = start_deferring(&engine, async_config(1, 50));
    let payloads: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i]).collect();
    let ids = engine.enqueue(&options("t"), &payloads).unwrap();
    // One executor, and all forty in flight at once.
    let handles = take(&l.handles, 40);
    assert_eq!(l.worker.deferred(), 40);
    assert_eq!(l.worker.inflight(), 0, "no executor holds a deferred job");
    for handle in handles {
        let payload = vec![handle.job().id as u8];
        handle.finish(OutcomeKind::Success(payload));
    }
    for id in ids {
        let finished = wait(&engine, id);
        assert_eq!(finished.state, State::Complete);
    }
    assert_eq!(l.worker.stop(WAIT), 0);
    assert_eq!(l.worker.deferred(), 0);
}

#[test]
fn claims_stop_while_the_async_room_is_full() {
    let engine = engine();
    // One executor plus five deferred attempts; nothing finished yet, so no
    // rate and no horizon beyond them.
    let l = start_deferring(&engine, async_config(1, 5));
    let payloads: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i]).collect();
    engine.enqueue(&options("t"), &payloads).unwrap();
    let mut handles = take(&l.handles, 6);
    assert!(
        l.handles.recv_timeout(Duration::from_millis(200)).is_err(),
        "claimed beyond both rooms"
    );
    assert_eq!(
        engine.storage.stats().unwrap().get(Status::Pending),
        14,
        "the rest wait in the queue, where other workers can take them"
    );
    // A quarter of the async room (one) frees: claims resume.
    handles.pop().unwrap().finish(OutcomeKind::Success(vec![]));
    handles.extend(take(&l.handles, 1));
    for handle in handles {
        handle.finish(OutcomeKind::Success(vec![]));
    }
    // The rest, each finished as it comes (only six fit at once).
    for _ in 0..13 {
        take(&l.handles, 1)
            .pop()
            .unwrap()
            .finish(OutcomeKind::Success(vec![]));
    }
    until(|| engine.storage.stats().unwrap().get(Status::Complete) == 20);
    l.worker.stop(WAIT);
}

#[test]
fn a_timeout_interrupts_a_deferred_attempt_and_retries_it() {
    let engine = engine();
    let l = start_deferring(&engine, async_config(1, 10));
    let mut o = options("t");
    o.timeout = Some(Duration::from_millis(100));
    o.retry_backoff = 0.0;
    o.max_retries = 1;
    let id = engine.enqueue(&o, &[vec![1]]).unwrap()[0];
    let first = take(&l.handles, 1).pop().unwrap();
    let interrupted = l.interrupts.recv_timeout(WAIT).expect("interrupted");
    assert_eq!(interrupted, *first.job());
    // The engine failed the attempt itself: the handle only gives its place back.
    first.discard();
    let second = take(&l.handles, 1).pop().unwrap();
    assert_eq!(second.job().attempt, 2);
    second.finish(OutcomeKind::Success(vec![2]));
    assert_eq!(wait(&engine, id).result, Some(vec![2]));
    let errors = engine.storage.errors(id).unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].error_type, "TaskTimeoutError");
    l.worker.stop(WAIT);
}

#[test]
fn a_cancel_request_in_this_process_reaches_a_deferred_attempt_at_once() {
    let engine = engine();
    let l = start_deferring(&engine, async_config(1, 10));
    let id = engine.enqueue(&options("t"), &[vec![1]]).unwrap()[0];
    let handle = take(&l.handles, 1).pop().unwrap();
    assert_eq!(engine.request_cancel(id).unwrap(), CancelRequest::Requested);
    // Told by the producer's call itself, not by the maintenance thread's look.
    assert_eq!(l.cancels.try_recv().ok(), Some(*handle.job()));
    handle.finish(OutcomeKind::Cancelled);
    assert_eq!(wait(&engine, id).state, State::Cancelled);
    l.worker.stop(WAIT);
}

#[test]
fn a_cancel_request_from_another_process_is_found_by_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cancel.db");
    let (local, other) = (file_engine(&path), file_engine(&path));
    let l = start_deferring(&local, async_config(1, 10));
    let id = other.enqueue(&options("t"), &[vec![1]]).unwrap()[0];
    let handle = take(&l.handles, 1).pop().unwrap();
    assert_eq!(other.request_cancel(id).unwrap(), CancelRequest::Requested);
    let told = l
        .cancels
        .recv_timeout(WAIT)
        .expect("the worker found the request");
    assert_eq!(told, *handle.job());
    handle.finish(OutcomeKind::Cancelled);
    assert_eq!(wait(&other, id).state, State::Cancelled);
    l.worker.stop(WAIT);
}

#[test]
fn a_dropped_handle_fails_its_attempt_for_a_retry() {
    let engine = engine();
    let l = start_deferring(&engine, async_config(1, 10));
    let mut o = options("t");
    o.retry_backoff = 0.0;
    let id = engine.enqueue(&o, &[vec![1]]).unwrap()[0];
    drop(take(&l.handles, 1));
    let retry = take(&l.handles, 1).pop().unwrap();
    assert_eq!(retry.job().attempt, 2);
    retry.finish(OutcomeKind::Success(vec![]));
    assert_eq!(wait(&engine, id).state, State::Complete);
    assert_eq!(
        engine.storage.errors(id).unwrap()[0].error_type,
        "RuntimeError"
    );
    l.worker.stop(WAIT);
}

#[test]
fn shutdown_waits_for_deferred_attempts_then_releases_and_interrupts_the_rest() {
    let engine = engine();
    let l = start_deferring(&engine, async_config(1, 10));
    let ids = engine.enqueue(&options("t"), &[vec![1], vec![2]]).unwrap();
    let mut handles = take(&l.handles, 2);
    let finisher = {
        let quick = handles.remove(0);
        // Finishes on another thread, as an event loop would, before or
        // while the stop waits for it.
        std::thread::spawn(move || quick.finish(OutcomeKind::Success(vec![9])))
    };
    let slow = handles.remove(0);
    let left = l.worker.stop(Duration::from_millis(300));
    finisher.join().unwrap();
    assert_eq!(left, 1, "one attempt was still running");
    let interrupted = l
        .interrupts
        .try_recv()
        .expect("the one left was interrupted");
    assert_eq!(interrupted, *slow.job());
    slow.discard();
    let states: Vec<State> = ids
        .iter()
        .map(|&id| engine.storage.get_job(id).unwrap().unwrap().state)
        .collect();
    assert!(states.contains(&State::Complete));
    assert!(states.contains(&State::Ready), "handed back: {states:?}");
    assert_eq!(l.worker.deferred(), 0);
}

/// Waits (with a deadline) for `condition`.
fn until(condition: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "condition never held");
        std::thread::sleep(POLL);
    }
}
