//! Rate limits, without SQL: the token buckets every worker process shares
//! through the database (one per limited task name, one per limited queue),
//! and which of the ready jobs a claim may take with the tokens there are.
//! A limited job that finds no token stays ready: it waits, and never fails
//! or spends an attempt.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::job::Micros;

/// A bucket holds at most this many seconds' worth of tokens (and at least
/// one): a limit lets jobs through at its rate, in bursts of a tenth of a
/// second's worth, so that a fast limit is claimed in batches and a slow
/// one never bursts.
const BURST_SECONDS: f64 = 0.1;

/// What a bucket limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LimitScope {
    Task,
    Queue,
}

impl LimitScope {
    /// As stored in the `kind` column.
    pub fn name(self) -> &'static str {
        match self {
            LimitScope::Task => "task",
            LimitScope::Queue => "queue",
        }
    }

    pub fn parse(text: &str) -> Option<LimitScope> {
        match text {
            "task" => Some(LimitScope::Task),
            "queue" => Some(LimitScope::Queue),
            _ => None,
        }
    }
}

/// One limit a worker declares: jobs of task (or queue) `name` start at
/// most `per_second` times a second, across every worker of the database.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimit {
    pub scope: LimitScope,
    pub name: String,
    pub per_second: f64,
}

impl RateLimit {
    /// The most tokens its bucket holds.
    pub fn burst(&self) -> f64 {
        burst(self.per_second)
    }
}

pub fn burst(per_second: f64) -> f64 {
    (per_second * BURST_SECONDS).max(1.0)
}

