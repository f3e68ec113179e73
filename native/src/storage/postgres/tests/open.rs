//! Opening: the schema created on first use, migrations that race, a newer
//! schema refused, an unreachable server named without its password.

use super::*;
use crate::error::Error;

#[test]
fn the_schema_is_created_on_first_use_and_reopened_as_it_is() {
    let Some(scratch) = Scratch::new() else {
        return;
    };
    let first = scratch.open();
    let id = first.enqueue(&opts("t"), &payloads(1)).unwrap()[0];
    drop(first);
    let again = scratch.open();
    assert_eq!(again.get_job(id).unwrap().unwrap().task_name, "t");
    let version: i64 = scratch
        .client()
        .query_one(
            &format!("SELECT version FROM \"{}\".schema_version", scratch.schema),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(version, schema::VERSION);
}

#[test]
fn many_openers_at_once_migrate_once_without_an_error() {
    let Some(scratch) = Scratch::new() else {
        return;
    };
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(12));
    let openers: Vec<_> = (0..12)
        .map(|_| {
            let (config, barrier) = (scratch.config(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                PostgresStorage::open(config).map(|_| ())
            })
        })
        .collect();
    for opener in openers {
        opener.join().unwrap().unwrap();
    }
    let rows: i64 = scratch
        .client()
        .query_one(
            &format!("SELECT count(*) FROM \"{}\".schema_version", scratch.schema),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);
}

#[test]
fn a_schema_from_a_newer_taskito_is_refused() {
    let Some(scratch) = Scratch::new() else {
        return;
    };
    drop(scratch.open());
    scratch
        .client()
        .execute(
            &format!(
                "UPDATE \"{}\".schema_version SET version = version + 1",
                scratch.schema
            ),
            &[],
        )
        .unwrap();
    let Err(Error::InvalidArgument(message)) = PostgresStorage::open(scratch.config()) else {
        panic!("a newer schema must be refused")
    };
    assert!(message.contains("newer taskito"), "{message}");
}

#[test]
fn bad_settings_are_refused() {
    let mut config = PostgresConfig::new("postgresql://127.0.0.1/x", "bad name");
    assert!(matches!(
        PostgresStorage::open(config.clone()),
        Err(Error::InvalidArgument(_))
    ));
    config.schema = "good".into();
    config.connect_timeout = Duration::ZERO;
    assert!(matches!(
        PostgresStorage::open(config),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn an_unreachable_server_fails_within_the_timeout_naming_it() {
    // Nothing listens on port 1: refused at once, well within the timeout.
    let mut config = PostgresConfig::new("postgresql://app:hunter2@127.0.0.1:1/db", "taskito");
    config.connect_timeout = Duration::from_secs(3);
    let started = Instant::now();
    let Err(Error::Connection(message)) = PostgresStorage::open(config) else {
        panic!("expected a connection error")
    };
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(message.contains("127.0.0.1:1"), "{message}");
    assert!(
        message.contains("postgresql://app@127.0.0.1:1/db"),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
}

#[test]
fn connections_name_the_schema_and_plan_by_index() {
    let (scratch, s) = storage!();
    let shown: Vec<String> = s
        .run(|conn| {
            let mut values = Vec::new();
            for setting in ["search_path", "enable_seqscan", "enable_hashjoin", "jit"] {
                let row = conn.client.query_one(&format!("SHOW {setting}"), &[])?;
                values.push(row.get(0));
            }
            Ok(values)
        })
        .unwrap();
    assert_eq!(
        shown,
        [
            format!("\"{}\"", scratch.schema),
            "off".into(),
            "off".into(),
            "off".into()
        ]
    );
}

#[test]
fn a_schema_the_schedule_half_made_gets_the_jobs_half_next() {
    // The schedule half shipped V4 before V3 existed: such a schema is at
    // version 2 with V1 and V4 applied. Opening it applies V3.
    let Some(scratch) = Scratch::new() else {
        return;
    };
    let schema = &scratch.schema;
    let mut client = scratch.client();
    client
        .batch_execute(&format!(
            "CREATE SCHEMA \"{schema}\"; SET search_path = \"{schema}\"; {} {} \
             CREATE TABLE schema_version (version bigint NOT NULL); \
             INSERT INTO schema_version VALUES (2); \
             INSERT INTO jobs (id, queue, task_name, status, priority, payload, created_at, \
             scheduled_at, max_retries, retry_backoff) VALUES (7, 'default', 'old', 0, 0, '\\x00', \
             now(), now(), 3, 1.0)",
            schema::V1,
            schema::V4
        ))
        .unwrap();
    let s = scratch.open();
    let version: i64 = client
        .query_one(
            &format!("SELECT version FROM \"{schema}\".schema_version"),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(version, schema::VERSION);
    let mut keyed = crate::job::GraphNode::new(opts("new"), b"p".to_vec());
    keyed.unique_key = Some("k".into());
    keyed.depends_on = vec![7];
    let ids = s.enqueue_graph(&[keyed.clone(), keyed]).unwrap();
    assert_eq!(ids[0], ids[1]);
    assert_eq!(
        claim(&s, 10).iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![7]
    );
}
