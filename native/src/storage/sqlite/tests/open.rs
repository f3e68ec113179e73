//! Opening databases: files and their permissions, `:memory:`, durability,
//! and the guard against a second SQLite library.

use std::sync::Arc;

use super::*;

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

#[test]
fn a_database_the_schedule_half_made_gets_the_jobs_half_next() {
    // The schedule half shipped V4 before V3 existed: such a database is at
    // version 3 with V1, V2 and V4 applied. Opening it applies V3, and the
    // jobs it holds carry on.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v4.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        for sql in [schema::V1, schema::V2, schema::V4] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
        conn.execute(
            "INSERT INTO jobs (id, queue, task_name, status, priority, payload, created_at, \
             scheduled_at, max_retries, retry_backoff) VALUES (7, 'default', 'old', 0, 0, x'00', \
             0, 0, 3, 1.0)",
            [],
        )
        .unwrap();
    }
    let s = open(&path);
    let version: i64 = s
        .writer
        .lock()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, schema::VERSION);
    let mut keyed = crate::job::GraphNode::new(opts("new"), b"p".to_vec());
    keyed.unique_key = Some("k".into());
    keyed.depends_on = vec![7];
    let ids = s.enqueue_graph(&[keyed.clone(), keyed]).unwrap();
    assert_eq!(ids[0], ids[1]);
    assert_eq!(claim_ids(&s), vec![7]);
}
