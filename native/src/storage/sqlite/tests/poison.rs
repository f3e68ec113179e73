//! Rows another program wrote badly: each kind of unreadable cell is
//! quarantined with an error naming it, and never stalls the jobs around it
//! or the reads of the whole table.

use super::*;

/// Each bad cell: the column, the value written with SQL, and what the
/// quarantine's message must mention.
const BAD_CELLS: &[(&str, &str, &str)] = &[
    ("payload", "'text, not bytes'", "payload: stored as TEXT"),
    ("queue", "x'00ff'", "queue: stored as a BLOB"),
    ("task_name", "x'00ff'", "task_name: stored as a BLOB"),
    ("priority", "'high'", "priority: stored as TEXT"),
    ("scheduled_at", "'soon'", "scheduled_at: stored as TEXT"),
    // The claim counts the attempt (-5 + 1): still no attempt number.
    ("attempt", "-5", "attempt: stored as the integer -4"),
    ("max_retries", "'many'", "max_retries: stored as TEXT"),
    ("retry_backoff", "'slow'", "retry_backoff: stored as TEXT"),
    ("timeout_ms", "'long'", "timeout_ms: stored as TEXT"),
];

fn spoil(s: &SqliteStorage, id: i64, column: &str, value: &str) {
    s.writer
        .lock()
        .execute(
            &format!("UPDATE jobs SET {column} = {value} WHERE id = ?1"),
            [id],
        )
        .unwrap();
}

#[test]
fn each_kind_of_bad_cell_is_quarantined_and_the_rest_runs() {
    for &(column, value, named) in BAD_CELLS {
        let s = memory();
        let ids = s.enqueue(&opts("t"), &payloads(3)).unwrap();
        spoil(&s, ids[1], column, value);
        // Reads never fail on the bad row.
        assert_eq!(s.stats().unwrap().get(Status::Pending), 3, "{column}");
        let listed = s
            .list_jobs(&JobFilter {
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(listed.len(), 3, "{column}");
        s.get_job(ids[1]).unwrap().unwrap();
        // The claim takes the good jobs and quarantines the bad one.
        let got: Vec<i64> = claim(&s, 10).iter().map(|j| j.id).collect();
        assert_eq!(got, vec![ids[0], ids[2]], "{column}");
        assert_eq!(state(&s, ids[1]), State::Dead, "{column}");
        let error = &s.errors(ids[1]).unwrap()[0];
        assert_eq!(error.error_type, "CorruptJobError", "{column}");
        assert!(error.message.contains(named), "{column}: {}", error.message);
        let quarantined = s.quarantine_unreadable().unwrap();
        assert_eq!(quarantined.len(), 1, "{column}");
        assert_eq!(quarantined[0].id, ids[1]);
        assert!(
            s.quarantine_unreadable().unwrap().is_empty(),
            "reported once"
        );
    }
}

#[test]
fn a_status_that_is_no_state_breaks_no_read_and_is_quarantined() {
    for value in ["99", "-3", "'ready'", "x'01'"] {
        let s = memory();
        let ids = s.enqueue(&opts("t"), &payloads(2)).unwrap();
        spoil(&s, ids[0], "status", value);
        let stats = s.stats().unwrap();
        assert_eq!(stats.get(Status::Pending), 1, "{value}");
        let record = s.get_job(ids[0]).unwrap().unwrap();
        assert!(
            record.error.as_deref().unwrap().contains("status"),
            "{value}: {record:?}"
        );
        assert_eq!(s.finished(ids[0]).unwrap(), None, "{value}: not final yet");
        assert_eq!(
            s.request_cancel(ids[0]).unwrap(),
            CancelRequest::AlreadyFinal
        );
        let quarantined = s.quarantine_unreadable().unwrap();
        assert_eq!(quarantined.len(), 1, "{value}");
        assert!(quarantined[0].problem.contains("is not a job state"));
        let dead = s.finished(ids[0]).unwrap().unwrap();
        assert_eq!(dead.state, State::Dead);
        assert_eq!(dead.error.unwrap().error_type, "CorruptJobError");
        assert_eq!(claim_ids(&s), vec![ids[1]], "{value}");
    }
}

#[test]
fn an_expired_lease_on_a_bad_row_does_not_stop_the_others_being_recovered() {
    let s = memory();
    let ids = s.enqueue(&opts("t"), &payloads(2)).unwrap();
    let jobs = claim(&s, 2);
    assert_eq!(jobs.len(), 2);
    spoil(&s, ids[0], "max_retries", "'many'");
    s.travel(Duration::from_secs(3600));
    let reaped = s.reap_expired().unwrap();
    assert_eq!(reaped.len(), 1);
    assert_eq!(reaped[0].id, ids[1]);
    assert_eq!(state(&s, ids[0]), State::Dead);
    assert_eq!(s.quarantine_unreadable().unwrap()[0].id, ids[0]);
}