/// Reads `"N/s"`, `"N/m"` or `"N/h"` (N a positive number) as jobs per
/// second; the error names `field`.
pub fn parse_rate(text: &str, field: &str) -> Result<f64> {
    let bad = || {
        Error::invalid(format!(
            "{field} must look like \"100/m\": a positive number of jobs per second (/s), \
             minute (/m) or hour (/h); got {text:?}"
        ))
    };
    let (count, unit) = text.trim().split_once('/').ok_or_else(bad)?;
    let count: f64 = count.trim().parse().map_err(|_| bad())?;
    let seconds = match unit.trim() {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    if !count.is_finite() || count <= 0.0 {
        return Err(bad());
    }
    Ok(count / seconds)
}

/// A bucket as stored: its rate, capacity, tokens, and when they were counted.
#[derive(Clone, Debug, PartialEq)]
pub struct Bucket {
    pub per_second: f64,
    pub burst: f64,
    pub tokens: f64,
    pub refilled_at: Micros,
}

impl Bucket {
    /// Adds the tokens earned since `refilled_at`, up to the burst.
    pub fn refill(&mut self, now: Micros) {
        let elapsed = (now - self.refilled_at).max(0) as f64 / 1e6;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.refilled_at = self.refilled_at.max(now);
    }

    /// When the next whole token will be there.
    pub fn next_token_at(&self) -> Micros {
        let missing = (1.0 - self.tokens).max(0.0);
        let wait = (missing / self.per_second * 1e6).ceil();
        self.refilled_at
            .saturating_add(wait.min(i64::MAX as f64) as Micros)
    }
}

/// The limits a worker applies, by what they limit.
#[derive(Clone, Debug, Default)]
pub struct RateLimits {
    pub limits: Vec<RateLimit>,
}

impl RateLimits {
    pub fn new(limits: Vec<RateLimit>) -> Self {
        RateLimits { limits }
    }

    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }

    /// The names limited in `scope`.
    pub fn names(&self, scope: LimitScope) -> Vec<String> {
        let mut names: Vec<String> = self
            .limits
            .iter()
            .filter(|l| l.scope == scope)
            .map(|l| l.name.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Whether a job of `task` in `queue` needs a token.
    pub fn limits(&self, task: &str, queue: &str) -> bool {
        self.limits.iter().any(|l| match l.scope {
            LimitScope::Task => l.name == task,
            LimitScope::Queue => l.name == queue,
        })
    }
}

/// A ready job a limited claim may take: its id, task and queue.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub id: i64,
    pub task: String,
    pub queue: String,
}

/// Buckets by what they limit, as a claim read them (refilled).
pub type Buckets = HashMap<(LimitScope, String), Bucket>;

/// Takes, in claim order, the candidates whose every bucket (its task's,
/// its queue's, where limited) has a whole token, one token from each, up
/// to `room` jobs. Returns their ids.
pub fn admit(candidates: &[Candidate], buckets: &mut Buckets, room: usize) -> Vec<i64> {
    let mut taken = Vec::new();
    for job in candidates {
        if taken.len() >= room {
            break;
        }
        let keys = [
            (LimitScope::Task, job.task.clone()),
            (LimitScope::Queue, job.queue.clone()),
        ];
        let has_token = keys
            .iter()
            .all(|key| buckets.get(key).is_none_or(|b| b.tokens >= 1.0));
        if has_token {
            for key in &keys {
                if let Some(bucket) = buckets.get_mut(key) {
                    bucket.tokens -= 1.0;
                }
            }
            taken.push(job.id);
        }
    }
    taken
}

/// The buckets out of tokens (under one), sorted: where limited jobs may
/// be left waiting.
pub fn exhausted(buckets: &Buckets) -> Vec<(LimitScope, String)> {
    let mut keys: Vec<(LimitScope, String)> = buckets
        .iter()
        .filter(|(_, b)| b.tokens < 1.0)
        .map(|(k, _)| k.clone())
        .collect();
    keys.sort();
    keys
}

/// What a limited claim took, and when to try again for the limited jobs
/// it had to leave (this process's clock).
#[derive(Clone, Debug, Default)]
pub struct LimitedClaim {
    pub jobs: Vec<crate::job::ClaimedJob>,
    pub retry_at: Option<Micros>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_per_second_minute_and_hour() {
        assert_eq!(parse_rate("20/s", "rate_limit").unwrap(), 20.0);
        assert_eq!(parse_rate("120/m", "rate_limit").unwrap(), 2.0);
        assert_eq!(parse_rate(" 1.5 / h ", "rate_limit").unwrap(), 1.5 / 3600.0);
        for bad in ["", "10", "10/d", "0/s", "-1/s", "x/s", "inf/s", "10/"] {
            let message = parse_rate(bad, "rate_limit").unwrap_err().to_string();
            assert!(message.starts_with("rate_limit must"), "{bad:?}: {message}");
        }
    }

    #[test]
    fn a_bucket_refills_at_its_rate_up_to_its_burst() {
        let mut b = Bucket {
            per_second: 20.0,
            burst: burst(20.0),
            tokens: 0.0,
            refilled_at: 0,
        };
        assert_eq!(b.burst, 2.0);
        assert_eq!(b.next_token_at(), 50_000);
        b.refill(75_000);
        assert!((b.tokens - 1.5).abs() < 1e-9);
        b.refill(10_000_000);
        assert_eq!(b.tokens, 2.0, "capped at the burst");
        assert_eq!(burst(1.0 / 60.0), 1.0, "a slow limit bursts one job");
    }

    #[test]
    fn admission_needs_a_token_from_every_bucket_that_applies() {
        let job = |id, task: &str, queue: &str| Candidate {
            id,
            task: task.into(),
            queue: queue.into(),
        };
        let bucket = |tokens| Bucket {
            per_second: 1.0,
            burst: 5.0,
            tokens,
            refilled_at: 0,
        };
        let mut buckets = Buckets::new();
        buckets.insert((LimitScope::Task, "a".into()), bucket(2.5));
        buckets.insert((LimitScope::Queue, "q".into()), bucket(1.0));
        let candidates = [
            job(1, "a", "q"),
            job(2, "a", "q"), // its queue is out of tokens by now
            job(3, "a", "other"),
            job(4, "a", "other"), // its task is out of tokens by now
            job(5, "b", "other"),
        ];
        assert_eq!(admit(&candidates, &mut buckets, 10), vec![1, 3, 5]);
        assert_eq!(exhausted(&buckets).len(), 2);
        assert_eq!(admit(&candidates, &mut buckets, 10), vec![5]);
    }
}
