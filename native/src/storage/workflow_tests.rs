//! The jobs half's storage operations (unique keys, dependencies and their
//! settling, feeds, expiry, progress), specified once for every backend:
//! each backend's tests call these with its storage, and a way to put a
//! job's expiry in the past (SQLite's clock is the process's, PostgreSQL's
//! the server's, so neither can simply wait).

use std::time::Duration;

use super::*;
use crate::error::Error;
use crate::job::{
    format_id, now_micros, DependencyMode, Failure, Feed, GraphNode, JobOptions, OutcomeKind,
    State, Status,
};

fn node(task: &str, payload: &str) -> GraphNode {
    GraphNode::new(JobOptions::new(task), payload.as_bytes().to_vec())
}

fn after(mut n: GraphNode, parents: &[usize]) -> GraphNode {
    n.after = parents.to_vec();
    n
}

fn claim(s: &dyn Storage) -> Vec<ClaimedJob> {
    s.claim(&ClaimRequest::to_run(
        "w1",
        None,
        100,
        Duration::from_secs(30),
    ))
    .unwrap()
}

fn claimed_ids(s: &dyn Storage) -> Vec<i64> {
    let mut ids: Vec<i64> = claim(s).iter().map(|j| j.id).collect();
    ids.sort_unstable();
    ids
}

fn outcome(job: &ClaimedJob, kind: OutcomeKind) -> Outcome {
    Outcome {
        job: job.attempt_ref(),
        started_at: None,
        finished_at: now_micros(),
        kind,
    }
}

fn succeed(s: &dyn Storage, jobs: &[ClaimedJob]) {
    let outcomes: Vec<Outcome> = jobs
        .iter()
        .map(|j| outcome(j, OutcomeKind::Success(format!("r{}", j.id).into_bytes())))
        .collect();
    let applied = s.complete(&outcomes).unwrap();
    assert!(
        applied.iter().all(|a| *a == Applied::Complete),
        "{applied:?}"
    );
}

fn die(s: &dyn Storage, job: &ClaimedJob) {
    let failure = Failure {
        error_type: "ValueError".into(),
        message: "bad".into(),
        traceback: String::new(),
        retryable: false,
    };
    let applied = s
        .complete(&[outcome(job, OutcomeKind::Failure(failure))])
        .unwrap();
    assert_eq!(applied, vec![Applied::Dead]);
}

fn state(s: &dyn Storage, id: i64) -> State {
    s.get_job(id).unwrap().unwrap().state
}

pub fn a_live_key_returns_the_live_job_and_a_final_one_frees_it(s: &dyn Storage) {
    let keyed = |payload: &str| {
        let mut n = node("t", payload);
        n.unique_key = Some("k".into());
        n
    };
    let first = s.enqueue_graph(&[keyed("a")]).unwrap()[0];
    // Again, and twice within one call: the live job each time.
    let again = s.enqueue_graph(&[keyed("b"), keyed("c")]).unwrap();
    assert_eq!(again, vec![first, first]);
    let record = s.get_job(first).unwrap().unwrap();
    assert_eq!(record.unique_key.as_deref(), Some("k"));
    assert_eq!(s.stats().unwrap().get(Status::Pending), 1);
    // Running still holds the key.
    let running = claim(s);
    assert_eq!(s.enqueue_graph(&[keyed("d")]).unwrap(), vec![first]);
    succeed(s, &running);
    let second = s.enqueue_graph(&[keyed("e")]).unwrap()[0];
    assert_ne!(second, first, "a final job frees its key");
    assert!(s.cancel(second).unwrap());
    assert_ne!(s.enqueue_graph(&[keyed("f")]).unwrap()[0], second);
}

