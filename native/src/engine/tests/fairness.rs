//! What a worker holds and hands back: jobs claimed but not started, better
//! jobs jumping the queue, and the registry that decides which tasks a
//! worker claims.

use std::sync::mpsc;

use super::*;

/// A task body that blocks until `release` is dropped or sent to, and says
/// on `started` which job began.
fn blocking(
    started: mpsc::Sender<i64>,
    release: Arc<Mutex<mpsc::Receiver<()>>>,
) -> impl Fn(&ClaimedJob) -> OutcomeKind + Send + Sync + 'static {
    let started = Mutex::new(started);
    move |job| {
        let _ = started.lock().send(job.id);
        if job.task_name == "block" {
            let _ = release.lock().recv_timeout(WAIT);
        }
        echo(job)
    }
}

fn state_of(engine: &Engine, id: i64) -> State {
    engine.storage.get_job(id).unwrap().unwrap().state
}

/// Waits (with a deadline) until `id` is in `state`.
fn until_state(engine: &Engine, id: i64, state: State) {
    let deadline = std::time::Instant::now() + WAIT;
    while state_of(engine, id) != state {
        assert!(
            std::time::Instant::now() < deadline,
            "job {id} never {state:?}"
        );
        std::thread::sleep(POLL);
    }
}

/// A worker of one executor with `prefetch`, whose executor is busy with a
/// job that blocks until the returned sender is used.
struct Busy {
    engine: Arc<Engine>,
    worker: Arc<Worker>,
    started: mpsc::Receiver<i64>,
    release: mpsc::Sender<()>,
    blocker: i64,
}

fn busy_worker(prefetch: usize) -> Busy {
    let engine = engine();
    let (started_tx, started) = mpsc::channel();
    let (release, gate) = mpsc::channel();
    let mut config = config(1);
    config.prefetch = Some(prefetch);
    let (worker, _) = start(
        &engine,
        config,
        blocking(started_tx, Arc::new(Mutex::new(gate))),
    );
    let blocker = engine.enqueue(&options("block"), &[vec![]]).unwrap()[0];
    assert_eq!(started.recv_timeout(WAIT).unwrap(), blocker);
    Busy {
        engine,
        worker,
        started,
        release,
        blocker,
    }
}

#[test]
fn a_held_job_is_not_started_and_cancelling_it_means_it_never_runs() {
    let Busy {
        engine,
        worker,
        started,
        release,
        blocker,
    } = busy_worker(1);
    let held = engine.enqueue(&options("t"), &[vec![]]).unwrap()[0];
    until_state(&engine, held, State::Claimed);
    let record = engine.storage.get_job(held).unwrap().unwrap();
    assert_eq!(record.started_at, None);
    assert!(engine.cancel(held).unwrap());
    release.send(()).unwrap();
    wait(&engine, blocker);
    let after = engine.enqueue(&options("t"), &[vec![]]).unwrap()[0];
    wait(&engine, after);
    assert_eq!(state_of(&engine, held), State::Cancelled);
    let ran: Vec<i64> = started.try_iter().collect();
    assert_eq!(ran, vec![after], "the cancelled job never ran");
    worker.stop(WAIT);
}

#[test]
fn a_better_job_takes_the_place_of_held_ones_and_runs_first() {
    let Busy {
        engine,
        worker,
        started,
        release,
        ..
    } = busy_worker(2);
    let low = engine.enqueue(&options("t"), &[vec![1], vec![2]]).unwrap();
    until_state(&engine, low[1], State::Claimed);
    let mut urgent = options("t");
    urgent.priority = 100;
    let urgent = engine.enqueue(&urgent, &[vec![3]]).unwrap()[0];
    // No executor is free: the held jobs go back, and the better job is
    // held in their place (held slots were full, so only a hand-back makes
    // room for it), ahead of the rest.
    until_state(&engine, urgent, State::Claimed);
    release.send(()).unwrap();
    for id in [urgent, low[0], low[1]] {
        wait(&engine, id);
    }
    let ran: Vec<i64> = started.try_iter().collect();
    assert_eq!(ran, vec![urgent, low[0], low[1]]);
    worker.stop(WAIT);
}

#[test]
fn a_worker_claims_only_its_tasks_and_is_in_the_registry_while_it_runs() {
    let engine = engine();
    let mut config = config(1);
    config.tasks = Some(vec!["old".to_string()]);
    let (worker, _) = start(&engine, config, echo);
    let live = engine.storage.workers().unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(
        (live[0].id.as_str(), &live[0].tasks[..]),
        (worker.id(), &["old".to_string()][..])
    );
    let old = engine.enqueue(&options("old"), &[vec![]]).unwrap()[0];
    let new = engine.enqueue(&options("new"), &[vec![]]).unwrap()[0];
    wait(&engine, old);
    assert_eq!(
        engine.storage.unserved_tasks().unwrap(),
        vec![("new".to_string(), 1)]
    );
    assert_eq!(
        state_of(&engine, new),
        State::Ready,
        "waits for a worker with its task"
    );
    worker
        .set_tasks(vec!["old".to_string(), "new".to_string()])
        .unwrap();
    wait(&engine, new);
    worker.stop(WAIT);
    assert!(engine.storage.workers().unwrap().is_empty());
}

#[test]
fn a_job_no_worker_ever_had_the_task_of_is_dead_lettered_after_the_grace() {
    let engine = engine();
    let mut config = config(1);
    config.tasks = Some(vec!["known".to_string()]);
    config.unknown_task_grace = Some(Duration::from_millis(50));
    let (worker, events) = start(&engine, config, echo);
    let typo = engine.enqueue(&options("knwon"), &[vec![]]).unwrap()[0];
    let finished = wait(&engine, typo);
    assert_eq!(finished.state, State::Dead);
    assert_eq!(finished.error.unwrap().error_type, "UnknownTaskError");
    worker.stop(WAIT);
    assert_eq!(
        events.count(|e| matches!(e, Event::UnknownTask { id, .. } if *id == typo)),
        1
    );
}

on_postgres!(
    a_held_job_is_not_started_and_cancelling_it_means_it_never_runs,
    a_better_job_takes_the_place_of_held_ones_and_runs_first,
    a_worker_claims_only_its_tasks_and_is_in_the_registry_while_it_runs,
    a_job_no_worker_ever_had_the_task_of_is_dead_lettered_after_the_grace,
);
