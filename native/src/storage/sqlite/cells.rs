//! Reading rows that another program may have written badly. SQLite lets
//! any cell hold any type, so a job row written by some other tool can hold
//! a payload stored as TEXT, a status of 99 or a priority of "high". One
//! such row must not fail a claim of many jobs, a listing, or the counts:
//! rows are read cell by cell, the cells that cannot be read are named, and
//! the row is quarantined (dead-lettered with an error naming them) while
//! every other job goes on.

use rusqlite::types::{FromSql, ValueRef};
use rusqlite::{params, Row, Transaction};

use super::outcomes::RECORD_ERROR;
use crate::error::Result;
use crate::job::{now_micros, state_sql, Micros, State};
pub(super) use crate::storage::QuarantinedJob;

/// The error type a quarantined job's dead letter carries.
pub const CORRUPT: &str = "CorruptJobError";

/// A row's cells, read one at a time; what cannot be read is collected.
pub(super) struct Cells<'r, 's> {
    row: &'r Row<'s>,
    problems: Vec<String>,
}

impl<'r, 's> Cells<'r, 's> {
    pub(super) fn new(row: &'r Row<'s>) -> Self {
        Cells {
            row,
            problems: Vec::new(),
        }
    }

    /// The cell at `idx` as a `T`, or `None` (and a problem naming `column`).
    pub(super) fn get<T: FromSql>(&mut self, idx: usize, column: &str) -> Option<T> {
        match self.row.get::<_, T>(idx) {
            Ok(value) => Some(value),
            Err(e) => {
                self.problems.push(describe(self.row, idx, column, &e));
                None
            }
        }
    }

    /// The job state stored at `idx`, or `None` (and a problem) when the
    /// number is no state.
    pub(super) fn state(&mut self, idx: usize) -> Option<State> {
        let value: i64 = self.get(idx, "status")?;
        let state = State::from_i64(value);
        if state.is_none() {
            self.problems
                .push(format!("status: {value} is not a job state"));
        }
        state
    }

    /// One sentence naming every cell that could not be read, if any.
    pub(super) fn problems(self) -> Option<String> {
        (!self.problems.is_empty()).then(|| self.problems.join("; "))
    }
}

fn describe(row: &Row, idx: usize, column: &str, error: &rusqlite::Error) -> String {
    let stored = match row.get_ref(idx) {
        Ok(ValueRef::Null) => "NULL".to_string(),
        Ok(ValueRef::Integer(v)) => format!("the integer {v}"),
        Ok(ValueRef::Real(v)) => format!("the real {v}"),
        Ok(ValueRef::Text(t)) => format!("TEXT ({} bytes)", t.len()),
        Ok(ValueRef::Blob(b)) => format!("a BLOB ({} bytes)", b.len()),
        Err(_) => "an unreadable value".to_string(),
    };
    let why = match error {
        rusqlite::Error::InvalidColumnType(..) => "of the wrong type".to_string(),
        rusqlite::Error::IntegralValueOutOfRange(..) => "out of range".to_string(),
        other => other.to_string(),
    };
    format!("{column}: stored as {stored}, {why}")
}

/// Dead-letters job `?1` at `?2`, whatever state it was in.
pub(super) const QUARANTINE: &str = concat!(
    "UPDATE jobs SET status = ",
    state_sql!(Dead),
    ", finished_at = ?2, lease_expires_at = NULL, worker_id = NULL WHERE id = ?1"
);

/// Moves a job whose row cannot be read to the dead letters, with an error
/// that names the bad cells. `attempt` is what could be read of it (0 if
/// nothing).
pub(super) fn quarantine(tx: &Transaction, id: i64, attempt: i64, problem: &str) -> Result<()> {
    let now: Micros = now_micros();
    tx.prepare_cached(QUARANTINE)?.execute(params![id, now])?;
    // Its dependents, key and expiry, if it had any (a row this bad may not
    // say: a row without them is passed over).
    super::ends::job_ended(tx, id, now)?;
    tx.prepare_cached(RECORD_ERROR)?.execute(params![
        id,
        attempt,
        CORRUPT,
        format!("the job's row cannot be read, so it cannot run: {problem}"),
        "",
        now
    ])?;
    Ok(())
}

/// Rows whose status is no job state: no claim would ever touch them, so
/// maintenance finds them, a bounded batch at a time. States are 0 to 9, and
/// SQLite sorts text and blobs after every number, so the two ranges of the
/// status index outside 0..=9 hold them all (but for fractions, which no
/// writer produces by mistake).
pub(super) const UNKNOWN_STATES: &str = concat!(
    "SELECT id, status FROM jobs WHERE status <> ",
    state_sql!(Ready),
    " AND (status < ",
    state_sql!(Ready),
    " OR status > ",
    state_sql!(Expired),
    ") LIMIT 100"
);

/// Quarantines rows whose status is no job state; returns them.
pub(super) fn quarantine_unknown_states(tx: &Transaction) -> Result<Vec<QuarantinedJob>> {
    let found: Vec<(i64, String)> = tx
        .prepare_cached(UNKNOWN_STATES)?
        .query_map([], |r| {
            let shown = match r.get_ref(1)? {
                ValueRef::Integer(v) => v.to_string(),
                ValueRef::Real(v) => v.to_string(),
                ValueRef::Text(t) => format!("{:?}", String::from_utf8_lossy(t)),
                ValueRef::Blob(b) => format!("a BLOB of {} bytes", b.len()),
                ValueRef::Null => "NULL".to_string(),
            };
            Ok((r.get(0)?, format!("status: {shown} is not a job state")))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut quarantined = Vec::with_capacity(found.len());
    for (id, problem) in found {
        quarantine(tx, id, 0, &problem)?;
        quarantined.push(QuarantinedJob { id, problem });
    }
    Ok(quarantined)
}
