//! Records, listings, statistics and error history.

use super::*;
use crate::error::Error;
use crate::job::{format_id, JobFilter, Status};

#[test]
fn unknown_ids_are_not_found() {
    let (_scratch, s) = storage!();
    assert_eq!(s.get_job(12345).unwrap(), None);
    assert!(matches!(s.finished(12345), Err(Error::JobNotFound(id)) if id == format_id(12345)));
    assert!(!s.cancel(12345).unwrap());
}

#[test]
fn stats_count_public_statuses() {
    let (_scratch, s) = storage!();
    let mut o = opts("t");
    o.retry_backoff = 100.0;
    s.enqueue(&o, &payloads(6)).unwrap();
    let mut delayed = opts("t");
    delayed.delay = Some(Duration::from_secs(100));
    s.enqueue(&delayed, &payloads(1)).unwrap();
    let jobs = claim(&s, 4);
    s.complete(&[
        success(&jobs[0], b""),
        failure(&jobs[1], true),
        failure(&jobs[2], false),
    ])
    .unwrap();
    let ready = s
        .list_jobs(&JobFilter {
            status: Some(Status::Pending),
            limit: 1,
            ..Default::default()
        })
        .unwrap();
    s.cancel(ready[0].id).unwrap();
    let st = s.stats().unwrap();
    let get = |status| st.get(status);
    assert_eq!(get(Status::Pending), 2, "one ready, one delayed");
    assert_eq!(get(Status::Running), 1);
    assert_eq!(get(Status::Complete), 1);
    assert_eq!(get(Status::Failed), 1);
    assert_eq!(get(Status::Dead), 1);
    assert_eq!(get(Status::Cancelled), 1);
}

#[test]
fn list_jobs_filters_and_pages_newest_first() {
    let (_scratch, s) = storage!();
    let a = s.enqueue(&opts("a"), &payloads(3)).unwrap();
    let mut bq = opts("b");
    bq.queue = "q2".into();
    let b = s.enqueue(&bq, &payloads(2)).unwrap();
    let all = s
        .list_jobs(&JobFilter {
            limit: 50,
            ..Default::default()
        })
        .unwrap();
    let expected: Vec<i64> = a.iter().chain(&b).rev().copied().collect();
    assert_eq!(all.iter().map(|j| j.id).collect::<Vec<_>>(), expected);
    let only_b = s
        .list_jobs(&JobFilter {
            task_name: Some("b".into()),
            limit: 50,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(only_b.len(), 2);
    let q2 = s
        .list_jobs(&JobFilter {
            queue: Some("q2".into()),
            limit: 1,
            offset: 1,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(q2.iter().map(|j| j.id).collect::<Vec<_>>(), vec![b[0]]);
    claim(&s, 1);
    let running = s
        .list_jobs(&JobFilter {
            status: Some(Status::Running),
            limit: 50,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(running.len(), 1);
}

#[test]
fn errors_stay_in_the_order_they_happened_across_retry_dead() {
    let (_scratch, s) = storage!();
    let mut o = opts("t");
    o.max_retries = 1;
    o.retry_backoff = 0.0;
    let id = s.enqueue(&o, &payloads(1)).unwrap()[0];
    for _round in 0..2 {
        for _ in 0..2 {
            let job = claim(&s, 1).remove(0);
            s.complete(&[failure(&job, true)]).unwrap();
        }
        assert_eq!(state(&s, id), State::Dead);
        s.retry_dead(id).unwrap();
    }
    let errors = s.errors(id).unwrap();
    assert_eq!(
        errors.iter().map(|e| e.attempt).collect::<Vec<_>>(),
        vec![1, 2, 1, 2]
    );
    assert!(errors.windows(2).all(|w| w[0].failed_at <= w[1].failed_at));
}
