//! The workers registry, and jobs that wait for a worker with their task.

use super::*;
use crate::storage::{UnknownTaskJob, WorkerRegistration};

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn worker<'a>(id: &'a str, tasks: &'a [String], queues: &'a [String]) -> WorkerRegistration<'a> {
    WorkerRegistration {
        id,
        host: "h",
        pid: 7,
        threads: 2,
        queues: Some(queues),
        tasks,
        lease: Duration::from_secs(10),
    }
}

#[test]
fn workers_record_themselves_renew_and_leave() {
    let (scratch, s) = storage!();
    let (xy, z, default) = (names(&["x", "y"]), names(&["z"]), names(&["default"]));
    s.register_worker(&worker("a", &xy, &default)).unwrap();
    s.register_worker(&WorkerRegistration {
        lease: Duration::from_millis(20),
        queues: None,
        ..worker("b", &z, &default)
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
    assert_eq!(a.queues, Some(default.clone()));
    assert_eq!(live[1].queues, None);
    assert_eq!(a.expires_at, a.heartbeat_at + 10_000_000);
    let grown = names(&["x", "y", "w"]);
    s.register_worker(&worker("a", &grown, &default)).unwrap();
    assert_eq!(s.workers().unwrap()[0].tasks, ["x", "y", "w"]);
    assert!(s.renew_worker("a", Duration::from_secs(50)).unwrap());
    // Past b's expiry, only a is live; forgetting removes b's row for good.
    eventually(Duration::from_secs(5), || {
        (s.workers().unwrap().len() == 1).then_some(())
    });
    assert_eq!(s.forget_lapsed_workers().unwrap(), 1);
    assert!(!s.renew_worker("b", Duration::from_secs(1)).unwrap());
    s.unregister_worker("a").unwrap();
    assert!(s.workers().unwrap().is_empty());
    let known: i64 = scratch
        .client()
        .query_one(
            &format!(
                "SELECT count(*) FROM \"{}\".known_tasks WHERE name = 'z'",
                scratch.schema
            ),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(known, 1, "known for ever");
}

#[test]
fn jobs_of_tasks_no_live_worker_has_are_counted_by_task() {
    let (_scratch, s) = storage!();
    let (served, default) = (names(&["served"]), names(&["default"]));
    s.register_worker(&WorkerRegistration {
        lease: Duration::from_millis(300),
        ..worker("a", &served, &default)
    })
    .unwrap();
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
    eventually(Duration::from_secs(5), || {
        (s.unserved_tasks().unwrap().len() == 2).then_some(())
    });
}

#[test]
fn only_jobs_of_never_known_tasks_past_the_grace_are_dead_lettered() {
    let (_scratch, s) = storage!();
    let (known_tasks, default) = (names(&["known"]), names(&["default"]));
    s.register_worker(&worker("a", &known_tasks, &default))
        .unwrap();
    let known = s.enqueue(&opts("known"), &payloads(1)).unwrap()[0];
    let typo = s.enqueue(&opts("knwon"), &payloads(1)).unwrap()[0];
    assert!(s
        .fail_unknown_tasks(Some(Duration::from_secs(60)))
        .unwrap()
        .is_empty());
    let failed = eventually(Duration::from_secs(5), || {
        Some(s.fail_unknown_tasks(Some(Duration::ZERO)).unwrap()).filter(|f| !f.is_empty())
    });
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
