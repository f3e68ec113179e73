//! PostgreSQL storage (the `postgres` crate: synchronous, on
//! tokio-postgres), for workers on many machines.
//!
//! Every table lives in one schema of its own (`taskito` by default),
//! created on first use (`schema`). Connections come from a small pool
//! (`pool`), each caching its prepared statements; a connection the server
//! kills is replaced and the operation run again. Nearly every operation
//! is one statement, so one round trip and one commit: a batch of
//! enqueues, a claim, a batch of outcomes. Times are the server's `now()`,
//! so machines whose clocks disagree still agree on leases and due times;
//! the engine's own times (when an attempt finished) travel as ages,
//! measured against this process's clock when the statement is sent.
//!
//! Wake-ups: the statements that make jobs claimable or final NOTIFY in
//! their own transaction, and a listener thread per process turns those
//! notifications into this process's beacons (`listener`).
//!
//! Each operation lives with its concern: `enqueue`, `claim`, `outcomes`,
//! `maintenance`, `reads`, `registry`. Decisions that are not SQL (retry
//! timing, claim order, a lost worker's failure) are shared with SQLite in
//! `storage::common`.

/// A scalar subquery that does the ends of the jobs CTE `$cte` ended: `$cte`
/// returns `id`, `status` (after), `dependents`, `unique_key` and
/// `expires_at` of each row it changed, from a status that was not final.
/// Only jobs with dependents, a key or an expiry call `job_ended` (the
/// schema's V3); the sort reads the whole CTE first, so every row of the
/// statement is written before any end runs.
macro_rules! settle_ended {
    ($cte:literal) => {
        concat!(
            "(SELECT count(job_ended(id, status)) FROM (SELECT id, status FROM ",
            $cte,
            " WHERE (dependents > 0 OR unique_key IS NOT NULL OR expires_at IS NOT NULL) \
             AND status IN (",
            state_sql!(Complete, Dead, Cancelled, Expired),
            ") ORDER BY id) AS ended) AS settled"
        )
    };
}

mod claim;
mod connect;
mod enqueue;
mod graph;
mod listener;
mod maintenance;
mod outcomes;
mod periodic;
mod pool;
mod rate_limits;
mod reads;
mod registry;
mod schema;

use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use self::connect::Target;
use self::listener::Listener;
use self::pool::{Conn, Pool};
use super::{
    CancelRequest, ClaimRequest, DirectClaim, FiredTicks, JobScope, LimitedClaim, PeriodicRecord,
    PeriodicSchedule, RateLimit, RateLimits, ReapedJob, Storage, UnknownTaskJob,
    WorkerRegistration,
};
use crate::error::Result;
use crate::job::{
    Applied, AttemptRef, ClaimedJob, ErrorRecord, Finished, GraphNode, JobFilter, JobOptions,
    JobRecord, Micros, Outcome, Stats, WorkerRecord,
};
use crate::wakeup::{Wakeups, ENV_SWITCH};

pub use connect::{redact, APPLICATION_NAME};

#[derive(Clone, Debug)]
pub struct PostgresConfig {
    /// `postgresql://user:password@host:port/database`, `postgres://...`,
    /// or `key=value` pairs.
    pub url: String,
    /// The schema that holds taskito's tables.
    pub schema: String,
    /// How long opening a connection may take before
    /// `Error::Connection`.
    pub connect_timeout: Duration,
    /// Most connections this storage keeps open (besides its listener's).
    pub max_connections: usize,
}

impl PostgresConfig {
    pub fn new(url: impl Into<String>, schema: impl Into<String>) -> Self {
        PostgresConfig {
            url: url.into(),
            schema: schema.into(),
            connect_timeout: Duration::from_secs(10),
            max_connections: 10,
        }
    }

    /// The URL without its password, as errors and `repr` show it.
    pub fn shown(&self) -> String {
        redact(&self.url)
    }
}

pub struct PostgresStorage {
    pool: Pool,
    channel: String,
    wakeups: Arc<Wakeups>,
    /// `None` with `TASKITO_WAKEUPS=poll`: other processes' commits are
    /// then found by polling only.
    listener: Option<Listener>,
    /// The `changes` sequence as `external_change` last read it.
    last_change: AtomicI64,
}

