//! How attempts end: results, retries, fencing, release, cancellation and
//! reviving dead jobs.

use super::*;
use crate::storage::CancelRequest;

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
    s.promote_due().unwrap();
    assert!(claim(&s, 1).is_empty());
    s.travel(Duration::from_micros((at - now_micros()) as u64));
    s.promote_due().unwrap();
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
    s.travel(Duration::from_secs(60));
    let reaped = s.reap_expired().unwrap();
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
fn cancel_requests_picks_the_requested_jobs_out_of_many() {
    let s = memory();
    s.enqueue(&opts("t"), &payloads(150)).unwrap();
    let running = claim(&s, 150);
    let asked: Vec<i64> = [3, 64, 65, 149].iter().map(|&i| running[i].id).collect();
    for &id in &asked {
        assert_eq!(s.request_cancel(id).unwrap(), CancelRequest::Requested);
    }
    let all: Vec<i64> = running.iter().map(|job| job.id).collect();
    let mut found = s.cancel_requests(&all).unwrap();
    found.sort();
    assert_eq!(
        found, asked,
        "across lookups of 64 ids and a padded last one"
    );
    assert_eq!(s.cancel_requests(&all[..3]).unwrap(), Vec::<i64>::new());
    assert_eq!(s.cancel_requests(&[]).unwrap(), Vec::<i64>::new());
}

#[test]
fn a_task_that_stops_on_request_ends_cancelled() {
    let s = memory();
    let id = s.enqueue(&opts("t"), &payloads(1)).unwrap()[0];
    let job = claim(&s, 1).remove(0);
    s.request_cancel(id).unwrap();
    let outcome = Outcome {
        job: job.attempt_ref(),
        started_at: None,
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
