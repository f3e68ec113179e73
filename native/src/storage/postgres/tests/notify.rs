//! Wake-ups across storages (standing for processes): LISTEN/NOTIFY feeds
//! each one's beacons, one notification per statement; the safety net for
//! a listener that reconnected.

use super::*;

/// Waits until `beacon` moves past `seen`.
fn woken(beacon: crate::wakeup::Beacon<'_>, seen: u32) -> bool {
    beacon.wait(seen, Duration::from_secs(5))
}

#[test]
fn an_enqueue_in_one_storage_wakes_idle_workers_of_another() {
    let Some(scratch) = Scratch::new() else {
        return;
    };
    let (worker, producer) = (scratch.open(), scratch.open());
    assert!(worker.wakeups().crosses_processes());
    let work = worker.wakeups().work();
    let _listening = work.listen();
    let seen = work.seq();
    producer.enqueue(&opts("t"), &payloads(1000)).unwrap();
    assert!(woken(work, seen), "the commit's notification woke it");
    assert_eq!(claim(&worker, 2000).len(), 1000);
}

#[test]
fn a_completion_wakes_the_waiter_of_that_job_in_another_storage() {
    let Some(scratch) = Scratch::new() else {
        return;
    };
    let (worker, waiter) = (scratch.open(), scratch.open());
    let id = waiter.enqueue(&opts("t"), &payloads(1)).unwrap()[0];
    let done = waiter.wakeups().done_for(id);
    let _listening = done.listen();
    let seen = done.seq();
    let job = claim(&worker, 1).remove(0);
    worker.complete(&[success(&job, b"r")]).unwrap();
    assert!(woken(done, seen));
    assert_eq!(waiter.finished(id).unwrap().unwrap().result.unwrap(), b"r");
}

#[test]
fn a_delayed_job_announces_its_due_time_relative_to_the_commit() {
    let Some(scratch) = Scratch::new() else {
        return;
    };
    let (worker, producer) = (scratch.open(), scratch.open());
    let work = worker.wakeups().work();
    let _listening = work.listen();
    let seen = work.seq();
    let mut later = opts("t");
    later.delay = Some(Duration::from_secs(30));
    producer.enqueue(&later, &payloads(1)).unwrap();
    assert!(woken(work, seen), "an earlier due time wakes idle workers");
    let hint = worker.wakeups().due_hint();
    let expected = now_micros() + 30_000_000;
    assert!((hint - expected).abs() < 5_000_000, "{hint} vs {expected}");
}

#[test]
fn without_a_listener_the_changes_sequence_tells_of_new_work() {
    let Some(scratch) = Scratch::new() else {
        return;
    };
    let (worker, producer) = (scratch.open(), scratch.open());
    // As if the listener were gone: the check reads the sequence.
    worker.wakeups().set_fed(false);
    assert!(
        !worker.external_change().unwrap(),
        "first look: nothing to compare"
    );
    producer.enqueue(&opts("t"), &payloads(3)).unwrap();
    assert!(worker.external_change().unwrap());
    assert!(!worker.external_change().unwrap(), "reported once");
    // Completions make nothing claimable: no change for idle workers.
    let jobs = claim(&worker, 3);
    worker
        .complete(&jobs.iter().map(|j| success(j, b"")).collect::<Vec<_>>())
        .unwrap();
    assert!(!worker.external_change().unwrap());
}
