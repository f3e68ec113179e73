//! Jobs that carry more than their options: unique keys, dependencies,
//! expiry and metadata, stored as one graph per transaction (see the SQLite
//! backend's `graph.rs`). What happens when a dependency settles is the
//! schema's function `job_ended`, which every statement that ends jobs with
//! dependents, a key or an expiry calls.

use std::collections::HashMap;

use postgres::{Row, Transaction};

use super::listener::{notify_sql, Notes};
use super::PostgresStorage;
use crate::error::{Error, Result};
use crate::job::{format_id, micros, state_sql, GraphNode, State, IDS};
use crate::storage::common::{
    check_distinct_dependencies, dependency_failed_message, dependency_readiness, timeout_millis,
    DEPENDENCY_FAILED,
};

/// Locks the stored dependencies of the whole call, in id order (as
/// completions lock them), and reads their state and task name.
const LOCK_PARENTS: &str = "SELECT id, status, task_name FROM jobs \
    WHERE id = ANY($1::int8[]) ORDER BY id FOR UPDATE";

/// The live job holding key `$1`, if any, locked and read like the
/// dependencies: a later node of the call may depend on it.
const LIVE_WITH_KEY: &str = concat!(
    "SELECT j.id, j.status, j.task_name FROM unique_keys k \
     JOIN jobs j ON j.id = k.job_id WHERE k.key = $1::text AND j.status IN (",
    state_sql!(Ready, Scheduled, Running, Retrying, Claimed, Waiting),
    ") FOR UPDATE OF j"
);

/// Frees key `$1` if the job holding it is not live (it cannot be: every
/// end frees its key; this keeps a stray row from blocking the key).
const FREE_STALE_KEY: &str = concat!(
    "DELETE FROM unique_keys k WHERE k.key = $1::text AND NOT EXISTS (SELECT 1 FROM jobs j \
     WHERE j.id = k.job_id AND j.status IN (",
    state_sql!(Ready, Scheduled, Running, Retrying, Claimed, Waiting),
    "))"
);

/// Takes key `$1` for job `$2` unless a live job holds it (a concurrent
/// taker's insert waits for the first to commit, then finds it taken).
const TAKE_KEY: &str = "INSERT INTO unique_keys (key, job_id) VALUES ($1::text, $2::int8) \
    ON CONFLICT DO NOTHING RETURNING 1";

/// Moves key `$1` to job id `$2` (the id first tried was taken).
const MOVE_KEY: &str = "UPDATE unique_keys SET job_id = $2::int8 WHERE key = $1::text";

/// Keeps when job `$1` expires, for promote_due to find.
const KEEP_EXPIRY: &str = "INSERT INTO job_expiry (job_id, expires_at) \
    SELECT id, expires_at FROM jobs WHERE id = $1::int8";

/// One job, due `$7` µs from now (never, from 285 years on), expiring `$13`
/// µs from now. An id another process took inserts nothing.
const INSERT_NODE: &str = "INSERT INTO jobs (id, payload, queue, task_name, status, priority, \
    created_at, scheduled_at, max_retries, retry_backoff, timeout_ms, unique_key, expires_at, \
    metadata, feed, pending_deps, finished_at) \
    SELECT $1::int8, $2::bytea, $3::text, $4::text, $5::int2, $6::int8, now(), \
    CASE WHEN $7::int8 >= 9000000000000000 THEN 'infinity' \
    ELSE now() + $7::int8 * interval '1 microsecond' END, $8::int8, $9::float8, $10::int8, \
    $11::text, now() + $12::int8 * interval '1 microsecond', $13::text, $14::int2, $15::int4, \
    CASE WHEN $5::int2 = 6 THEN now() END \
    ON CONFLICT DO NOTHING RETURNING id";

/// Counts one more dependent on a job that is not final.
const ADD_DEPENDENT: &str = "UPDATE jobs SET dependents = dependents + 1 WHERE id = $1::int8";

const INSERT_DEPENDENCY: &str = "INSERT INTO job_dependencies \
    (job_id, position, depends_on, mode, satisfied) \
    VALUES ($1::int8, $2::int4, $3::int8, $4::int2, $5::bool)";

const INHERITED_FAILURE: &str = "SELECT message FROM job_errors \
    WHERE job_id = $1::int8 AND error_type = 'DependencyFailed' ORDER BY seq DESC LIMIT 1";

const RECORD_DEPENDENCY_FAILURE: &str = "INSERT INTO job_errors \
    (job_id, attempt, error_type, message, traceback, failed_at) \
    VALUES ($1::int8, 0, $2::text, $3::text, '', now())";