impl PostgresStorage {
    /// Connects (within `connect_timeout`, or `Error::Connection` naming the
    /// server), creates or upgrades the schema, and starts listening.
    pub fn open(config: PostgresConfig) -> Result<Self> {
        connect::check_schema(&config.schema)?;
        let target = Target::new(&config.url, &config.schema, config.connect_timeout)?;
        let pool = Pool::new(target, config.max_connections, config.connect_timeout);
        pool.run(|conn| schema::migrate(conn, &config.schema))?;
        let polling = std::env::var(ENV_SWITCH).is_ok_and(|v| v == "poll");
        let (wakeups, listener) = if polling {
            let wakeups = Wakeups::private().with_fallback(format!("{ENV_SWITCH}=poll"));
            (Arc::new(wakeups), None)
        } else {
            let wakeups = Arc::new(Wakeups::fed());
            let listener = Listener::start(&pool.target, &config.schema, wakeups.clone());
            (wakeups, Some(listener))
        };
        Ok(PostgresStorage {
            pool,
            channel: listener::channel(&config.schema),
            wakeups,
            listener,
            last_change: AtomicI64::new(i64::MIN),
        })
    }

    /// Drops the schema `config` names, with every table and job in it.
    pub fn drop_schema(config: &PostgresConfig) -> Result<()> {
        connect::check_schema(&config.schema)?;
        let target = Target::new(&config.url, &config.schema, config.connect_timeout)?;
        let mut client = target.connect()?;
        client.batch_execute(&format!(
            "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
            config.schema
        ))?;
        Ok(())
    }

    /// Runs `op` on a pooled connection (again on a fresh one if the server
    /// closed the first).
    fn run<T>(&self, op: impl FnMut(&mut Conn) -> Result<T>) -> Result<T> {
        self.pool.run(op)
    }

    /// The server and database, without the password.
    pub fn shown(&self) -> &str {
        &self.pool.target.shown
    }
}

/// A timestamp read from the server as microseconds since the epoch.
pub(crate) fn micros_of(time: SystemTime) -> Micros {
    match time.duration_since(UNIX_EPOCH) {
        // 'infinity' (a delay past the end of time) saturates.
        Ok(after) => after.as_micros().min(Micros::MAX as u128) as Micros,
        Err(before) => -(before.duration().as_micros() as Micros),
    }
}

/// SQL for `$n` microseconds as an interval.
macro_rules! micros_sql {
    ($n:literal) => {
        concat!("($", $n, "::int8 * interval '1 microsecond')")
    };
}
pub(crate) use micros_sql;

/// Each operation lives with its concern; this table only routes to it.
impl Storage for PostgresStorage {
    fn enqueue(&self, options: &JobOptions, payloads: &[Vec<u8>]) -> Result<Vec<i64>> {
        enqueue::enqueue(self, options, payloads)
    }

    fn enqueue_claimed(
        &self,
        options: &JobOptions,
        payload: &[u8],
        claim: &DirectClaim,
    ) -> Result<(i64, Option<ClaimedJob>)> {
        enqueue::enqueue_claimed(self, options, payload, claim)
    }

    fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedJob>> {
        claim::claim(self, request)
    }

    fn start_claimed(&self, jobs: &[AttemptRef]) -> Result<Vec<bool>> {
        claim::start_claimed(self, jobs)
    }

    fn best_ready_priority(&self, scope: JobScope) -> Result<Option<i64>> {
        claim::best_ready_priority(self, scope)
    }

    fn complete(&self, outcomes: &[Outcome]) -> Result<Vec<Applied>> {
        outcomes::complete(self, outcomes, false)
    }

    fn promote_due(&self) -> Result<Option<Micros>> {
        maintenance::promote_due(self)
    }

    fn renew_leases(&self, jobs: &[AttemptRef], lease: Duration) -> Result<usize> {
        outcomes::renew_leases(self, jobs, lease)
    }

    fn release(&self, jobs: &[AttemptRef], refund_attempt: bool) -> Result<usize> {
        outcomes::release(self, jobs, refund_attempt, false)
    }

    fn reap_expired(&self) -> Result<Vec<ReapedJob>> {
        maintenance::reap_expired(self)
    }

