//! Taking due jobs: one statement marks a batch running and returns it.

use super::SqliteStorage;
use crate::error::Result;
use crate::job::{micros, now_micros, state_sql, ClaimedJob};
use crate::storage::common::{sort_in_claim_order, timeout_from_millis};
use crate::storage::ClaimRequest;

/// Marks up to `?4` ready jobs running for worker `?1` at `?2` under a lease
/// until `?3`, in claim order, and returns them. With `queues`, only jobs of
/// the queues bound from `?5` on. One text per number of queues, so each
/// stays in the statement cache.
pub(super) fn claim_sql(queues: Option<usize>) -> String {
    let queue_filter = match queues {
        None => String::new(),
        Some(count) => {
            let slots: Vec<String> = (0..count).map(|i| format!("?{}", i + 5)).collect();
            format!("AND queue IN ({})", slots.join(", "))
        }
    };
    format!(
        concat!(
            "UPDATE jobs SET status = ",
            state_sql!(Running),
            ", attempt = attempt + 1, lease_token = lease_token + 1, \
             worker_id = ?1, started_at = ?2, lease_expires_at = ?3 \
             WHERE id IN (SELECT id FROM jobs WHERE status = ",
            state_sql!(Ready),
            " {queue_filter} ORDER BY priority DESC, scheduled_at, id LIMIT ?4) \
             RETURNING id, queue, task_name, payload, priority, scheduled_at, attempt, \
             lease_token, max_retries, retry_backoff, timeout_ms"
        ),
        // A format string made by a macro cannot capture variables by name.
        queue_filter = queue_filter
    )
}

pub(super) fn claim(storage: &SqliteStorage, request: &ClaimRequest) -> Result<Vec<ClaimedJob>> {
    if request.limit == 0 {
        return Ok(Vec::new());
    }
    let sql = claim_sql(request.queues.map(|queues| queues.len()));
    let now = now_micros();
    let mut jobs = storage.write(|tx| {
        let mut stmt = tx.prepare_cached(&sql)?;
        stmt.raw_bind_parameter(1, request.worker_id)?;
        stmt.raw_bind_parameter(2, now)?;
        stmt.raw_bind_parameter(3, now.saturating_add(micros(request.lease)))?;
        stmt.raw_bind_parameter(4, request.limit as i64)?;
        for (i, queue) in request.queues.unwrap_or(&[]).iter().enumerate() {
            stmt.raw_bind_parameter(i + 5, queue)?;
        }
        let mut rows = stmt.raw_query();
        let mut jobs = Vec::with_capacity(request.limit);
        while let Some(row) = rows.next()? {
            jobs.push(ClaimedJob {
                id: row.get(0)?,
                queue: row.get(1)?,
                task_name: row.get(2)?,
                payload: row.get(3)?,
                priority: row.get(4)?,
                scheduled_at: row.get(5)?,
                attempt: row.get(6)?,
                token: row.get(7)?,
                max_retries: row.get(8)?,
                retry_backoff: row.get(9)?,
                timeout: timeout_from_millis(row.get(10)?),
            });
        }
        Ok(jobs)
    })?;
    // RETURNING yields rows in update order, which SQLite does not promise
    // to match the subquery's ORDER BY.
    sort_in_claim_order(&mut jobs);
    Ok(jobs)
}
