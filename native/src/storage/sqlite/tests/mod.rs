use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::job::{format_id, now_micros, Failure, JobFilter, OutcomeKind, State, Status};

fn memory() -> SqliteStorage {
    SqliteStorage::open(SqliteConfig::new(MEMORY)).unwrap()
}

fn opts(task: &str) -> JobOptions {
    JobOptions::new(task)
}

fn claim(s: &SqliteStorage, limit: usize) -> Vec<ClaimedJob> {
    s.claim(&ClaimRequest {
        worker_id: "w1",
        queues: None,
        limit,
        lease: Duration::from_secs(30),
    })
    .unwrap()
}

fn payloads(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("p{i}").into_bytes()).collect()
}

fn success(job: &ClaimedJob, result: &[u8]) -> Outcome {
    Outcome {
        job: job.attempt_ref(),
        finished_at: now_micros(),
        kind: OutcomeKind::Success(result.to_vec()),
    }
}

fn failure(job: &ClaimedJob, retryable: bool) -> Outcome {
    Outcome {
        job: job.attempt_ref(),
        finished_at: now_micros(),
        kind: OutcomeKind::Failure(Failure {
            error_type: "ValueError".into(),
            message: format!("boom on attempt {}", job.attempt),
            traceback: "Traceback ...".into(),
            retryable,
        }),
    }
}

fn state(s: &SqliteStorage, id: i64) -> State {
    s.get_job(id).unwrap().unwrap().state
}

#[test]
fn claims_by_priority_then_due_time_then_enqueue_order() {
    let s = memory();
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
fn a_delayed_job_that_fell_due_runs_before_later_enqueues() {
    let s = memory();
    let mut delayed = opts("t");
    // Due a microsecond after enqueue: before the next enqueue's time.
    delayed.delay = Some(Duration::from_micros(1));
    let first = s.enqueue(&delayed, &payloads(1)).unwrap()[0];
    let later = s.enqueue(&opts("t"), &payloads(1)).unwrap()[0];
    assert_eq!(state(&s, first), State::Scheduled);
    assert_eq!(s.promote_due(now_micros()).unwrap(), None);
    let order: Vec<i64> = claim(&s, 10).iter().map(|j| j.id).collect();
    assert_eq!(order, vec![first, later]);
}

#[test]
fn batch_claims_take_each_job_once_and_start_an_attempt() {
    let s = memory();
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
    assert_eq!(job.state, State::Running);
    assert_eq!(job.attempt, 1);
    assert_eq!(job.worker_id.as_deref(), Some("w1"));
    assert!(job.lease_expires_at.unwrap() > now_micros());
    assert_eq!(a[0].payload, b"p0");
}

#[test]
fn claims_only_serve_the_requested_queues() {
    let s = memory();
    let mut emails = opts("t");
    emails.queue = "emails".into();
    let e = s.enqueue(&emails, &payloads(2)).unwrap();
    s.enqueue(&opts("t"), &payloads(2)).unwrap();
    let queues = vec!["emails".to_string(), "other".to_string()];
    let got = s
        .claim(&ClaimRequest {
            worker_id: "w",
            queues: Some(&queues),
            limit: 10,
            lease: Duration::from_secs(5),
        })
        .unwrap();
    assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), e);
    assert!(got.iter().all(|j| j.queue == "emails"));
}

#[test]
fn delayed_jobs_wait_for_their_time() {
    let s = memory();
    let mut delayed = opts("t");
    delayed.delay = Some(Duration::from_secs(60));
    let id = s.enqueue(&delayed, &payloads(1)).unwrap()[0];
    assert_eq!(state(&s, id), State::Scheduled);
    assert_eq!(state(&s, id).status(), Status::Pending);
    let due = s
        .promote_due(now_micros())
        .unwrap()
        .expect("a job is waiting");
    assert!(due > now_micros() + 50_000_000);
    assert!(claim(&s, 10).is_empty());
    // An hour later it is promoted and claimable.
    assert_eq!(s.promote_due(now_micros() + 3_600_000_000).unwrap(), None);
    assert_eq!(claim(&s, 10)[0].id, id);
}