pub fn dependents_wait_and_completions_release_and_feed_them(s: &dyn Storage) {
    let mut join = after(node("join", "j"), &[1, 2]);
    join.feed = Feed::All;
    let mut step = after(node("step", "s"), &[0]);
    step.feed = Feed::One;
    let ids = s
        .enqueue_graph(&[
            node("root", "r"),
            step,
            after(node("side", "x"), &[0]),
            join,
        ])
        .unwrap();
    for &id in &ids[1..] {
        assert_eq!(state(s, id), State::Waiting);
        assert_eq!(
            s.get_job(id).unwrap().unwrap().state.status(),
            Status::Pending
        );
    }
    let (deps, dependents) = s.links(ids[3]).unwrap();
    assert_eq!((deps, dependents), (vec![ids[1], ids[2]], vec![]));
    assert_eq!(s.links(ids[0]).unwrap().1, vec![ids[1], ids[2]]);
    // Only the root is claimable; its completion releases both children.
    let root = claim(s);
    assert_eq!(root.iter().map(|j| j.id).collect::<Vec<_>>(), vec![ids[0]]);
    assert_eq!(root[0].feed, Feed::None);
    succeed(s, &root);
    let children = claim(s);
    let mut child_ids: Vec<i64> = children.iter().map(|j| j.id).collect();
    child_ids.sort_unstable();
    assert_eq!(child_ids, vec![ids[1], ids[2]]);
    let fed = children.iter().find(|j| j.id == ids[1]).unwrap();
    assert_eq!(fed.feed, Feed::One);
    assert_eq!(
        s.dependency_results(ids[1]).unwrap(),
        vec![Some(format!("r{}", ids[0]).into_bytes())]
    );
    // One completion of two: the join still waits; both, in one batch: ready.
    succeed(s, &children[..1]);
    assert_eq!(state(s, ids[3]), State::Waiting);
    succeed(s, &children[1..]);
    let join = claim(s);
    assert_eq!(join.len(), 1);
    assert_eq!(join[0].feed, Feed::All);
    assert_eq!(
        s.dependency_results(ids[3]).unwrap(),
        vec![
            Some(format!("r{}", ids[1]).into_bytes()),
            Some(format!("r{}", ids[2]).into_bytes())
        ],
        "in dependency order"
    );
}

pub fn a_failure_cancels_dependents_to_any_depth(s: &dyn Storage) {
    let ids = s
        .enqueue_graph(&[
            node("a", "0"),
            after(node("b", "1"), &[0]),
            after(node("c", "2"), &[1]),
            after(node("d", "3"), &[2]),
        ])
        .unwrap();
    let root = claim(s);
    die(s, &root[0]);
    let expected = format!("dependency {} (a) died", format_id(ids[0]));
    for &id in &ids[1..] {
        let finished = s.finished(id).unwrap().expect("final");
        assert_eq!(finished.state, State::Cancelled);
        let error = finished.error.expect("the failure that cancelled it");
        assert_eq!(error.error_type, "DependencyFailed");
        assert_eq!(error.message, expected, "every job names the failed step");
    }
    assert_eq!(s.stats().unwrap().get(Status::Cancelled), 3);
    // Reviving the dependency leaves them cancelled.
    assert!(s.retry_dead(ids[0]).unwrap());
    succeed(s, &claim(s));
    assert_eq!(state(s, ids[3]), State::Cancelled);
    assert!(claim(s).is_empty());
}

pub fn finish_mode_runs_whatever_became_of_the_dependency(s: &dyn Storage) {
    let mut lane = after(node("next", "n"), &[0]);
    lane.mode = DependencyMode::Finish;
    let ids = s.enqueue_graph(&[node("first", "f"), lane]).unwrap();
    die(s, &claim(s)[0]);
    assert_eq!(claimed_ids(s), vec![ids[1]]);
    assert_eq!(s.dependency_results(ids[1]).unwrap(), vec![None]);
}

pub fn cancelling_a_dependency_or_a_waiting_job_cascades(s: &dyn Storage) {
    let ids = s
        .enqueue_graph(&[
            node("a", "0"),
            after(node("b", "1"), &[0]),
            after(node("c", "2"), &[1]),
        ])
        .unwrap();
    // The waiting middle job itself: its dependent follows, the root stays.
    assert!(s.cancel(ids[1]).unwrap());
    assert_eq!(state(s, ids[2]), State::Cancelled);
    assert_eq!(state(s, ids[0]), State::Ready);
    let message = s.finished(ids[2]).unwrap().unwrap().error.unwrap().message;
    assert_eq!(
        message,
        format!("dependency {} (b) was cancelled", format_id(ids[1]))
    );
    assert_eq!(s.request_cancel(ids[0]).unwrap(), CancelRequest::Cancelled);
}

pub fn dependencies_are_checked_and_settled_at_enqueue(s: &dyn Storage) {
    let unknown = 0x00ab_cdef;
    let mut orphan = node("t", "o");
    orphan.depends_on = vec![unknown];
    let err = s.enqueue_graph(&[node("t", "first"), orphan]).unwrap_err();
    assert!(
        matches!(&err, Error::JobNotFound(id) if *id == format_id(unknown)),
        "{err}"
    );
    assert_eq!(s.stats().unwrap(), Stats::default(), "nothing stored");
    let done = s
        .enqueue(&JobOptions::new("done"), &[b"d".to_vec()])
        .unwrap()[0];
    let dead = s
        .enqueue(&JobOptions::new("dead"), &[b"x".to_vec()])
        .unwrap()[0];
    let jobs = claim(s);
    succeed(s, &jobs[..1]);
    die(s, &jobs[1]);
    let mut fine = node("t", "fine");
    fine.depends_on = vec![done];
    let mut doomed = node("t", "doomed");
    doomed.depends_on = vec![done, dead];
    let mut lenient = node("t", "lenient");
    lenient.depends_on = vec![dead];
    lenient.mode = DependencyMode::Finish;
    let ids = s.enqueue_graph(&[fine, doomed, lenient]).unwrap();
    assert_eq!(state(s, ids[0]), State::Ready);
    assert_eq!(state(s, ids[1]), State::Cancelled);
    let error = s.finished(ids[1]).unwrap().unwrap().error.unwrap();
    assert_eq!(
        error.message,
        format!("dependency {} (dead) died", format_id(dead))
    );
    assert_eq!(state(s, ids[2]), State::Ready);
    let mut twice = node("t", "twice");
    twice.depends_on = vec![done, done];
    assert!(matches!(
        s.enqueue_graph(&[twice]),
        Err(Error::InvalidArgument(_))
    ));
}

