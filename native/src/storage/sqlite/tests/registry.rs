//! The workers registry, and jobs that wait for a worker with their task.

use super::*;
use crate::job::WorkerRecord;
use crate::storage::sqlite::registry::is_known_task;
use crate::storage::UnknownTaskJob;

fn worker(id: &str, tasks: &[&str], now: i64) -> WorkerRecord {
    WorkerRecord {
        id: id.to_string(),
        host: "h".to_string(),
        pid: 7,
        threads: 2,
        queues: Some(vec!["default".to_string()]),
        tasks: tasks.iter().map(|t| t.to_string()).collect(),
        started_at: now,
        heartbeat_at: now,
        expires_at: now + 10_000_000,
    }
}

#[test]
fn workers_record_themselves_renew_and_leave() {
    let s = memory();
    let now = now_micros();
    let a = worker("a", &["x", "y"], now);
    s.register_worker(&a).unwrap();
    s.register_worker(&worker("b", &["z"], now + 1)).unwrap();
    assert_eq!(
        s.workers(now).unwrap(),
        vec![a.clone(), worker("b", &["z"], now + 1)]
    );
    // A row registered again (new tasks) is updated, not duplicated.
    let grown = worker("a", &["x", "y", "w"], now);
    s.register_worker(&grown).unwrap();
    assert_eq!(s.workers(now).unwrap()[0].tasks, ["x", "y", "w"]);
    assert!(s.renew_worker("a", now + 5, now + 50_000_000).unwrap());
    // Past b's expiry, only a is live; forgetting removes b's row for good.
    let later = now + 20_000_000;
    assert_eq!(s.workers(later).unwrap().len(), 1);
    assert_eq!(s.forget_lapsed_workers(later).unwrap(), 1);
    assert!(
        !s.renew_worker("b", later, later + 1).unwrap(),
        "b must register again"
    );
    s.unregister_worker("a").unwrap();
    assert!(s.workers(now).unwrap().is_empty());
    assert!(is_known_task(&s, "z").unwrap(), "known for ever");
    assert!(!is_known_task(&s, "never").unwrap());
}

#[test]
fn jobs_of_tasks_no_live_worker_has_are_counted_by_task() {
    let s = memory();
    let now = now_micros();
    s.register_worker(&worker("a", &["served"], now)).unwrap();
    s.enqueue(&opts("served"), &payloads(1)).unwrap();
    s.enqueue(&opts("new_feature"), &payloads(3)).unwrap();
    let mut later = opts("new_feature");
    later.delay = Some(Duration::from_secs(60));
    s.enqueue(&later, &payloads(1)).unwrap();
    assert_eq!(
        s.unserved_tasks(now).unwrap(),
        vec![("new_feature".to_string(), 4)]
    );
    // Once its worker is gone, its task is unserved too.
    let unserved = s.unserved_tasks(now + 20_000_000).unwrap();
    assert_eq!(unserved.len(), 2);
}

#[test]
fn only_jobs_of_never_known_tasks_past_the_grace_are_dead_lettered() {
    let s = memory();
    let now = now_micros();
    s.register_worker(&worker("a", &["known"], now)).unwrap();
    let known = s.enqueue(&opts("known"), &payloads(1)).unwrap()[0];
    let typo = s.enqueue(&opts("knwon"), &payloads(1)).unwrap()[0];
    // Enqueued after the cutoff: still within its grace.
    assert!(s.fail_unknown_tasks(now - 1, now).unwrap().is_empty());
    let failed = s.fail_unknown_tasks(now_micros() + 1, now).unwrap();
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