#[test]
fn success_stores_the_result_and_is_final() {
    let s = memory();
    let id = s.enqueue(&opts("t"), &payloads(1)).unwrap()[0];
    assert_eq!(s.finished(id).unwrap(), None);
    let job = claim(&s, 1).remove(0);
    assert_eq!(
        s.complete(&[success(&job, b"42")]).unwrap(),
        vec![Applied::Complete]
    );
    let f = s.finished(id).unwrap().unwrap();
    assert_eq!(f.state, State::Complete);
    assert_eq!(f.result.as_deref(), Some(&b"42"[..]));
    let rec = s.get_job(id).unwrap().unwrap();
    assert!(rec.finished_at.is_some());
    assert_eq!(rec.lease_expires_at, None);
}

#[test]
fn failures_retry_then_die_after_max_retries() {
    let s = memory();
    let mut o = opts("t");
    o.max_retries = 2;
    o.retry_backoff = 0.0;
    let id = s.enqueue(&o, &payloads(1)).unwrap()[0];
    for attempt in 1..=3u32 {
        let job = claim(&s, 1).remove(0);
        assert_eq!(job.attempt, attempt);
        let applied = s.complete(&[failure(&job, true)]).unwrap();
        if attempt < 3 {
            assert!(matches!(applied[0], Applied::Retry(_)), "{applied:?}");
        } else {
            assert_eq!(applied, vec![Applied::Dead]);
        }
    }
    assert!(claim(&s, 1).is_empty());
    let f = s.finished(id).unwrap().unwrap();
    assert_eq!(f.state, State::Dead);
    let err = f.error.unwrap();
    assert_eq!((err.attempt, err.error_type.as_str()), (3, "ValueError"));
    let history = s.errors(id).unwrap();
    assert_eq!(
        history.iter().map(|e| e.attempt).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(
        s.get_job(id).unwrap().unwrap().error.as_deref(),
        Some("ValueError: boom on attempt 3")
    );
}

#[test]
fn retries_wait_for_their_backoff() {
    let s = memory();
    let mut o = opts("t");
    o.retry_backoff = 30.0;
    let id = s.enqueue(&o, &payloads(1)).unwrap()[0];
    let job = claim(&s, 1).remove(0);
    let Applied::Retry(at) = s.complete(&[failure(&job, true)]).unwrap()[0] else {
        panic!("expected a retry")
    };
    assert!(
        at >= now_micros() + 14_000_000,
        "at least half the 30 s backoff"
    );
    assert_eq!(state(&s, id).status(), Status::Failed);
    s.promote_due(now_micros()).unwrap();
    assert!(claim(&s, 1).is_empty());
    s.promote_due(at).unwrap();
    assert_eq!(claim(&s, 1)[0].attempt, 2);
}

#[test]
fn a_non_retryable_failure_is_dead_at_once() {
    let s = memory();
    let id = s.enqueue(&opts("t"), &payloads(1)).unwrap()[0];
    let job = claim(&s, 1).remove(0);
    assert_eq!(
        s.complete(&[failure(&job, false)]).unwrap(),
        vec![Applied::Dead]
    );
    assert_eq!(state(&s, id), State::Dead);
}

#[test]
fn completions_are_fenced_by_attempt() {
    let s = memory();
    let mut o = opts("t");
    o.retry_backoff = 0.0;
    let id = s.enqueue(&o, &payloads(1)).unwrap()[0];
    let first = claim(&s, 1).remove(0);
    // The lease expires; another worker takes the job over.
    let reaped = s.reap_expired(now_micros() + 60_000_000).unwrap();
    assert_eq!(reaped.len(), 1);
    let second = claim(&s, 1).remove(0);
    assert_eq!(second.attempt, 2);
    // The first worker's late result must not overwrite the second's.
    assert_eq!(
        s.complete(&[success(&first, b"stale")]).unwrap(),
        vec![Applied::Stale]
    );
    assert_eq!(
        s.complete(&[failure(&first, true)]).unwrap(),
        vec![Applied::Stale]
    );
    assert_eq!(state(&s, id), State::Running);
    assert_eq!(
        s.complete(&[success(&second, b"fresh")]).unwrap(),
        vec![Applied::Complete]
    );
    assert_eq!(
        s.finished(id).unwrap().unwrap().result.as_deref(),
        Some(&b"fresh"[..])
    );
    // A duplicate of an applied completion is stale too.
    assert_eq!(
        s.complete(&[success(&second, b"again")]).unwrap(),
        vec![Applied::Stale]
    );
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
    assert!(s.reap_expired(now_micros()).unwrap().is_empty());
    let later = now_micros() + 60_000_000;
    let r = s.reap_expired(later).unwrap();
    assert!(matches!(r[0].applied, Applied::Retry(_)));
    claim(&s, 1);
    let r = s.reap_expired(now_micros() + 60_000_000).unwrap();
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
    let in_a_minute = now_micros() + 60_000_000;
    let refs = [jobs[0].attempt_ref()];
    assert_eq!(s.renew_leases(&refs, in_a_minute + 60_000_000).unwrap(), 1);
    let reaped = s.reap_expired(in_a_minute).unwrap();
    assert_eq!(
        reaped.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![jobs[1].id]
    );
}

#[test]
fn release_hands_jobs_back_with_or_without_the_attempt() {
    let s = memory();
    let ids = s.enqueue(&opts("t"), &payloads(2)).unwrap();
    let jobs = claim(&s, 2);
    assert_eq!(s.release(&[jobs[0].attempt_ref()], true).unwrap(), 1);
    assert_eq!(s.release(&[jobs[1].attempt_ref()], false).unwrap(), 1);
    let again = claim(&s, 2);
    assert_eq!(
        again.iter().map(|j| j.id).collect::<Vec<_>>(),
        ids,
        "order kept"
    );
    assert_eq!((again[0].attempt, again[1].attempt), (1, 2));
    // A released attempt's late outcome is stale.
    assert_eq!(
        s.complete(&[success(&jobs[0], b"x")]).unwrap(),
        vec![Applied::Stale]
    );
}

#[test]
fn cancel_only_stops_jobs_that_have_not_started() {
    let s = memory();
    let ids = s.enqueue(&opts("t"), &payloads(2)).unwrap();
    let running = claim(&s, 1).remove(0);
    assert_eq!(running.id, ids[0]);
    assert!(!s.cancel(ids[0]).unwrap());
    assert!(s.cancel(ids[1]).unwrap());
    assert!(!s.cancel(ids[1]).unwrap(), "already cancelled");
    assert_eq!(s.finished(ids[1]).unwrap().unwrap().state, State::Cancelled);
    assert!(claim(&s, 10).is_empty());
}

#[test]
fn unknown_ids_are_not_found() {
    let s = memory();
    assert_eq!(s.get_job(12345).unwrap(), None);
    assert!(matches!(s.finished(12345), Err(Error::JobNotFound(id)) if id == format_id(12345)));
    assert!(!s.cancel(12345).unwrap());
}

#[test]
fn stats_count_public_statuses() {
    let s = memory();
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
    let s = memory();
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
    s.claim(&ClaimRequest {
        worker_id: "w",
        queues: None,
        limit: 1,
        lease: Duration::from_secs(1),
    })
    .unwrap();
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
fn purge_removes_old_completed_and_cancelled_jobs_only() {
    let s = memory();
    let ids = s.enqueue(&opts("t"), &payloads(3)).unwrap();
    let jobs = claim(&s, 2);
    s.complete(&[success(&jobs[0], b""), failure(&jobs[1], false)])
        .unwrap();
    s.cancel(ids[2]).unwrap();
    assert_eq!(s.purge_finished(now_micros() - 60_000_000).unwrap(), 0);
    assert_eq!(s.purge_finished(now_micros() + 1).unwrap(), 2);
    assert_eq!(s.get_job(ids[0]).unwrap(), None);
    assert_eq!(state(&s, ids[1]), State::Dead, "dead letters stay");
}

#[test]
fn two_memory_databases_are_separate_and_one_is_shared_by_its_threads() {
    let a = Arc::new(memory());
    let b = memory();
    a.enqueue(&opts("t"), &payloads(5)).unwrap();
    assert_eq!(b.stats().unwrap().get(Status::Pending), 0);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let a = a.clone();
            std::thread::spawn(move || {
                a.enqueue(&opts("t"), &payloads(10)).unwrap();
                a.stats().unwrap().get(Status::Pending)
            })
        })
        .collect();
    for t in threads {
        assert!(t.join().unwrap() >= 15);
    }
    assert_eq!(a.stats().unwrap().get(Status::Pending), 45);
}

