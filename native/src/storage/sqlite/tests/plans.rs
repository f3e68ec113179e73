//! The indexes the statements rely on, checked on the very statements the
//! storage runs (its named constants and builders), planned with
//! representative values bound to their parameters.

use rusqlite::types::Value;

use super::*;
use crate::job::state_sql;
use crate::storage::sqlite::{
    claim, enqueue, graph, maintenance, outcomes, rate_limits, reads, registry,
};

/// How SQLite runs `sql` with `params` bound, one step a line.
fn plan(s: &SqliteStorage, sql: &str, params: &[Value]) -> String {
    let conn = s.writer.lock();
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let rows = stmt
        .query_map(rusqlite::params_from_iter(params), |r| {
            r.get::<_, String>(3)
        })
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap();
    rows.join("\n")
}

fn int(v: i64) -> Value {
    Value::Integer(v)
}

fn text(v: &str) -> Value {
    Value::Text(v.to_string())
}

const NOW: i64 = 1_700_000_000_000_000;
const JOB: i64 = 42;

#[test]
fn hot_queries_use_their_indexes() {
    let s = memory();
    let lease_end = int(NOW + 30_000_000);
    let claim_params = vec![
        text("w1"),
        int(NOW),
        lease_end,
        int(100),
        int(State::Running as i64),
    ];
    let mut filtered_params = claim_params.clone();
    filtered_params.extend([
        text(r#"["emails","default"]"#),
        text(r#"["send","resize"]"#),
        int(5),
        text(r#"["throttled"]"#),
        text(r#"["slow-queue"]"#),
    ]);
    let every_filter = claim::Filters {
        queues: true,
        tasks: true,
        above_priority: true,
        skips: true,
    };
    let only_tasks = claim::Filters {
        tasks: true,
        ..Default::default()
    };
    let cases: Vec<(&str, String, Vec<Value>, &str)> = vec![
        (
            "claim",
            claim::claim_sql(claim::Filters::default()),
            claim_params,
            "jobs_ready",
        ),
        (
            "claim by queue, task and priority",
            claim::claim_sql(every_filter),
            filtered_params.clone(),
            "jobs_ready",
        ),
        (
            "best ready job",
            claim::best_ready_sql(only_tasks),
            filtered_params[..7].to_vec(),
            "jobs_ready",
        ),
        (
            "rate-limited jobs with a token",
            rate_limits::candidates_sql(true, true),
            vec![
                text(r#"["throttled"]"#),
                text(r#"["slow-queue"]"#),
                int(8),
                text(r#"["emails","default"]"#),
                text(r#"["send","resize"]"#),
            ],
            "jobs_ready",
        ),
        (
            "waiting job",
            enqueue::WAITING_JOB_EXISTS.into(),
            vec![],
            "jobs_ready",
        ),
        (
            "promote due",
            maintenance::PROMOTE_DUE.into(),
            vec![int(NOW)],
            "jobs_due",
        ),
        ("next due", maintenance::NEXT_DUE.into(), vec![], "jobs_due"),
        (
            "next expiry",
            maintenance::NEXT_DUE.into(),
            vec![],
            "jobs_expiry",
        ),
        (
            "expire due",
            maintenance::EXPIRE_DUE.into(),
            vec![int(NOW)],
            "jobs_expiry",
        ),
        (
            "dependents",
            reads::DEPENDENTS.into(),
            vec![int(JOB)],
            "job_dependencies_by_parent",
        ),
        (
            "expired leases",
            maintenance::EXPIRED_LEASES.into(),
            vec![int(NOW)],
            "jobs_status",
        ),
        (
            "purge dead errors",
            maintenance::PURGE_DEAD_ERRORS.into(),
            vec![int(NOW)],
            "jobs_status",
        ),
        (
            "purge dead",
            maintenance::PURGE_DEAD.into(),
            vec![int(NOW)],
            "jobs_status",
        ),
        (
            "purge finished errors",
            maintenance::PURGE_FINISHED_ERRORS.into(),
            vec![int(NOW)],
            "jobs_status",
        ),
        (
            "purge finished",
            maintenance::PURGE_FINISHED.into(),
            vec![int(NOW)],
            "jobs_status",
        ),
        (
            "count ready",
            reads::COUNT_READY.into(),
            vec![],
            "jobs_ready",
        ),
        (
            "count the rest",
            reads::COUNT_NOT_READY.into(),
            vec![],
            "jobs_status",
        ),
        (
            "errors",
            reads::ERRORS.into(),
            vec![int(JOB)],
            "job_errors_by_job",
        ),
        (
            "last error",
            reads::LAST_ERROR.into(),
            vec![int(JOB)],
            "job_errors_by_job",
        ),
    ];
    for (name, sql, params, index) in cases {
        let plan = plan(&s, &sql, &params);
        assert!(plan.contains(index), "{name} must use {index}: {plan}");
        let table_scan = plan
            .lines()
            .any(|step| step == "SCAN jobs" || step == "SCAN job_errors");
        assert!(!table_scan, "{name} must not read the whole table: {plan}");
        assert!(
            !plan.contains("TEMP B-TREE"),
            "{name} must not sort: {plan}"
        );
    }
}

#[test]
fn statements_on_one_job_go_straight_to_it() {
    let s = memory();
    let cases: Vec<(&str, &str, Vec<Value>)> = vec![
        (
            "complete",
            outcomes::COMPLETE_ATTEMPT,
            vec![
                int(JOB),
                int(1),
                Value::Blob(b"42".to_vec()),
                int(NOW),
                int(NOW - 5),
            ],
        ),
        (
            "cancel attempt",
            outcomes::CANCEL_ATTEMPT,
            vec![int(JOB), int(1), int(NOW), Value::Null],
        ),
        (
            "start claimed",
            claim::START_CLAIMED,
            vec![int(JOB), int(1), int(NOW)],
        ),
        (
            "dead-letter a job of an unknown task",
            registry::KILL_READY,
            vec![int(JOB), int(NOW)],
        ),
        (
            "fail attempt",
            outcomes::FAIL_ATTEMPT,
            vec![
                int(JOB),
                int(1),
                int(State::Retrying as i64),
                int(NOW + 1),
                int(NOW),
                Value::Null,
            ],
        ),
        (
            "renew lease",
            outcomes::RENEW_LEASE,
            vec![int(JOB), int(1), int(NOW)],
        ),
        (
            "release",
            outcomes::RELEASE_ATTEMPT,
            vec![int(JOB), int(1), int(1), int(NOW)],
        ),
        ("state", outcomes::STATE_OF_JOB, vec![int(JOB)]),
        ("ask to stop", outcomes::ASK_TO_STOP, vec![int(JOB)]),
        (
            "cancel unstarted",
            outcomes::CANCEL_UNSTARTED,
            vec![int(JOB), int(NOW)],
        ),
        (
            "revive dead",
            outcomes::REVIVE_DEAD,
            vec![int(JOB), int(NOW)],
        ),
        ("get job", reads::GET_JOB, vec![int(JOB)]),
        ("state and result", reads::STATE_AND_RESULT, vec![int(JOB)]),
        ("cancel requested", reads::CANCEL_REQUESTED, vec![int(JOB)]),
        (
            "take a rate-limited job",
            rate_limits::TAKE,
            vec![int(JOB), text("w1"), int(NOW), int(NOW + 1)],
        ),
        ("add a dependent", graph::ADD_DEPENDENT, vec![int(JOB)]),
        (
            "complete a job whose end has work",
            outcomes::COMPLETE_WATCHED_ATTEMPT,
            vec![int(JOB), int(1), Value::Null, int(NOW), Value::Null],
        ),
        (
            "take a claimed job's expiry",
            claim::EXPIRE_CLAIMED,
            vec![int(JOB), int(NOW)],
        ),
        (
            "keep a revived job's key",
            outcomes::KEEP_KEY,
            vec![int(JOB), int(1)],
        ),
        (
            "record progress",
            outcomes::RECORD_PROGRESS,
            vec![int(JOB), int(50)],
        ),
    ];
    for (name, sql, params) in cases {
        let plan = plan(&s, sql, &params);
        let first = plan.lines().next().unwrap_or_default();
        assert_eq!(
            first, "SEARCH jobs USING INTEGER PRIMARY KEY (rowid=?)",
            "{name}: {plan}"
        );
    }
}

#[test]
fn listings_page_newest_first_without_sorting() {
    let s = memory();
    let filters = [
        JobFilter {
            limit: 50,
            ..Default::default()
        },
        JobFilter {
            status: Some(Status::Pending),
            queue: Some("emails".into()),
            task_name: Some("send".into()),
            limit: 50,
            offset: 100,
        },
    ];
    for filter in filters {
        let (sql, values) = reads::list_jobs_query(&filter);
        let plan = plan(&s, &sql, &values);
        assert!(!plan.contains("TEMP B-TREE"), "{filter:?}: {plan}");
    }
}

#[test]
fn the_partial_indexes_hold_the_states_the_statements_name() {
    let s = memory();
    let predicates = [
        ("jobs_ready", concat!("WHERE status = ", state_sql!(Ready))),
        (
            "jobs_due",
            concat!("WHERE status IN (", state_sql!(Scheduled, Retrying), ")"),
        ),
        (
            "jobs_status",
            concat!("WHERE status <> ", state_sql!(Ready)),
        ),
        ("jobs_expiry", "WHERE expiry IS NOT NULL"),
    ];
    let conn = s.writer.lock();
    for (index, predicate) in predicates {
        let created: String = conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?1",
                [index],
                |r| r.get(0),
            )
            .unwrap();
        assert!(created.ends_with(predicate), "{index}: {created}");
    }
}

#[test]
fn a_fed_job_reads_its_dependencies_by_key() {
    let s = memory();
    let plan = plan(&s, reads::DEPENDENCY_RESULTS, &[int(JOB)]);
    let mut steps = plan.lines();
    assert_eq!(
        steps.next(),
        Some("SEARCH d USING PRIMARY KEY (job_id=?)"),
        "{plan}"
    );
    assert_eq!(
        steps.next(),
        Some("SEARCH j USING INTEGER PRIMARY KEY (rowid=?) LEFT-JOIN"),
        "{plan}"
    );
}

#[test]
fn unique_keys_are_looked_up_by_key() {
    let s = memory();
    for sql in [graph::LIVE_WITH_KEY, outcomes::TAKE_KEY] {
        let plan = plan(
            &s,
            sql,
            &[text("report:7"), int(JOB)][..sql.matches('?').count()],
        );
        assert!(
            plan.contains("PRIMARY KEY (key=?)") || !plan.contains("SCAN"),
            "{sql}: {plan}"
        );
    }
}
