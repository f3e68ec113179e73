//! Connections the server kills (`pg_terminate_backend`) are replaced: the
//! operation that found its connection dead runs again on a new one, and
//! the listener reconnects and wakes everyone.

use super::*;

/// Terminates every connection of this test's storages (their application
/// name ends with the test's schema).
fn kill_connections(scratch: &Scratch) -> u64 {
    let mut client = scratch.client();
    let killed: i64 = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = $1 AND pid <> pg_backend_pid()",
            &[&format!("{APPLICATION_NAME} {}", scratch.schema)],
        )
        .unwrap()
        .get(0);
    killed as u64
}

#[test]
fn killed_connections_are_replaced_transparently() {
    let Some(scratch) = Scratch::new() else {
        return;
    };
    let s = scratch.open();
    let ids = s.enqueue(&opts("t"), &payloads(10)).unwrap();
    assert!(kill_connections(&scratch) >= 1);
    // Every operation after the kill still works, on new connections.
    let jobs = claim(&s, 10);
    assert_eq!(jobs.len(), 10);
    kill_connections(&scratch);
    let applied = s
        .complete(&jobs.iter().map(|j| success(j, b"ok")).collect::<Vec<_>>())
        .unwrap();
    assert!(applied.iter().all(|a| *a == Applied::Complete));
    kill_connections(&scratch);
    assert_eq!(s.get_job(ids[9]).unwrap().unwrap().state, State::Complete);
}

#[test]
fn the_listener_comes_back_and_wakes_everyone_after_a_kill() {
    let Some(scratch) = Scratch::new() else {
        return;
    };
    let (worker, producer) = (scratch.open(), scratch.open());
    let work = worker.wakeups().work();
    let _listening = work.listen();
    let seen = work.seq();
    kill_connections(&scratch);
    // Woken by the reconnection (something may have been missed).
    assert!(work.wait(seen, Duration::from_secs(10)));
    eventually(Duration::from_secs(10), || {
        worker.wakeups().crosses_processes().then_some(())
    });
    assert!(
        worker.external_change().unwrap(),
        "a reconnection counts once"
    );
    let seen = work.seq();
    producer.enqueue(&opts("t"), &payloads(1)).unwrap();
    assert!(
        work.wait(seen, Duration::from_secs(5)),
        "notifications flow again"
    );
}