#[test]
fn bad_options_are_refused_before_anything_is_written() {
    let s = memory();
    let mut o = opts("");
    assert!(matches!(
        s.enqueue(&o, &payloads(1)),
        Err(Error::InvalidArgument(_))
    ));
    o = opts("t");
    o.retry_backoff = f64::NAN;
    assert!(matches!(
        s.enqueue(&o, &payloads(1)),
        Err(Error::InvalidArgument(_))
    ));
    o = opts("t");
    o.queue = String::new();
    assert!(s.enqueue(&o, &payloads(1)).is_err());
    assert_eq!(s.stats().unwrap(), Stats::default());
}

#[test]
fn hot_queries_use_their_indexes() {
    let s = memory();
    let claim_plan = s.plan(
        "SELECT id FROM jobs WHERE status = 0 ORDER BY priority DESC, scheduled_at, id LIMIT 10",
    );
    assert!(claim_plan.contains("jobs_ready"), "{claim_plan}");
    assert!(
        !claim_plan.contains("TEMP B-TREE"),
        "claims must not sort: {claim_plan}"
    );
    let due = s.plan("UPDATE jobs SET status = 0 WHERE status IN (1, 4) AND scheduled_at <= 5");
    assert!(due.contains("jobs_due"), "{due}");
    let stats = s.plan("SELECT status, COUNT(*) FROM jobs WHERE status <> 0 GROUP BY status");
    assert!(stats.contains("jobs_status"), "{stats}");
    let purge =
        s.plan("DELETE FROM jobs WHERE status <> 0 AND status IN (3, 6) AND finished_at < 5");
    assert!(purge.contains("jobs_status"), "{purge}");
    let reap =
        s.plan("SELECT id FROM jobs WHERE status <> 0 AND status = 2 AND lease_expires_at < 5");
    assert!(reap.contains("jobs_status"), "{reap}");
}