pub(super) fn enqueue_graph(storage: &PostgresStorage, nodes: &[GraphNode]) -> Result<Vec<i64>> {
    for (i, node) in nodes.iter().enumerate() {
        node.validate(i)?;
    }
    if nodes.is_empty() {
        return Ok(Vec::new());
    }
    let mut stored: Vec<i64> = Vec::new();
    let notify = format!("SELECT {}", notify_sql(1, 2, 3));
    let notes = Notes::default().work();
    storage.run(|conn| {
        if !stored.is_empty()
            && conn
                .query("SELECT 1 FROM jobs WHERE id = $1::int8", &[&stored[0]])?
                .len()
                == 1
        {
            // A run whose commit went through before its connection died.
            return Ok(stored.clone());
        }
        let mut tx = conn.client.transaction()?;
        let mut external: Vec<i64> = nodes
            .iter()
            .flat_map(|n| n.depends_on.iter().copied())
            .collect();
        external.sort_unstable();
        external.dedup();
        let mut parents: HashMap<i64, (State, String)> = HashMap::new();
        for row in tx.query(LOCK_PARENTS, &[&external])? {
            let status: i16 = row.get(1);
            let state = State::from_i64(i64::from(status)).unwrap_or(State::Dead);
            parents.insert(row.get(0), (state, row.get(2)));
        }
        if let Some(missing) = external.iter().find(|id| !parents.contains_key(id)) {
            return Err(Error::JobNotFound(format_id(*missing)));
        }
        let mut ids: Vec<i64> = Vec::with_capacity(nodes.len());
        for (i, node) in nodes.iter().enumerate() {
            let node_parents: Vec<i64> = node
                .depends_on
                .iter()
                .copied()
                .chain(node.after.iter().map(|&a| ids[a]))
                .collect();
            check_distinct_dependencies(i, &node_parents)?;
            let id = insert_node(&mut tx, node, &node_parents, &mut parents)?;
            ids.push(id);
        }
        tx.query(&notify, &[&storage.channel, &notes.payloads, &notes.work])?;
        stored = ids.clone();
        tx.commit()?;
        Ok(ids)
    })
}

/// The id of the live job `row` (of `LIVE_WITH_KEY`) that a node turned
/// out to be, recorded so that later nodes of the call can depend on it.
fn known_parent(row: &Row, parents: &mut HashMap<i64, (State, String)>) -> i64 {
    let id: i64 = row.get(0);
    let status: i16 = row.get(1);
    let state = State::from_i64(i64::from(status)).unwrap_or(State::Dead);
    parents.insert(id, (state, row.get(2)));
    id
}

fn insert_node(
    tx: &mut Transaction,
    node: &GraphNode,
    node_parents: &[i64],
    parents: &mut HashMap<i64, (State, String)>,
) -> Result<i64> {
    if let Some(key) = &node.unique_key {
        if let Some(row) = tx.query_opt(LIVE_WITH_KEY, &[key])? {
            return Ok(known_parent(&row, parents));
        }
    }
    let found: Vec<(i64, State, String)> = node_parents
        .iter()
        .map(|id| {
            let (state, task) = parents
                .get(id)
                .cloned()
                .ok_or_else(|| Error::JobNotFound(format_id(*id)))?;
            Ok((*id, state, task))
        })
        .collect::<Result<_>>()?;
    let states: Vec<State> = found.iter().map(|p| p.1).collect();
    let (pending, failed) = dependency_readiness(&states, node.mode);
    let delay = node.options.delay.map(micros).unwrap_or(0);
    let state = match failed {
        Some(_) => State::Cancelled,
        None if pending > 0 => State::Waiting,
        None if delay > 0 => State::Scheduled,
        None => State::Ready,
    };
    let options = &node.options;
    // A job stored final (cancelled) neither holds its key nor expires.
    let key = node.unique_key.as_ref().filter(|_| !state.is_final());
    let mut id = IDS.next();
    if let Some(key) = key {
        while tx.query_opt(TAKE_KEY, &[key, &id])?.is_none() {
            // Another producer's job took the key since the look above.
            if let Some(row) = tx.query_opt(LIVE_WITH_KEY, &[key])? {
                return Ok(known_parent(&row, parents));
            }
            tx.execute(FREE_STALE_KEY, &[key])?;
        }
    }
    let id = loop {
        let inserted = tx.query_opt(
            INSERT_NODE,
            &[
                &id,
                &node.payload,
                &options.queue,
                &options.task_name,
                &(state as i16),
                &options.priority,
                &delay,
                &i64::from(options.max_retries),
                &options.retry_backoff,
                &options.timeout.map(timeout_millis),
                &node.unique_key,
                &node.expires.map(micros),
                &node.metadata,
                &(node.feed as i16),
                &(pending as i32),
            ],
        )?;
        if inserted.is_some() {
            break id;
        }
        // Another process took this id in the same millisecond.
        IDS.skip_past(id);
        id = IDS.next();
        if let Some(key) = key {
            tx.execute(MOVE_KEY, &[key, &id])?;
        }
    };
    if node.expires.is_some() && !state.is_final() {
        tx.execute(KEEP_EXPIRY, &[&id])?;
    }
    // Known to later nodes of this call as a possible dependency.
    parents.insert(id, (state, options.task_name.clone()));
    for (position, (parent, parent_state, _)) in found.iter().enumerate() {
        let settled = parent_state.is_final() || failed.is_some();
        if !settled {
            tx.execute(ADD_DEPENDENT, &[parent])?;
        }
        tx.execute(
            INSERT_DEPENDENCY,
            &[
                &id,
                &(position as i32),
                parent,
                &(node.mode as i16),
                &settled,
            ],
        )?;
    }
    if let Some(i) = failed {
        let (parent, parent_state, task) = &found[i];
        let inherited: Option<String> = if *parent_state == State::Cancelled {
            tx.query_opt(INHERITED_FAILURE, &[parent])?
                .map(|r| r.get(0))
        } else {
            None
        };
        let message =
            inherited.unwrap_or_else(|| dependency_failed_message(*parent, task, *parent_state));
        tx.execute(
            RECORD_DEPENDENCY_FAILURE,
            &[&id, &DEPENDENCY_FAILED, &message],
        )?;
    }
    Ok(id)
}
