//! The claim stays prepared. SQLite re-prepares a cached statement when a
//! parameter its planner read is bound again (a bare `LIMIT ?` is one),
//! and re-preparing the claim costs more than running it.

use rusqlite::StatementStatus;

use super::*;
use crate::storage::sqlite::claim;

#[test]
fn claims_that_start_and_hold_jobs_are_never_re_prepared() {
    let s = memory();
    let tasks = vec!["t".to_string()];
    let sql = claim::claim_sql(claim::Filters {
        tasks: true,
        ..claim::Filters::default()
    });
    for round in 0..20_usize {
        s.enqueue(&opts("t"), &payloads(4)).unwrap();
        let jobs = s
            .claim(&ClaimRequest {
                worker_id: "w1",
                queues: None,
                tasks: Some(&tasks),
                above_priority: None,
                skip_tasks: None,
                skip_queues: None,
                start: 1 + round % 2,
                hold: 2,
                lease: Duration::from_secs(30),
            })
            .unwrap();
        assert!(!jobs.is_empty());
        let outcomes: Vec<_> = jobs
            .iter()
            .filter(|j| j.running)
            .map(|j| success(j, b"r"))
            .collect();
        s.complete(&outcomes).unwrap();
    }
    let reprepared = s
        .write(|tx| {
            Ok(tx
                .prepare_cached(&sql)?
                .get_status(StatementStatus::RePrepare))
        })
        .unwrap();
    assert_eq!(reprepared, 0, "the claim was re-prepared");
}