mod file {
    use super::*;

    fn open(path: &std::path::Path) -> SqliteStorage {
        SqliteStorage::open(SqliteConfig::new(path.to_str().unwrap())).unwrap()
    }

    #[test]
    fn creates_parent_folders_and_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/jobs.db");
        let s = open(&path);
        s.enqueue(&opts("t"), &payloads(1)).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[test]
    fn jobs_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        let ids = open(&path).enqueue(&opts("t"), &payloads(3)).unwrap();
        let s = open(&path);
        assert_eq!(s.stats().unwrap().get(Status::Pending), 3);
        assert_eq!(claim(&s, 5).iter().map(|j| j.id).collect::<Vec<_>>(), ids);
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

    #[test]
    fn concurrent_claimers_never_share_a_job() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        open(&path).enqueue(&opts("t"), &payloads(2000)).unwrap();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let s = open(&path);
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

    #[test]
    fn refuses_a_file_another_library_has_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        drop(open(&path));
        // Any descriptor on the file that is not ours stands in for Python's
        // sqlite3 module holding it.
        let foreign = std::fs::File::open(&path).unwrap();
        let err = SqliteStorage::open(SqliteConfig::new(path.to_str().unwrap()))
            .err()
            .unwrap();
        assert!(matches!(err, Error::ForeignSqlite(_)), "{err}");
        drop(foreign);
        // Once it is closed, and while we hold the file, opening works.
        let first = open(&path);
        let second = open(&path);
        drop((first, second));
    }

    #[test]
    fn full_durability_is_accepted_and_bad_names_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = SqliteConfig::new(dir.path().join("full.db").to_str().unwrap());
        config.durability = Durability::parse("full").unwrap();
        SqliteStorage::open(config)
            .unwrap()
            .enqueue(&opts("t"), &payloads(1))
            .unwrap();
        assert!(Durability::parse("fast").is_err());
    }

    #[test]
    fn a_folder_is_not_a_database() {
        let dir = tempfile::tempdir().unwrap();
        let err = SqliteStorage::open(SqliteConfig::new(dir.path().to_str().unwrap()))
            .err()
            .unwrap();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }
}

