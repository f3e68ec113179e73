//! Promotion, lease reaping, purges, checkpoints and the idle check.

use super::*;

#[test]
fn delayed_jobs_wait_for_their_time() {
    let s = memory();
    let mut delayed = opts("t");
    delayed.delay = Some(Duration::from_secs(60));
    let id = s.enqueue(&delayed, &payloads(1)).unwrap()[0];
    assert_eq!(state(&s, id), State::Scheduled);
    assert_eq!(state(&s, id).status(), Status::Pending);
    let due = s.promote_due().unwrap().expect("a job is waiting");
    assert!(due > now_micros() + 50_000_000);
    assert!(claim(&s, 10).is_empty());
    // An hour later it is promoted and claimable.
    s.travel(Duration::from_secs(3600));
    assert_eq!(s.promote_due().unwrap(), None);
    assert_eq!(claim(&s, 10)[0].id, id);
}

#[test]
fn expired_leases_are_recovered_until_attempts_run_out() {
    let s = memory();
    let mut o = opts("t");
    o.max_retries = 1;
    o.retry_backoff = 0.0;
    let id = s.enqueue(&o, &payloads(1)).unwrap()[0];
    claim(&s, 1);
    // Leases that have not expired are left alone.
    assert!(s.reap_expired().unwrap().is_empty());
    s.travel(Duration::from_secs(60));
    let r = s.reap_expired().unwrap();
    assert!(matches!(r[0].applied, Applied::Retry(_)));
    claim(&s, 1);
    s.travel(Duration::from_secs(60));
    let r = s.reap_expired().unwrap();
    assert_eq!(
        r,
        vec![ReapedJob {
            id,
            applied: Applied::Dead
        }]
    );
    let err = s.finished(id).unwrap().unwrap().error.unwrap();
    assert_eq!(err.error_type, "WorkerLost");
}

#[test]
fn renewed_leases_are_not_reaped() {
    let s = memory();
    s.enqueue(&opts("t"), &payloads(2)).unwrap();
    let jobs = claim(&s, 2);
    let refs = [jobs[0].attempt_ref()];
    assert_eq!(s.renew_leases(&refs, Duration::from_secs(120)).unwrap(), 1);
    s.travel(Duration::from_secs(60));
    let reaped = s.reap_expired().unwrap();
    assert_eq!(
        reaped.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![jobs[1].id]
    );
}

#[test]
fn purge_removes_old_completed_and_cancelled_jobs_only() {
    let s = memory();
    let ids = s.enqueue(&opts("t"), &payloads(3)).unwrap();
    let jobs = claim(&s, 2);
    s.complete(&[success(&jobs[0], b""), failure(&jobs[1], false)])
        .unwrap();
    s.cancel(ids[2]).unwrap();
    assert_eq!(s.purge_finished(Duration::from_secs(60)).unwrap(), 0);
    s.travel(Duration::from_micros(1));
    assert_eq!(s.purge_finished(Duration::ZERO).unwrap(), 2);
    assert_eq!(s.get_job(ids[0]).unwrap(), None);
    assert_eq!(state(&s, ids[1]), State::Dead, "dead letters stay");
}

#[test]
fn purge_dead_deletes_only_old_dead_jobs() {
    let s = memory();
    let ids = s.enqueue(&opts("t"), &payloads(2)).unwrap();
    let jobs = claim(&s, 2);
    s.complete(&[failure(&jobs[0], false), success(&jobs[1], b"")])
        .unwrap();
    assert_eq!(s.purge_dead(Duration::from_secs(60)).unwrap(), 0);
    s.travel(Duration::from_micros(1));
    assert_eq!(s.purge_dead(Duration::ZERO).unwrap(), 1);
    assert_eq!(s.get_job(ids[0]).unwrap(), None);
    assert!(s.errors(ids[0]).unwrap().is_empty());
    assert_eq!(state(&s, ids[1]), State::Complete);
}

#[test]
fn checkpoint_moves_a_long_log_into_the_database_and_leaves_a_short_one() {
    let dir = tempfile::tempdir().unwrap();
    let s =
        SqliteStorage::open(SqliteConfig::new(dir.path().join("c.db").to_str().unwrap())).unwrap();
    let frames = |s: &SqliteStorage| -> (i64, i64) {
        s.writer
            .lock()
            .query_row("PRAGMA wal_checkpoint(NOOP)", [], |r| {
                Ok((r.get(1)?, r.get(2)?))
            })
            .unwrap()
    };
    // A short log stays: emptying it would cost the next commit a sync.
    s.enqueue(&opts("t"), &payloads(10)).unwrap();
    let (short, _) = frames(&s);
    s.checkpoint().unwrap();
    let (log, done) = frames(&s);
    assert!(log == short && done < log, "{log} {done}");
    // A long one is copied in, from a reader.
    let big = vec![7u8; 4096];
    while frames(&s).0 < 1200 {
        s.enqueue(&opts("t"), &vec![big.clone(); 50]).unwrap();
    }
    let (log, done) = frames(&s);
    assert!(done < log, "{log} {done}");
    s.checkpoint().unwrap();
    let (log, done) = frames(&s);
    assert_eq!(done, log, "every frame copied");
    memory().checkpoint().unwrap();
}

#[test]
fn a_commit_checkpoints_by_itself_only_past_sixteen_megabytes() {
    let dir = tempfile::tempdir().unwrap();
    let s =
        SqliteStorage::open(SqliteConfig::new(dir.path().join("c.db").to_str().unwrap())).unwrap();
    let big = vec![7u8; 4096];
    let mut most = 0;
    for _ in 0..100 {
        s.enqueue(&opts("t"), &vec![big.clone(); 50]).unwrap();
        let log: i64 = s
            .writer
            .lock()
            .query_row("PRAGMA wal_checkpoint(NOOP)", [], |r| r.get(1))
            .unwrap();
        most = most.max(log);
    }
    // 100 x 50 pages of payload and more is above 4000 frames: some commit
    // must have checkpointed, so the log restarted and stayed below it.
    assert!(most >= 1000, "{most}");
    let log: i64 = s
        .writer
        .lock()
        .query_row("PRAGMA wal_checkpoint(NOOP)", [], |r| r.get(1))
        .unwrap();
    assert!(log < 5000, "{log}");
}

#[test]
fn another_connection_sees_work_and_wakes_the_idle_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let worker = open(&path);
    let producer = open(&path);
    assert!(!worker.external_change().unwrap());
    producer.enqueue(&opts("t"), &payloads(4)).unwrap();
    assert!(worker.external_change().unwrap());
    assert!(!worker.external_change().unwrap(), "reported once");
    assert_eq!(claim(&worker, 10).len(), 4);
    // Its own writes do not count as external.
    worker.enqueue(&opts("t"), &payloads(1)).unwrap();
    assert!(!worker.external_change().unwrap());
}
