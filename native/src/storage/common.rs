//! Decisions every backend makes the same way: the state a job starts in, where
//! a failed attempt goes next, what a lost worker's failure says, the order
//! claimed jobs come back in. No SQL here: each backend writes its own
//! queries around these.

use std::time::Duration;

use crate::backoff::retry_delay;
use crate::job::{
    format_id, micros, AttemptRef, ClaimedJob, DependencyMode, Failure, Feed, JobOptions, Micros,
    State,
};

/// When jobs enqueued at `now` fall due. Saturates: a delay past the end of
/// time means never, not some time in the past.
pub fn due_time(options: &JobOptions, now: Micros) -> Micros {
    now.saturating_add(options.delay.map(micros).unwrap_or(0))
}

/// The state a job is inserted in: running when it is claimed as it is
/// enqueued, otherwise ready or waiting for its due time.
pub fn initial_state(claimed: bool, due: Micros, now: Micros) -> State {
    match (claimed, due > now) {
        (true, _) => State::Running,
        (false, true) => State::Scheduled,
        (false, false) => State::Ready,
    }
}

/// The job handed to the worker that claims it as it is enqueued at `now`:
/// first attempt, first lease token, as the row was inserted.
pub fn claimed_at_enqueue(
    id: i64,
    options: &JobOptions,
    payload: &[u8],
    now: Micros,
) -> ClaimedJob {
    ClaimedJob {
        id,
        queue: options.queue.clone(),
        task_name: options.task_name.clone(),
        payload: payload.to_vec(),
        priority: options.priority,
        scheduled_at: now,
        attempt: 1,
        token: 1,
        max_retries: options.max_retries,
        retry_backoff: options.retry_backoff,
        // As a claim would read it back from storage.
        timeout: timeout_from_millis(options.timeout.map(timeout_millis)),
        running: true,
        feed: Feed::None,
    }
}

/// What a new job's dependencies, in the states found at enqueue, make of
/// it: how many it still waits for, and the first that already failed it
/// (its index), in which case it is cancelled at once. A complete
/// dependency counts as satisfied; with `DependencyMode::Finish` so does
/// any final one.
pub fn dependency_readiness(parents: &[State], mode: DependencyMode) -> (usize, Option<usize>) {
    let mut pending = 0;
    for (i, state) in parents.iter().enumerate() {
        match state {
            State::Complete => {}
            s if s.is_final() => {
                if mode == DependencyMode::Success {
                    return (pending, Some(i));
                }
            }
            _ => pending += 1,
        }
    }
    (pending, None)
}

/// The error type recorded on a job cancelled because a dependency failed
/// it (the schema's settle triggers write the same).
pub const DEPENDENCY_FAILED: &str = "DependencyFailed";

/// What that error says: which dependency, of which task, and what became
/// of it. Kept in step with the triggers' text.
pub fn dependency_failed_message(id: i64, task_name: &str, state: State) -> String {
    let what = match state {
        State::Dead => "died",
        State::Cancelled => "was cancelled",
        _ => "expired",
    };
    format!("dependency {} ({task_name}) {what}", format_id(id))
}

/// Rejects a dependency named twice: it would be counted twice and settle
/// once.
pub fn check_distinct_dependencies(index: usize, parents: &[i64]) -> crate::error::Result<()> {
    let mut seen = std::collections::HashSet::with_capacity(parents.len());
    for &p in parents {
        if !seen.insert(p) {
            return Err(crate::error::Error::invalid(format!(
                "node {index} of the graph names dependency {} twice",
                format_id(p)
            )));
        }
    }
    Ok(())
}

/// Timeouts are stored in whole milliseconds, at least one.
pub fn timeout_millis(timeout: Duration) -> i64 {
    timeout.as_millis().max(1) as i64
}

pub fn timeout_from_millis(ms: Option<i64>) -> Option<Duration> {
    ms.map(|ms| Duration::from_millis(ms.max(0) as u64))
}

/// Where a failed attempt goes next, and when it is due: a retry after its
/// backoff (ready at once when there is none), or the dead letters when it is
/// out of attempts or the failure is not retryable.
pub fn after_failure(job: &AttemptRef, failure: &Failure, now: Micros) -> (State, Micros) {
    if !(failure.retryable && job.attempt <= job.max_retries) {
        return (State::Dead, now);
    }
    let due = now.saturating_add(micros(retry_delay(job.retry_backoff, job.attempt)));
    let state = if due == now {
        State::Ready
    } else {
        State::Retrying
    };
    (state, due)
}

/// The failure recorded when reaping finds that `worker` let the lease of
/// `attempt` run out (it died or hung).
pub fn worker_lost(worker: Option<&str>, attempt: u32) -> Failure {
    Failure {
        error_type: "WorkerLost".to_string(),
        message: format!(
            "worker {} stopped renewing its lease on attempt {attempt}",
            worker.unwrap_or("?")
        ),
        traceback: String::new(),
        retryable: true,
    }
}

/// Puts claimed jobs in claim order: highest priority first, then earliest
/// due time, then enqueue order.
pub fn sort_in_claim_order(jobs: &mut [ClaimedJob]) {
    jobs.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.scheduled_at.cmp(&b.scheduled_at))
            .then(a.id.cmp(&b.id))
    });
}

/// Names as a JSON array of strings, the form the SQLite backend stores and
/// binds lists of queue and task names in.
pub fn json_names(names: &[String]) -> String {
    let mut json = String::from("[");
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push('"');
        for c in name.chars() {
            match c {
                '"' => json.push_str("\\\""),
                '\\' => json.push_str("\\\\"),
                c if (c as u32) < 0x20 => json.push_str(&format!("\\u{:04x}", c as u32)),
                c => json.push(c),
            }
        }
        json.push('"');
    }
    json.push(']');
    json
}

/// The message a job gets when no worker ever registered its task.
pub fn unknown_task(task_name: &str) -> Failure {
    let mut message = format!(
        "no worker has registered a task named {task_name:?}: it waited for one past the \
         unknown_task_grace period"
    );
    if task_name.starts_with("__main__.") {
        message.push_str(MAIN_TASK_HINT);
    }
    Failure {
        error_type: "UnknownTaskError".to_string(),
        message,
        traceback: String::new(),
        retryable: false,
    }
}

/// Why a task named `__main__.*` finds no worker, and what to do.
const MAIN_TASK_HINT: &str = "; the producer defined it in a script without a file \
    (python -c, a REPL), whose tasks are named __main__.*, a module no worker can import: \
    pass name= to @queue.task, or define the task in a module the worker imports and run the \
    producer with python -m";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_a_json_array_of_strings() {
        let names = ["plain".to_string(), "q\"uote\\back\nline".to_string()];
        assert_eq!(json_names(&[]), "[]");
        assert_eq!(json_names(&names), r#"["plain","q\"uote\\back\u000aline"]"#);
    }
}
