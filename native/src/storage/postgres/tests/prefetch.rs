//! Claims that hold jobs without starting them (a worker's prefetch), and
//! the filters a worker claims through.

use super::*;
use crate::job::{AttemptRef, Status};
use crate::storage::JobScope;

fn request<'a>(start: usize, hold: usize) -> ClaimRequest<'a> {
    ClaimRequest {
        hold,
        ..ClaimRequest::to_run("w", None, start, Duration::from_secs(30))
    }
}

#[test]
fn a_claim_starts_the_best_jobs_and_holds_the_rest_unstarted() {
    let (_scratch, s) = storage!();
    let ids = s.enqueue(&opts("t"), &payloads(4)).unwrap();
    let got = s.claim(&request(1, 2)).unwrap();
    assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), ids[..3]);
    assert_eq!(
        got.iter().map(|j| j.running).collect::<Vec<_>>(),
        [true, false, false]
    );
    let first = s.get_job(ids[0]).unwrap().unwrap();
    assert_eq!(first.state, State::Running);
    assert!(first.started_at.is_some());
    let held = s.get_job(ids[1]).unwrap().unwrap();
    assert_eq!(held.state.status(), Status::Claimed);
    assert_eq!(held.started_at, None, "held, not started");
    assert_eq!(held.worker_id.as_deref(), Some("w"));
    assert_eq!(s.stats().unwrap().get(Status::Claimed), 2);
    assert_eq!(state(&s, ids[3]), State::Ready);
}

#[test]
fn a_held_job_starts_once_and_a_cancelled_one_never() {
    let (_scratch, s) = storage!();
    let ids = s.enqueue(&opts("t"), &payloads(2)).unwrap();
    let held: Vec<AttemptRef> = s
        .claim(&request(0, 2))
        .unwrap()
        .iter()
        .map(ClaimedJob::attempt_ref)
        .collect();
    assert!(s.cancel(ids[1]).unwrap(), "a held job has not started");
    assert_eq!(s.start_claimed(&held).unwrap(), [true, false]);
    assert_eq!(state(&s, ids[0]), State::Running);
    assert_eq!(state(&s, ids[1]), State::Cancelled);
    assert_eq!(
        s.start_claimed(&held[..1]).unwrap(),
        [false],
        "started once"
    );
}

#[test]
fn held_jobs_keep_their_lease_and_go_back_unstarted() {
    let (_scratch, s) = storage!();
    let ids = s.enqueue(&opts("t"), &payloads(2)).unwrap();
    let held: Vec<AttemptRef> = s
        .claim(&ClaimRequest {
            lease: Duration::from_millis(1),
            ..request(0, 2)
        })
        .unwrap()
        .iter()
        .map(ClaimedJob::attempt_ref)
        .collect();
    assert_eq!(
        s.renew_leases(&held[..1], Duration::from_secs(60)).unwrap(),
        1
    );
    // The other's lease runs out: its worker died before starting it. It
    // is ready again, its attempt not counted and no failure recorded.
    let reaped = eventually(Duration::from_secs(5), || {
        Some(s.reap_expired().unwrap()).filter(|r| !r.is_empty())
    });
    assert_eq!(reaped.iter().map(|r| r.id).collect::<Vec<_>>(), [ids[1]]);
    let job = s.get_job(ids[1]).unwrap().unwrap();
    assert_eq!((job.state, job.attempt), (State::Ready, 0));
    assert!(s.errors(ids[1]).unwrap().is_empty());
    assert_eq!(s.release(&held[..1], true).unwrap(), 1);
    let back = s.get_job(ids[0]).unwrap().unwrap();
    assert_eq!((back.state, back.attempt), (State::Ready, 0));
}

#[test]
fn claims_take_only_the_tasks_a_worker_has() {
    let (_scratch, s) = storage!();
    let mine = s.enqueue(&opts("mine"), &payloads(2)).unwrap();
    s.enqueue(&opts("theirs"), &payloads(2)).unwrap();
    let tasks = vec!["mine".to_string(), "unused \"quoted\" name".to_string()];
    let got = s
        .claim(&ClaimRequest {
            tasks: Some(&tasks),
            ..request(10, 0)
        })
        .unwrap();
    assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), mine);
    let scope = JobScope {
        queues: None,
        tasks: Some(&tasks),
    };
    assert_eq!(s.best_ready_priority(scope).unwrap(), None);
    assert_eq!(s.best_ready_priority(JobScope::default()).unwrap(), Some(0));
}