mod cancellation_and_dead_letters {
    use super::*;
    use crate::storage::CancelRequest;

    #[test]
    fn request_cancel_cancels_pending_and_flags_running_jobs() {
        let s = memory();
        let ids = s.enqueue(&opts("t"), &payloads(2)).unwrap();
        let running = claim(&s, 1).remove(0);
        assert_eq!(s.request_cancel(ids[1]).unwrap(), CancelRequest::Cancelled);
        assert_eq!(state(&s, ids[1]), State::Cancelled);
        assert!(!s.cancel_requested(running.id).unwrap());
        assert_eq!(
            s.request_cancel(running.id).unwrap(),
            CancelRequest::Requested
        );
        assert!(s.cancel_requested(running.id).unwrap());
        assert_eq!(state(&s, running.id), State::Running, "it only asks");
        assert_eq!(
            s.request_cancel(ids[1]).unwrap(),
            CancelRequest::AlreadyFinal
        );
        assert_eq!(s.request_cancel(999).unwrap(), CancelRequest::NotFound);
    }

    #[test]
    fn a_task_that_stops_on_request_ends_cancelled() {
        let s = memory();
        let id = s.enqueue(&opts("t"), &payloads(1)).unwrap()[0];
        let job = claim(&s, 1).remove(0);
        s.request_cancel(id).unwrap();
        let outcome = Outcome {
            job: job.attempt_ref(),
            finished_at: now_micros(),
            kind: OutcomeKind::Cancelled,
        };
        assert_eq!(
            s.complete(std::slice::from_ref(&outcome)).unwrap(),
            vec![Applied::Cancelled]
        );
        assert_eq!(s.finished(id).unwrap().unwrap().state, State::Cancelled);
        assert_eq!(s.complete(&[outcome]).unwrap(), vec![Applied::Stale]);
    }

    #[test]
    fn a_failure_after_a_cancel_request_is_not_retried() {
        let s = memory();
        let mut o = opts("t");
        o.retry_backoff = 0.0;
        let id = s.enqueue(&o, &payloads(1)).unwrap()[0];
        let job = claim(&s, 1).remove(0);
        s.request_cancel(id).unwrap();
        assert_eq!(
            s.complete(&[failure(&job, true)]).unwrap(),
            vec![Applied::Cancelled]
        );
        assert_eq!(state(&s, id), State::Cancelled);
        assert_eq!(
            s.errors(id).unwrap().len(),
            1,
            "the failure is still on record"
        );
    }

    #[test]
    fn releasing_a_job_asked_to_stop_cancels_it() {
        let s = memory();
        let id = s.enqueue(&opts("t"), &payloads(1)).unwrap()[0];
        let job = claim(&s, 1).remove(0);
        s.request_cancel(id).unwrap();
        s.release(&[job.attempt_ref()], false).unwrap();
        assert_eq!(state(&s, id), State::Cancelled);
    }

    #[test]
    fn retry_dead_revives_with_the_same_options_and_fresh_attempts() {
        let s = memory();
        let mut o = opts("t");
        o.max_retries = 1;
        o.retry_backoff = 0.0;
        o.priority = 7;
        o.queue = "q".into();
        let id = s.enqueue(&o, &payloads(1)).unwrap()[0];
        for _ in 0..2 {
            let job = claim(&s, 1).remove(0);
            s.complete(&[failure(&job, true)]).unwrap();
        }
        assert_eq!(state(&s, id), State::Dead);
        assert!(!s.retry_dead(ids_not_dead(&s)).unwrap());
        assert!(s.retry_dead(id).unwrap());
        let job = claim(&s, 1).remove(0);
        assert_eq!(
            (job.id, job.attempt, job.priority, job.queue.as_str()),
            (id, 1, 7, "q")
        );
        assert_eq!(job.payload, b"p0");
        s.complete(&[success(&job, b"ok")]).unwrap();
        let errors = s.errors(id).unwrap();
        assert_eq!(
            errors.iter().map(|e| e.attempt).collect::<Vec<_>>(),
            vec![1, 2],
            "history kept"
        );
        assert!(!s.retry_dead(id).unwrap(), "only dead jobs");
    }

