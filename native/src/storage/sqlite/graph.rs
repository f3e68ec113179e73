//! Jobs that carry more than their options: unique keys, dependencies (on
//! stored jobs, and on earlier jobs of the same call), expiry and metadata.
//! One transaction stores a whole graph (a chain, a chord, one job with
//! `depends_on`); the plain enqueue in `enqueue.rs` stays the hot path.
//!
//! What happens when such a job ends (its dependents settled, its key
//! freed) is `ends.rs`.

use rusqlite::{params, OptionalExtension, Transaction};

use super::cells::Cells;
use super::ends::{DROP_EXPIRY, FREE_KEY, INHERITED_FAILURE};
use super::outcomes::TAKE_KEY;
use super::SqliteStorage;
use crate::error::{Error, Result};
use crate::job::{format_id, micros, state_sql, GraphNode, Micros, State, IDS};
use crate::storage::common::{
    check_distinct_dependencies, dependency_failed_message, dependency_readiness, due_time,
    initial_state, timeout_millis, DEPENDENCY_FAILED,
};

/// One job of a graph; `?13` is its expiry (also `expiry`, until it ends),
/// `?17` its `on_end` bits. An id another process took in the same
/// millisecond inserts nothing.
pub(super) const INSERT_NODE: &str = "INSERT INTO jobs (id, payload, queue, task_name, status, \
    priority, created_at, scheduled_at, max_retries, retry_backoff, timeout_ms, unique_key, \
    expires_at, expiry, metadata, feed, pending_deps, finished_at, on_end) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13, ?14, ?15, ?16, ?17, ?18) \
    ON CONFLICT (id) DO NOTHING";

/// The live job holding key `?1`, if any.
pub(super) const LIVE_WITH_KEY: &str = "SELECT job_id FROM unique_keys WHERE key = ?1";

/// A dependency's state and task name; one that is not final settles its
/// dependents when it ends.
pub(super) const ADD_DEPENDENT: &str = concat!(
    "UPDATE jobs SET on_end = on_end | CASE WHEN status IN (",
    state_sql!(Complete, Dead, Cancelled, Expired),
    ") THEN 0 ELSE 1 END WHERE id = ?1 RETURNING status, task_name"
);

pub(super) const INSERT_DEPENDENCY: &str = "INSERT INTO job_dependencies \
    (job_id, position, depends_on, mode, satisfied) VALUES (?1, ?2, ?3, ?4, ?5)";

pub(super) const RECORD_DEPENDENCY_FAILURE: &str = "INSERT INTO job_errors \
    (job_id, attempt, error_type, message, traceback, failed_at) VALUES (?1, 0, ?2, ?3, '', ?4)";

pub(super) fn enqueue_graph(storage: &SqliteStorage, nodes: &[GraphNode]) -> Result<Vec<i64>> {
    for (i, node) in nodes.iter().enumerate() {
        node.validate(i)?;
    }
    let now = storage.now();
    storage.write(|tx| {
        let mut ids: Vec<i64> = Vec::with_capacity(nodes.len());
        for (i, node) in nodes.iter().enumerate() {
            let parents: Vec<i64> = node
                .depends_on
                .iter()
                .copied()
                .chain(node.after.iter().map(|&a| ids[a]))
                .collect();
            check_distinct_dependencies(i, &parents)?;
            ids.push(insert_node(tx, node, &parents, now)?);
        }
        Ok(ids)
    })
}

/// A dependency as found at enqueue.
struct Parent {
    id: i64,
    state: State,
    task_name: String,
}

fn insert_node(tx: &Transaction, node: &GraphNode, parents: &[i64], now: Micros) -> Result<i64> {
    // A live job with this key is the answer, and nothing is stored (not
    // even a dependent on its dependencies). Other processes' enqueues wait
    // for this write transaction: the key cannot be taken between the look
    // and the insert below.
    if let Some(key) = &node.unique_key {
        if let Some(id) = live_with_key(tx, key)? {
            return Ok(id);
        }
    }
    let found = parents
        .iter()
        .map(|&id| add_dependent(tx, id))
        .collect::<Result<Vec<Parent>>>()?;
    let states: Vec<State> = found.iter().map(|p| p.state).collect();
    let (pending, failed) = dependency_readiness(&states, node.mode);
    let due = due_time(&node.options, now);
    let state = match failed {
        Some(_) => State::Cancelled,
        None if pending > 0 => State::Waiting,
        None => initial_state(false, due, now),
    };
    let on_end = if node.unique_key.is_some() && state != State::Cancelled {
        FREE_KEY
    } else {
        0
    } | if node.expires.is_some() && state != State::Cancelled {
        DROP_EXPIRY
    } else {
        0
    };
    let expiry = node
        .expires
        .filter(|_| state != State::Cancelled)
        .map(|e| now.saturating_add(micros(e)));
    let id = loop {
        let id = IDS.next();
        let options = &node.options;
        let inserted = tx.prepare_cached(INSERT_NODE)?.execute(params![
            id,
            node.payload,
            options.queue,
            options.task_name,
            state as i64,
            options.priority,
            now,
            due,
            options.max_retries,
            options.retry_backoff,
            options.timeout.map(timeout_millis),
            node.unique_key,
            expiry,
            node.metadata,
            node.feed as i64,
            pending as i64,
            (state == State::Cancelled).then_some(now),
            on_end,
        ])?;
        if inserted == 1 {
            break id;
        }
        // Another process took this id in the same millisecond.
        IDS.skip_past(id);
    };
    if on_end & FREE_KEY != 0 {
        if let Some(key) = &node.unique_key {
            tx.prepare_cached(TAKE_KEY)?.execute(params![key, id])?;
        }
    }
    for (position, parent) in found.iter().enumerate() {
        tx.prepare_cached(INSERT_DEPENDENCY)?.execute(params![
            id,
            position as i64,
            parent.id,
            node.mode as i64,
            // Settled: final already, or this job is cancelled and waits
            // for nothing.
            (parent.state.is_final() || failed.is_some()) as i64,
        ])?;
    }
    if let Some(i) = failed {
        let parent = &found[i];
        let message = inherited_failure(tx, parent)?.unwrap_or_else(|| {
            dependency_failed_message(parent.id, &parent.task_name, parent.state)
        });
        tx.prepare_cached(RECORD_DEPENDENCY_FAILURE)?
            .execute(params![id, DEPENDENCY_FAILED, message, now])?;
    }
    Ok(id)
}

fn live_with_key(tx: &Transaction, key: &str) -> Result<Option<i64>> {
    Ok(tx
        .prepare_cached(LIVE_WITH_KEY)?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

fn add_dependent(tx: &Transaction, id: i64) -> Result<Parent> {
    let row = tx
        .prepare_cached(ADD_DEPENDENT)?
        .query_row([id], |r| {
            let mut cells = Cells::new(r);
            Ok((cells.state(0), cells.get::<String>(1, "task_name")))
        })
        .optional()?;
    match row {
        None => Err(Error::JobNotFound(format_id(id))),
        Some((state, task_name)) => Ok(Parent {
            id,
            // A status that is no state is quarantined, dead, soon.
            state: state.unwrap_or(State::Dead),
            task_name: task_name.unwrap_or_default(),
        }),
    }
}

fn inherited_failure(tx: &Transaction, parent: &Parent) -> Result<Option<String>> {
    if parent.state != State::Cancelled {
        return Ok(None);
    }
    Ok(tx
        .prepare_cached(INHERITED_FAILURE)?
        .query_row([parent.id], |r| r.get(0))
        .optional()?)
}