    fn cancel(&self, id: i64) -> Result<bool> {
        outcomes::cancel(self, id)
    }

    fn request_cancel(&self, id: i64) -> Result<CancelRequest> {
        outcomes::request_cancel(self, id)
    }

    fn cancel_requested(&self, id: i64) -> Result<bool> {
        reads::cancel_requested(self, id)
    }

    fn retry_dead(&self, id: i64) -> Result<bool> {
        outcomes::retry_dead(self, id)
    }

    fn purge_dead(&self, older_than: Duration) -> Result<usize> {
        maintenance::purge_dead(self, older_than)
    }

    fn get_job(&self, id: i64) -> Result<Option<JobRecord>> {
        reads::get_job(self, id)
    }

    fn finished(&self, id: i64) -> Result<Option<Finished>> {
        reads::finished(self, id)
    }

    fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>> {
        reads::list_jobs(self, filter)
    }

    fn errors(&self, id: i64) -> Result<Vec<ErrorRecord>> {
        reads::errors(self, id)
    }

    fn stats(&self) -> Result<Stats> {
        reads::stats(self)
    }

    fn purge_finished(&self, older_than: Duration) -> Result<usize> {
        maintenance::purge_finished(self, older_than)
    }

    fn external_change(&self) -> Result<bool> {
        maintenance::external_change(self)
    }

    fn checkpoint(&self) -> Result<()> {
        // The server checkpoints on its own.
        Ok(())
    }

    fn wakeups(&self) -> &Wakeups {
        &self.wakeups
    }

    fn register_worker(&self, worker: &WorkerRegistration) -> Result<()> {
        registry::register_worker(self, worker)
    }

    fn renew_worker(&self, id: &str, lease: Duration) -> Result<bool> {
        registry::renew_worker(self, id, lease)
    }

    fn unregister_worker(&self, id: &str) -> Result<()> {
        registry::unregister_worker(self, id)
    }

    fn workers(&self) -> Result<Vec<WorkerRecord>> {
        registry::workers(self)
    }

    fn forget_lapsed_workers(&self) -> Result<usize> {
        registry::forget_lapsed_workers(self)
    }

    fn unserved_tasks(&self) -> Result<Vec<(String, u64)>> {
        registry::unserved_tasks(self)
    }

    fn fail_unknown_tasks(&self, grace: Option<Duration>) -> Result<Vec<UnknownTaskJob>> {
        // Typed columns: a task name is always text, so without a grace
        // period there is nothing to take out.
        match grace {
            Some(grace) => registry::fail_unknown_tasks(self, grace),
            None => Ok(Vec::new()),
        }
    }

    // Schedule half of scheduling and workflows

    fn register_periodic(&self, schedules: &[PeriodicSchedule]) -> Result<()> {
        periodic::register_periodic(self, schedules)
    }

    fn fire_periodic(&self, names: &[String]) -> Result<FiredTicks> {
        periodic::fire_periodic(self, names)
    }

    fn periodic(&self) -> Result<Vec<PeriodicRecord>> {
        periodic::periodic(self)
    }

    fn configure_rate_limits(&self, limits: &[RateLimit]) -> Result<()> {
        rate_limits::configure_rate_limits(self, limits)
    }

    fn claim_limited(&self, request: &ClaimRequest, limits: &RateLimits) -> Result<LimitedClaim> {
        rate_limits::claim_limited(self, request, limits)
    }

    fn payload(&self, id: i64) -> Result<Option<Vec<u8>>> {
        periodic::payload(self, id)
    }

    // Jobs half of scheduling and workflows

    fn enqueue_graph(&self, nodes: &[GraphNode]) -> Result<Vec<i64>> {
        graph::enqueue_graph(self, nodes)
    }

    fn dependency_results(&self, id: i64) -> Result<Vec<Option<Vec<u8>>>> {
        reads::dependency_results(self, id)
    }

    fn links(&self, id: i64) -> Result<(Vec<i64>, Vec<i64>)> {
        reads::links(self, id)
    }

    fn record_progress(&self, progress: &[(i64, u8)]) -> Result<()> {
        outcomes::record_progress(self, progress)
    }
}

#[cfg(test)]
pub(crate) mod tests;