    fn ids_not_dead(s: &SqliteStorage) -> i64 {
        s.enqueue(&opts("other"), &payloads(1)).unwrap()[0]
    }

    #[test]
    fn purge_dead_deletes_only_old_dead_jobs() {
        let s = memory();
        let ids = s.enqueue(&opts("t"), &payloads(2)).unwrap();
        let jobs = claim(&s, 2);
        s.complete(&[failure(&jobs[0], false), success(&jobs[1], b"")])
            .unwrap();
        assert_eq!(s.purge_dead(now_micros() - 60_000_000).unwrap(), 0);
        assert_eq!(s.purge_dead(now_micros() + 1).unwrap(), 1);
        assert_eq!(s.get_job(ids[0]).unwrap(), None);
        assert!(s.errors(ids[0]).unwrap().is_empty());
        assert_eq!(state(&s, ids[1]), State::Complete);
    }
}

#[test]
fn checkpoint_moves_the_log_into_the_database_from_a_reader() {
    let dir = tempfile::tempdir().unwrap();
    let s =
        SqliteStorage::open(SqliteConfig::new(dir.path().join("c.db").to_str().unwrap())).unwrap();
    s.enqueue(&opts("t"), &payloads(500)).unwrap();
    let frames = |s: &SqliteStorage| -> (i64, i64) {
        s.writer
            .lock()
            .query_row("PRAGMA wal_checkpoint(NOOP)", [], |r| {
                Ok((r.get(1)?, r.get(2)?))
            })
            .unwrap()
    };
    let (log, done) = frames(&s);
    assert!(log > 0 && done < log, "{log} {done}");
    s.checkpoint().unwrap();
    let (log, done) = frames(&s);
    assert_eq!(done, log, "every frame copied");
    memory().checkpoint().unwrap();
}

#[test]
fn enqueue_claimed_claims_only_when_nothing_waits_ahead() {
    let s = memory();
    let claim = DirectClaim {
        worker_id: "local",
        lease: Duration::from_secs(30),
    };
    let (id, job) = s.enqueue_claimed(&opts("t"), b"direct", &claim).unwrap();
    let job = job.expect("claimed at once");
    assert_eq!(
        (job.id, job.attempt, job.token, job.payload.as_slice()),
        (id, 1, 1, &b"direct"[..])
    );
    let rec = s.get_job(id).unwrap().unwrap();
    assert_eq!((rec.state, rec.attempt), (State::Running, 1));
    assert_eq!(rec.worker_id.as_deref(), Some("local"));
    assert!(rec.lease_expires_at.unwrap() > now_micros());
    // Its completion is fenced like any claimed job's.
    assert_eq!(
        s.complete(&[success(&job, b"ok")]).unwrap(),
        vec![Applied::Complete]
    );

    // A job already waiting goes first: the new one is queued behind it.
    let waiting = s.enqueue(&opts("t"), &payloads(1)).unwrap()[0];
    let (queued, none) = s.enqueue_claimed(&opts("t"), b"later", &claim).unwrap();
    assert!(none.is_none());
    assert_eq!(claim_ids(&s), vec![waiting, queued]);

    // A delayed job is never claimed early.
    let mut delayed = opts("t");
    delayed.delay = Some(Duration::from_secs(60));
    let (id, none) = s.enqueue_claimed(&delayed, b"x", &claim).unwrap();
    assert!(none.is_none());
    assert_eq!(state(&s, id), State::Scheduled);
}

fn claim_ids(s: &SqliteStorage) -> Vec<i64> {
    claim(s, 100).iter().map(|j| j.id).collect()
}

#[test]
fn a_delay_past_the_end_of_time_saturates_instead_of_wrapping() {
    let s = memory();
    let mut forever = opts("t");
    forever.delay = Some(Duration::from_secs(u64::MAX / 2));
    let id = s.enqueue(&forever, &payloads(1)).unwrap()[0];
    let job = s.get_job(id).unwrap().unwrap();
    assert_eq!(job.scheduled_at, i64::MAX);
    assert_eq!(job.state, State::Scheduled);
    assert!(claim(&s, 1).is_empty());
}

#[test]
fn errors_stay_in_the_order_they_happened_across_retry_dead() {
    let s = memory();
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
