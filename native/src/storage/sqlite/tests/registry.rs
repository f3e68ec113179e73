//! The workers registry, and jobs that wait for a worker with their task.

use super::*;
use crate::storage::sqlite::registry::is_known_task;
use crate::storage::{UnknownTaskJob, WorkerRegistration};

fn worker<'a>(id: &'a str, tasks: &'a [String]) -> WorkerRegistration<'a> {
    WorkerRegistration {
        id,
        host: "h",
        pid: 7,
        threads: 2,
        queues: Some(&DEFAULT_QUEUE[..]),
        tasks,
        lease: Duration::from_secs(10),
    }
}

static DEFAULT_QUEUE: std::sync::LazyLock<[String; 1]> =
    std::sync::LazyLock::new(|| ["default".to_string()]);

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

#[test]
fn workers_record_themselves_renew_and_leave() {
    let s = memory();
    let before = now_micros();
    let (xy, z) = (names(&["x", "y"]), names(&["z"]));
    s.register_worker(&worker("a", &xy)).unwrap();
    s.travel(Duration::from_micros(1));
    s.register_worker(&WorkerRegistration {
        lease: Duration::from_secs(5),
        ..worker("b", &z)
    })
    .unwrap();
    let live = s.workers().unwrap();
    assert_eq!(
        live.iter()
            .map(|w| (w.id.as_str(), w.tasks.clone()))
            .collect::<Vec<_>>(),
        vec![("a", xy.clone()), ("b", z.clone())]
    );
    let a = &live[0];
    assert_eq!((a.host.as_str(), a.pid, a.threads), ("h", 7, 2));
    assert_eq!(a.queues, Some(vec!["default".to_string()]));
    assert!(a.started_at >= before && a.heartbeat_at == a.started_at);
    assert_eq!(a.expires_at, a.heartbeat_at + 10_000_000);
    // A row registered again (new tasks) is updated, not duplicated.
    let grown = names(&["x", "y", "w"]);
    s.register_worker(&worker("a", &grown)).unwrap();
    assert_eq!(s.workers().unwrap()[0].tasks, ["x", "y", "w"]);
    assert!(s.renew_worker("a", Duration::from_secs(50)).unwrap());
    // Past b's expiry, only a is live; forgetting removes b's row for good.
    s.travel(Duration::from_secs(20));
    assert_eq!(s.workers().unwrap().len(), 1);
    assert_eq!(s.forget_lapsed_workers().unwrap(), 1);
    assert!(
        !s.renew_worker("b", Duration::from_micros(1)).unwrap(),
        "b must register again"
    );
    s.unregister_worker("a").unwrap();
    assert!(s.workers().unwrap().is_empty());
    assert!(is_known_task(&s, "z").unwrap(), "known for ever");
    assert!(!is_known_task(&s, "never").unwrap());
}

#[test]
fn jobs_of_tasks_no_live_worker_has_are_counted_by_task() {
    let s = memory();
    let served = names(&["served"]);
    s.register_worker(&worker("a", &served)).unwrap();
    s.enqueue(&opts("served"), &payloads(1)).unwrap();
    s.enqueue(&opts("new_feature"), &payloads(3)).unwrap();
    let mut later = opts("new_feature");
    later.delay = Some(Duration::from_secs(60));
    s.enqueue(&later, &payloads(1)).unwrap();
    assert_eq!(
        s.unserved_tasks().unwrap(),
        vec![("new_feature".to_string(), 4)]
    );
    // Once its worker is gone, its task is unserved too.
    s.travel(Duration::from_secs(20));
    let unserved = s.unserved_tasks().unwrap();
    assert_eq!(unserved.len(), 2);
}

#[test]
fn only_jobs_of_never_known_tasks_past_the_grace_are_dead_lettered() {
    let s = memory();
    let known_tasks = names(&["known"]);
    s.register_worker(&worker("a", &known_tasks)).unwrap();
    let known = s.enqueue(&opts("known"), &payloads(1)).unwrap()[0];
    let typo = s.enqueue(&opts("knwon"), &payloads(1)).unwrap()[0];
    // Enqueued after the cutoff: still within its grace.
    assert!(s
        .fail_unknown_tasks(Some(Duration::from_secs(1)))
        .unwrap()
        .is_empty());
    s.travel(Duration::from_micros(1));
    let failed = s.fail_unknown_tasks(Some(Duration::ZERO)).unwrap();
    assert_eq!(
        failed,
        vec![UnknownTaskJob {
            id: typo,
            task_name: "knwon".to_string()
        }]
    );
    assert_eq!(state(&s, typo), State::Dead);
    assert_eq!(state(&s, known), State::Ready);
    let errors = s.errors(typo).unwrap();
    assert_eq!(errors[0].error_type, "UnknownTaskError");
    assert!(errors[0].message.contains("knwon"));
}
