//! Promotion, lease reaping and purges, all by the server's clock.

use super::*;

#[test]
fn delayed_jobs_wait_for_their_time() {
    let (_scratch, s) = storage!();
    let mut delayed = opts("t");
    delayed.delay = Some(Duration::from_secs(60));
    let id = s.enqueue(&delayed, &payloads(1)).unwrap()[0];
    assert_eq!(state(&s, id), State::Scheduled);
    let due = s.promote_due().unwrap().expect("a job is waiting");
    // In this process's clock, about a minute from now.
    assert!(due > now_micros() + 50_000_000 && due < now_micros() + 70_000_000);
    assert!(claim(&s, 10).is_empty());
    let mut soon = opts("t");
    soon.delay = Some(Duration::from_millis(50));
    let soon = s.enqueue(&soon, &payloads(1)).unwrap()[0];
    let got = eventually(Duration::from_secs(5), || {
        s.promote_due().unwrap();
        claim(&s, 10).pop()
    });
    assert_eq!(got.id, soon);
}

#[test]
fn expired_leases_are_recovered_until_attempts_run_out() {
    let (_scratch, s) = storage!();
    let mut o = opts("t");
    o.max_retries = 1;
    o.retry_backoff = 0.0;
    let id = s.enqueue(&o, &payloads(1)).unwrap()[0];
    let short = || {
        s.claim(&ClaimRequest::to_run(
            "w1",
            None,
            1,
            Duration::from_millis(20),
        ))
        .unwrap()
    };
    short();
    let expired = || {
        eventually(Duration::from_secs(5), || {
            Some(s.reap_expired().unwrap()).filter(|r| !r.is_empty())
        })
    };
    let r = expired();
    assert!(matches!(r[0].applied, Applied::Retry(_)));
    short();
    assert_eq!(
        expired(),
        vec![ReapedJob {
            id,
            applied: Applied::Dead
        }]
    );
    let err = s.finished(id).unwrap().unwrap().error.unwrap();
    assert_eq!(err.error_type, "WorkerLost");
    assert!(err.message.contains("w1"), "{}", err.message);
}

#[test]
fn renewed_leases_are_not_reaped() {
    let (_scratch, s) = storage!();
    s.enqueue(&opts("t"), &payloads(2)).unwrap();
    let jobs = s
        .claim(&ClaimRequest::to_run(
            "w",
            None,
            2,
            Duration::from_millis(20),
        ))
        .unwrap();
    let refs = [jobs[0].attempt_ref()];
    assert_eq!(s.renew_leases(&refs, Duration::from_secs(60)).unwrap(), 1);
    let reaped = eventually(Duration::from_secs(5), || {
        Some(s.reap_expired().unwrap()).filter(|r| !r.is_empty())
    });
    assert_eq!(
        reaped.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![jobs[1].id]
    );
}

#[test]
fn purge_removes_old_completed_and_cancelled_jobs_only() {
    let (_scratch, s) = storage!();
    let ids = s.enqueue(&opts("t"), &payloads(3)).unwrap();
    let jobs = claim(&s, 2);
    s.complete(&[success(&jobs[0], b""), failure(&jobs[1], false)])
        .unwrap();
    s.cancel(ids[2]).unwrap();
    assert_eq!(s.purge_finished(Duration::from_secs(60)).unwrap(), 0);
    let purged = eventually(Duration::from_secs(5), || {
        Some(s.purge_finished(Duration::ZERO).unwrap()).filter(|n| *n > 0)
    });
    assert_eq!(purged, 2);
    assert_eq!(s.get_job(ids[0]).unwrap(), None);
    assert_eq!(state(&s, ids[1]), State::Dead, "dead letters stay");
}

#[test]
fn purge_dead_deletes_only_old_dead_jobs() {
    let (_scratch, s) = storage!();
    let ids = s.enqueue(&opts("t"), &payloads(2)).unwrap();
    let jobs = claim(&s, 2);
    s.complete(&[failure(&jobs[0], false), success(&jobs[1], b"")])
        .unwrap();
    assert_eq!(s.purge_dead(Duration::from_secs(60)).unwrap(), 0);
    let purged = eventually(Duration::from_secs(5), || {
        Some(s.purge_dead(Duration::ZERO).unwrap()).filter(|n| *n > 0)
    });
    assert_eq!(purged, 1);
    assert_eq!(s.get_job(ids[0]).unwrap(), None);
    assert!(s.errors(ids[0]).unwrap().is_empty());
    assert_eq!(state(&s, ids[1]), State::Complete);
}
