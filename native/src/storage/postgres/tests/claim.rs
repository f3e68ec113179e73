//! Claim order, batches, filters, and claimers racing on one schema.

use super::*;

#[test]
fn claims_by_priority_then_due_time_then_enqueue_order() {
    let (_scratch, s) = storage!();
    let low = s.enqueue(&opts("t"), &payloads(3)).unwrap();
    let mut high = opts("t");
    high.priority = 10;
    let high = s.enqueue(&high, &payloads(2)).unwrap();
    let mut mid = opts("t");
    mid.priority = 5;
    let mid = s.enqueue(&mid, &payloads(1)).unwrap();
    let order: Vec<i64> = claim(&s, 100).iter().map(|j| j.id).collect();
    let expected: Vec<i64> = high.iter().chain(&mid).chain(&low).copied().collect();
    assert_eq!(order, expected);
}

#[test]
fn batch_claims_take_each_job_once_and_start_an_attempt() {
    let (_scratch, s) = storage!();
    let ids = s.enqueue(&opts("t"), &payloads(250)).unwrap();
    let a = claim(&s, 100);
    let b = claim(&s, 100);
    let c = claim(&s, 100);
    assert_eq!((a.len(), b.len(), c.len()), (100, 100, 50));
    let mut seen: Vec<i64> = a.iter().chain(&b).chain(&c).map(|j| j.id).collect();
    assert_eq!(seen, ids, "claims follow enqueue order");
    seen.dedup();
    assert_eq!(seen.len(), 250);
    assert!(claim(&s, 10).is_empty());
    let job = s.get_job(ids[0]).unwrap().unwrap();
    assert_eq!((job.state, job.attempt), (State::Running, 1));
    assert_eq!(job.worker_id.as_deref(), Some("w1"));
    assert!(job.lease_expires_at.unwrap() > job.started_at.unwrap() + 29_000_000);
    assert_eq!(a[0].payload, b"p0");
}

#[test]
fn claims_only_serve_the_requested_queues_and_tasks() {
    let (_scratch, s) = storage!();
    let mut emails = opts("mail");
    emails.queue = "emails".into();
    let e = s.enqueue(&emails, &payloads(2)).unwrap();
    s.enqueue(&opts("t"), &payloads(2)).unwrap();
    let mut other_task = opts("other");
    other_task.queue = "emails".into();
    s.enqueue(&other_task, &payloads(1)).unwrap();
    let queues = vec!["emails".to_string(), "nope".to_string()];
    let tasks = vec!["mail".to_string()];
    let got = s
        .claim(&ClaimRequest {
            tasks: Some(&tasks),
            ..ClaimRequest::to_run("w", Some(&queues), 10, Duration::from_secs(5))
        })
        .unwrap();
    assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), e);
    let mut floor = opts("t");
    floor.priority = 9;
    let best = s.enqueue(&floor, &payloads(1)).unwrap();
    let above = s
        .claim(&ClaimRequest {
            above_priority: Some(5),
            ..ClaimRequest::to_run("w", None, 10, Duration::from_secs(5))
        })
        .unwrap();
    assert_eq!(above.iter().map(|j| j.id).collect::<Vec<_>>(), best);
}

#[test]
fn concurrent_claimers_never_share_a_job() {
    let Some(scratch) = Scratch::new() else {
        return;
    };
    scratch.open().enqueue(&opts("t"), &payloads(2000)).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let config = scratch.config();
            std::thread::spawn(move || {
                let s = PostgresStorage::open(config).unwrap();
                let mut mine = Vec::new();
                loop {
                    let got = claim(&s, 37);
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|j| j.id));
                }
            })
        })
        .collect();
    let mut all: Vec<i64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(all.len(), 2000);
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 2000);
}
