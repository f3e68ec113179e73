//! The indexes the hot statements rely on.

use super::*;

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
