//! Graphs of jobs through real workers: chains fed step to step, a failed
//! step cancelling the rest, and progress coalesced in memory and stored by
//! the time the outcome is.

use super::*;
use crate::job::{Feed, GraphNode};

fn step(task: &str, payload: &[u8], after: &[usize], feed: Feed) -> GraphNode {
    let mut node = GraphNode::new(options(task), payload.to_vec());
    node.after = after.to_vec();
    node.feed = feed;
    node
}

/// Adds its payload's number to its dependency's result, if fed one.
fn adder(engine: &Arc<Engine>) -> impl Fn(&ClaimedJob) -> OutcomeKind + Send + Sync + 'static {
    let engine = engine.clone();
    move |job| {
        let own: i64 = std::str::from_utf8(&job.payload).unwrap().parse().unwrap();
        let fed: i64 = match job.feed {
            Feed::None => 0,
            _ => engine
                .storage
                .dependency_results(job.id)
                .unwrap()
                .iter()
                .map(|r| {
                    std::str::from_utf8(r.as_deref().unwrap())
                        .unwrap()
                        .parse::<i64>()
                        .unwrap()
                })
                .sum(),
        };
        if own < 0 {
            return OutcomeKind::Failure(Failure {
                error_type: "ValueError".into(),
                message: "negative".into(),
                traceback: String::new(),
                retryable: false,
            });
        }
        OutcomeKind::Success((own + fed).to_string().into_bytes())
    }
}

#[test]
fn a_chain_runs_step_after_step_fed_by_the_one_before() {
    let dir = tempfile::tempdir().unwrap();
    for engine in [engine(), file_engine(&dir.path().join("chain.db"))] {
        let ids = engine
            .enqueue_graph(&[
                step("add", b"1", &[], Feed::None),
                step("add", b"10", &[0], Feed::One),
                step("add", b"100", &[1], Feed::One),
                step("add", b"1000", &[0, 2], Feed::All),
            ])
            .unwrap();
        let (worker, _) = start(&engine, config(4), adder(&engine));
        let last = wait(&engine, ids[3]);
        assert_eq!(last.state, State::Complete);
        // 1, 11, 111, then 1000 + 1 + 111.
        assert_eq!(last.result.as_deref(), Some(&b"1112"[..]));
        worker.stop(WAIT);
    }
}

#[test]
fn a_failed_step_cancels_the_rest_naming_it() {
    let engine = engine();
    let ids = engine
        .enqueue_graph(&[
            step("add", b"1", &[], Feed::None),
            step("add", b"-1", &[0], Feed::One),
            step("add", b"2", &[1], Feed::One),
            step("add", b"3", &[2], Feed::One),
        ])
        .unwrap();
    let (worker, _) = start(&engine, config(2), adder(&engine));
    let last = wait(&engine, ids[3]);
    assert_eq!(last.state, State::Cancelled);
    let error = last.error.expect("the failure that cancelled it");
    assert_eq!(
        error.message,
        format!("dependency {} (add) died", format_id(ids[1]))
    );
    assert_eq!(wait(&engine, ids[0]).state, State::Complete);
    worker.stop(WAIT);
}

#[test]
fn progress_is_coalesced_in_memory_and_stored_with_the_outcome() {
    let engine = engine();
    // Many reports of one job are one value to write.
    for value in 0..=100 {
        engine.report_progress(7, value);
    }
    engine.report_progress(8, 3);
    let mut taken = engine.take_progress(None);
    taken.sort_unstable();
    assert_eq!(taken, vec![(7, 100), (8, 3)]);
    assert!(!engine.has_progress());
    let reporter = engine.clone();
    let (worker, _) = start(&engine, config(2), move |job| {
        for value in 0..=100 {
            reporter.report_progress(job.id, value / 2);
        }
        echo(job)
    });
    let ids = engine
        .enqueue(&options("t"), &vec![b"x".to_vec(); 20])
        .unwrap();
    for &id in &ids {
        wait(&engine, id);
        assert_eq!(
            engine.storage.get_job(id).unwrap().unwrap().progress,
            Some(50)
        );
    }
    worker.stop(WAIT);
}