/// `expire(id)`: puts job `id`'s expiry in the past.
pub fn an_expired_job_is_never_claimed_and_ends_expired(s: &dyn Storage, expire: &dyn Fn(i64)) {
    let mut expiring = node("t", "e");
    expiring.expires = Some(Duration::from_secs(3600));
    let ids = s
        .enqueue_graph(&[expiring, after(node("t", "child"), &[0])])
        .unwrap();
    let record = s.get_job(ids[0]).unwrap().unwrap();
    assert!(record.expires_at.unwrap() > record.created_at);
    expire(ids[0]);
    assert!(claim(s).is_empty(), "an expired job is passed over");
    s.promote_due().unwrap();
    assert_eq!(state(s, ids[0]), State::Expired);
    assert_eq!(s.stats().unwrap().get(Status::Expired), 1);
    let listed = s
        .list_jobs(&JobFilter {
            status: Some(Status::Expired),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        listed.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![ids[0]]
    );
    let error = s.finished(ids[1]).unwrap().unwrap().error.unwrap();
    assert_eq!(
        error.message,
        format!("dependency {} (t) expired", format_id(ids[0]))
    );
    // Held as prefetch when it expired: it does not start.
    let mut held = node("t", "held");
    held.expires = Some(Duration::from_secs(3600));
    let id = s.enqueue_graph(&[held]).unwrap()[0];
    let mut request = ClaimRequest::to_run("w1", None, 0, Duration::from_secs(30));
    request.hold = 1;
    let claimed = s.claim(&request).unwrap();
    expire(id);
    assert_eq!(
        s.start_claimed(&[claimed[0].attempt_ref()]).unwrap(),
        vec![false]
    );
    // Handed back (its lease ran out, say): never claimed, and it ends expired.
    s.release(&[claimed[0].attempt_ref()], true).unwrap();
    assert!(claim(s).is_empty());
    s.promote_due().unwrap();
    assert_eq!(state(s, id), State::Expired);
}

pub fn metadata_and_progress_are_stored(s: &dyn Storage) {
    let mut tagged = node("t", "m");
    tagged.metadata = Some(r#"{"tenant":"acme"}"#.into());
    let id = s.enqueue_graph(&[tagged]).unwrap()[0];
    let job = claim(s);
    s.record_progress(&[(id, 10)]).unwrap();
    s.record_progress(&[(id, 55)]).unwrap();
    let record = s.get_job(id).unwrap().unwrap();
    assert_eq!(record.metadata.as_deref(), Some(r#"{"tenant":"acme"}"#));
    assert_eq!(record.progress, Some(55));
    succeed(s, &job);
    assert_eq!(s.get_job(id).unwrap().unwrap().progress, Some(55));
}

pub fn a_revived_job_keeps_its_key_unless_another_took_it(s: &dyn Storage) {
    let keyed = |key: &str| {
        let mut n = node("t", key);
        n.unique_key = Some(key.into());
        n
    };
    let lone = s.enqueue_graph(&[keyed("lone")]).unwrap()[0];
    let taken = s.enqueue_graph(&[keyed("taken")]).unwrap()[0];
    for job in claim(s) {
        die(s, &job);
    }
    let taker = s.enqueue_graph(&[keyed("taken")]).unwrap()[0];
    assert_ne!(taker, taken);
    assert!(s.retry_dead(lone).unwrap());
    assert!(s.retry_dead(taken).unwrap());
    let key_of = |id| s.get_job(id).unwrap().unwrap().unique_key;
    assert_eq!(key_of(lone).as_deref(), Some("lone"));
    assert_eq!(key_of(taken), None, "its key is another live job's");
    assert_eq!(key_of(taker).as_deref(), Some("taken"));
    assert_eq!(s.enqueue_graph(&[keyed("lone")]).unwrap(), vec![lone]);
}
